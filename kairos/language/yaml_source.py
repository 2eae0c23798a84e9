"""Safe YAML loading that remembers where every key, value and list item came from.

The journey language reports every problem at ``file:line:col``, so the loader keeps a
:class:`SourceMap` beside the plain data (dicts, lists, scalars). It uses ruamel.yaml's
round-trip loader, which records line and column on every mapping and sequence, and then
copies the document into plain Python values: nothing downstream sees ruamel's types.

An ordinary document (no anchors, tags or errors; most journeys) is read first by libyaml's C
parser (PyYAML's wheels carry it), ten times faster, into the same values and positions; anything
else goes to the round-trip loader, so every problem is reported in its words (`_fast_load`).

YAML 1.2 rules apply (ruamel's default): ``on``, ``off``, ``yes`` and ``no`` are text, and
``09:00`` is the text "09:00", not a number of minutes, which is what a marketer means.

A project file may be hostile (a shared repository, a pasted snippet), so the loader refuses,
before building anything big: files over :data:`MAX_BYTES`, nesting deeper than
:data:`MAX_DEPTH`, more than :data:`MAX_NODES` values counted after ``*alias`` expansion (the
"billion laughs"), and any explicit tag but the core ones (``!!python/object/apply`` and
friends). The first pass reads the parser's event stream, which needs no recursion and holds
one event at a time, so even a 10 000-deep document never reaches the recursive composer.

Why over 600 lines: the limits, the walk of the parser's events and the source map are one pass
over one document; apart, each would have to repeat the others' bookkeeping. The explanations
of ruamel's errors at the end are the seam to cut along next (they point with :class:`Position`).
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
)
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.parser import RoundTripParser
from ruamel.yaml.reader import Reader
from ruamel.yaml.scanner import Scanner

from kairos.language.problems import Problem, Severity

try:  # PyYAML with libyaml: the fast path (see _fast_load)
    import yaml as _yaml
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - a build without libyaml: the round-trip loader only
    _CParser = None

YamlPath = tuple[str | int, ...]

MAX_BYTES = 1_000_000
"""The largest YAML file read: a journey is a few kilobytes; a megabyte is a mistake."""
MAX_DEPTH = 50
"""The deepest nesting of mappings and lists (a journey rarely goes past ten)."""
MAX_NODES = 100_000
"""The most values (mappings, lists, scalars) a document may hold once aliases are expanded."""
_NO_KEY = object()
_CORE = "tag:yaml.org,2002:"
_CORE_TAGS = frozenset(
    f"{_CORE}{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
)


@dataclass(frozen=True)
class Position:
    """A 1-based line and column."""

    line: int
    col: int


@dataclass
class SourceMap:
    """Where each part of a document is, by path (``("steps", 2, "wait")``).

    ``keys`` holds the position of the key of a mapping entry; ``values`` the position to point
    at for a value: the scalar itself, or for a mapping or list value the key that holds it (the
    first line of the block, which is what a reader looks for).
    """

    keys: dict[YamlPath, Position] = field(default_factory=dict)
    values: dict[YamlPath, Position] = field(default_factory=dict)

    def key(self, path: YamlPath) -> Position:
        """Where the key of ``path`` is; for list items and the root, where the value is."""
        if path in self.keys:
            return self.keys[path]
        return self.value(path)

    def value(self, path: YamlPath) -> Position:
        """Where the value at ``path`` is, or the nearest parent that exists in the document."""
        for depth in range(len(path), -1, -1):
            prefix = path[:depth]
            if prefix in self.values:
                return self.values[prefix]
        return Position(1, 1)


@dataclass(frozen=True)
class YamlDocument:
    """A loaded YAML file: its display name, text, plain data and positions."""

    file: str
    text: str
    data: Any
    positions: SourceMap

    def lines(self) -> list[str]:
        return self.text.splitlines()

    def problem(
        self,
        path: YamlPath,
        message: str,
        hint: str = "",
        *,
        at: Position | None = None,
        key: bool = False,
        severity: Severity = "error",
    ) -> Problem:
        """A problem at ``path`` (its value, or its key with ``key=True``, or ``at``)."""
        where = at or (self.positions.key(path) if key else self.positions.value(path))
        return Problem(
            file=self.file,
            line=where.line,
            col=where.col,
            path=format_path(path),
            message=message,
            hint=hint,
            severity=severity,
        )


def format_path(path: YamlPath) -> str:
    """``("steps", 2, "wait_for", "timeout")`` -> ``steps[2].wait_for.timeout``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + part
    return text


def read_source(
    path: Path, display: str, *, home: Path | None = None
) -> tuple[str | None, list[Problem]]:
    """The text of ``path``, or None and why it cannot be read.

    With ``home``, a path inside it that is a symbolic link to somewhere outside it is refused
    without being read: otherwise a problem's quoted line would show that other file.
    """
    if home is not None and escapes(path, home):
        return None, [outside_problem(display)]
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return None, [_too_big(display, size)]
        return path.read_text(encoding="utf-8"), []
    except UnicodeDecodeError as exc:
        return None, [Problem(display, 1, 1, "", f"not UTF-8 text ({exc.reason})", "save as UTF-8")]
    except OSError as exc:
        return None, [Problem(display, 1, 1, "", f"cannot read the file: {exc.strerror}")]


def escapes(path: Path, home: Path) -> bool:
    """Whether ``path``, written inside ``home``, is a symbolic link leading out of it."""
    root = home.resolve()
    if not path.absolute().is_relative_to(root) and not path.absolute().is_relative_to(home):
        return False  # named on the command line from elsewhere: the author chose it
    return not path.resolve().is_relative_to(root)


OUTSIDE = "a symbolic link to a file outside the project"
OUTSIDE_HINT = "copy the file into the project instead of linking to it"


def outside_problem(display: str) -> Problem:
    return Problem(display, 1, 1, "", OUTSIDE, OUTSIDE_HINT)


def _too_big(display: str, size: int) -> Problem:
    return Problem(
        display,
        1,
        1,
        "",
        f"the file is {size:,} bytes; the limit is {MAX_BYTES:,}",
        "split it into smaller files",
    )


def load_yaml_file(
    path: Path, display: str, *, home: Path | None = None
) -> tuple[YamlDocument | None, list[Problem]]:
    """Load ``path``; problems (and positions) are reported against ``display``."""
    text, problems = read_source(path, display, home=home)
    if text is None:
        return None, problems
    return load_yaml(text, display)


def load_yaml(text: str, file: str) -> tuple[YamlDocument | None, list[Problem]]:
    """Parse ``text``. Returns the document, or None and the problems that stopped it.

    Tabs in indentation, syntax errors, duplicate keys and YAML tags are all reported with
    their line and column. An empty file is a document whose data is None.
    """
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        return None, [_too_big(file, size)]
    tabs = _tab_problems(text, file)
    if tabs:
        return None, tabs
    fast = _fast_load(text, file)
    if fast is not None:
        return fast, []
    return round_trip_load(text, file)


def round_trip_load(text: str, file: str) -> tuple[YamlDocument | None, list[Problem]]:
    """``text`` loaded by ruamel's round-trip loader, guarded: what :func:`load_yaml` does
    with a document the fast path leaves to it (and what the fast path must agree with)."""
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    yaml.Parser = _guarded_parser(file)
    # The round-trip loader for its positions (every node's line and column, which the
    # errors need), with the plain scanner: nothing reads the comments the round-trip
    # scanner gathers (a quarter of the loading), and no journey is written back.
    yaml.Scanner = Scanner
    try:
        raw = yaml.load(text)
    except _Refused as refused:
        return None, [refused.problem]
    except DuplicateKeyError as exc:
        return None, [_duplicate_key_problem(exc, text, file)]
    except MarkedYAMLError as exc:
        return None, [_syntax_problem(exc, text, file)]
    except YAMLError as exc:
        return None, [Problem(file, 1, 1, "", f"not valid YAML: {exc}")]
    positions = SourceMap()
    positions.values[()] = _root_position(raw)
    problems: list[Problem] = []
    data = _plain(raw, (), positions, problems, file)
    if problems:
        return None, problems
    return YamlDocument(file=file, text=text, data=data, positions=positions), []


def _fast_load(text: str, file: str) -> YamlDocument | None:
    """``text`` loaded by libyaml's C parser when it is an ordinary document, else None.

    libyaml reads events ten times faster than ruamel's pure-Python parser. The values and
    positions built from them are the ones the round-trip loader gives (YAML 1.2 scalars, by
    ruamel's own resolver and constructor; an ``*alias`` of a mapping or list is a copy of it,
    its positions those of the original, as the round-trip loader's are). Whatever is not
    ordinary — a syntax error, a duplicate key, an anchored scalar, an alias the document has
    not finished defining, a tag, a complex key, a second document, nesting or size past the
    limits — returns None, so the round-trip loader reads the file again and reports it
    exactly as before.
    """
    if _CParser is None or _UNLIKE.search(text) or Reader.NON_PRINTABLE.search(text):
        return None
    parser = _CParser(text)
    try:
        return _from_events(parser, text, file)
    except (_Unusual, _yaml.YAMLError, RecursionError):
        return None
    finally:
        parser.dispose()


_UNLIKE = re.compile("[\t\x85\u2028\u2029]")
"""Characters the two parsers treat differently: ruamel refuses a tab between tokens, which
libyaml accepts, and YAML 1.2 (ruamel) reads these three as text, YAML 1.1 (libyaml) as line
breaks."""


class _Unusual(Exception):
    """Something the fast path leaves to the round-trip loader."""


@dataclass
class _Building:
    """A mapping or list being built from the event stream."""

    value: dict[str, Any] | list[Any]
    path: YamlPath
    keys: dict[Any, None] | None = None  # a mapping's keys as constructed (duplicates)
    key: Any = _NO_KEY
    key_at: Position | None = None
    at: Position = Position(1, 1)  # where it starts
    anchor: str | None = None
    start: int = 0  # values counted before it
    level: int = 1  # its nesting level, 1 at the top
    deepest: int = 1  # the deepest level reached inside it, aliases expanded


@dataclass(frozen=True)
class _Anchored:
    """A mapping or list an ``&anchor`` names: what an alias of it copies."""

    value: dict[str, Any] | list[Any]
    at: Position
    keys: tuple[tuple[YamlPath, Position], ...]  # below it, relative to it
    values: tuple[tuple[YamlPath, Position], ...]
    size: int  # values, itself included
    height: int  # levels, itself included


def _from_events(parser: Any, text: str, file: str) -> YamlDocument:
    get = parser.get_event
    start = get(), get()
    if not isinstance(start[1], _yaml.DocumentStartEvent) or start[1].version or start[1].tags:
        raise _Unusual  # empty, or a `%YAML` or `%TAG` directive
    positions = SourceMap()
    positions.values[()] = Position(1, 1)
    opened: list[_Building] = []
    anchors: dict[str, _Anchored] = {}
    data: Any = None
    count = 0
    while True:
        event = get()
        kind = type(event)
        if kind is _yaml.MappingEndEvent or kind is _yaml.SequenceEndEvent:
            done = opened.pop()
            if done.anchor is not None:
                anchors[done.anchor] = _anchored(done, count, positions)
            if not opened:
                data = done.value
                if not isinstance(get(), _yaml.DocumentEndEvent):
                    raise _Unusual
                break
            opened[-1].deepest = max(opened[-1].deepest, done.deepest)
            _place(opened[-1], done.value, None, positions)
            continue
        if kind is _yaml.DocumentEndEvent and not opened:
            break
        if kind is _yaml.AliasEvent:
            count = _alias(event, opened, anchors, count, positions)
            continue
        if event.tag is not None or (event.anchor is not None and kind is _yaml.ScalarEvent):
            raise _Unusual  # tags, and anchored scalars: the guarded loader's work
        count += 1
        if count > MAX_NODES:
            raise _Unusual
        mark = event.start_mark
        at = Position(mark.line + 1, mark.column + 1)
        parent = opened[-1] if opened else None
        if kind is _yaml.ScalarEvent:
            value = _scalar_value(event)
            if parent is None:
                data = value
                if not isinstance(get(), _yaml.DocumentEndEvent):
                    raise _Unusual
                break
            _place(parent, value, at, positions)
            continue
        if kind is _yaml.MappingStartEvent:
            building = _Building({}, (), keys={})
        elif kind is _yaml.SequenceStartEvent:
            building = _Building([], ())
        else:
            raise _Unusual
        building.at, building.anchor, building.start = at, event.anchor, count - 1
        building.level = building.deepest = len(opened) + 1
        if parent is None:
            positions.values[()] = at
        else:
            if parent.keys is not None and parent.key is _NO_KEY:
                raise _Unusual  # a mapping or list as a key
            building.path = _child(parent)
            if parent.keys is None:
                positions.values[building.path] = at
        if building.level > MAX_DEPTH:
            raise _Unusual
        opened.append(building)
    if not isinstance(get(), _yaml.StreamEndEvent):
        raise _Unusual  # a second document
    return YamlDocument(file=file, text=text, data=data, positions=positions)


def _anchored(done: _Building, count: int, positions: SourceMap) -> _Anchored:
    depth = len(done.path)

    def below(found: dict[YamlPath, Position]) -> tuple[tuple[YamlPath, Position], ...]:
        return tuple(
            (path[depth:], at)
            for path, at in found.items()
            if len(path) > depth and path[:depth] == done.path
        )

    return _Anchored(
        done.value,
        done.at,
        below(positions.keys),
        below(positions.values),
        count - done.start,
        done.deepest - done.level + 1,
    )


def _alias(
    event: Any,
    opened: list[_Building],
    anchors: dict[str, _Anchored],
    count: int,
    positions: SourceMap,
) -> int:
    """Place a copy of what ``event`` names; the values counted once it is placed."""
    anchored = anchors.get(event.anchor)
    parent = opened[-1] if opened else None
    if anchored is None or parent is None or (parent.keys is not None and parent.key is _NO_KEY):
        raise _Unusual  # undefined, inside itself, the whole document, or a key
    count += anchored.size
    reach = len(opened) + anchored.height
    if count > MAX_NODES or reach > MAX_DEPTH:
        raise _Unusual
    parent.deepest = max(parent.deepest, reach)
    path = _child(parent)
    for rel, at in anchored.keys:
        positions.keys[path + rel] = at
    for rel, at in anchored.values:
        positions.values[path + rel] = at
    value = copy.deepcopy(anchored.value)
    _place(parent, value, anchored.at if parent.keys is None else None, positions)
    return count


def _child(parent: _Building) -> YamlPath:
    if parent.keys is None:
        return (*parent.path, len(parent.value))
    return (*parent.path, _key_text(parent.key))


def _place(parent: _Building, value: Any, at: Position | None, positions: SourceMap) -> None:
    """Add ``value`` (found ``at``; None for a mapping or list) to ``parent``."""
    if parent.keys is None:
        if at is not None:
            positions.values[(*parent.path, len(parent.value))] = at
        parent.value.append(value)  # type: ignore[union-attr]
        return
    if parent.key is _NO_KEY:
        if at is None or value in parent.keys:
            raise _Unusual  # a duplicate key: said by the round-trip loader, with its line
        parent.keys[value] = None
        parent.key, parent.key_at = value, at
        return
    name = _key_text(parent.key)
    child = (*parent.path, name)
    key_at = parent.key_at
    assert key_at is not None and isinstance(parent.value, dict)
    positions.keys[child] = key_at
    positions.values[child] = at if at is not None and value is not None else key_at
    parent.value[name] = value
    parent.key, parent.key_at = _NO_KEY, None


_ROUND_TRIP = YAML(typ="rt", pure=True)
_STR = f"{_CORE}str"


def _scalar_value(event: Any) -> Any:
    """A scalar event's value as the round-trip loader reads it (YAML 1.2)."""
    value: str = event.value
    if not event.implicit[0]:
        return value  # quoted or a block: text
    return _plain_scalar(value)


@functools.lru_cache(maxsize=4096)
def _plain_scalar(value: str) -> Any:
    tag = str(_ROUND_TRIP.resolver.resolve(ScalarNode, value, (True, False)))
    if tag == _STR:
        return value
    if tag == f"{_CORE}merge":
        raise _Unusual
    return _scalar(_ROUND_TRIP.constructor.construct_object(ScalarNode(tag, value)))


def load_data(text: str, file: str) -> Any:
    """The plain data of a JSON file (by its name) or a YAML file that is not a journey: a
    customer file, an event's properties.

    Raises:
        ValueError: The file does not parse; said in one line, ``file:line:col: what (hint)``.
    """
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        raise ValueError(_too_big(file, size).headline())
    if file.lower().endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{file}:{err.lineno}:{err.colno}: not valid JSON: {err.msg}"
            ) from None
        except RecursionError:
            raise ValueError(
                f"{file}:1:1: nested too deeply (keep it to {MAX_DEPTH} levels)"
            ) from None
    document, problems = load_yaml(text, file)
    if problems:
        raise ValueError(problems[0].headline())
    return document.data if document is not None else None


def _root_position(raw: Any) -> Position:
    if isinstance(raw, CommentedMap | CommentedSeq):
        return Position(raw.lc.line + 1, raw.lc.col + 1)
    return Position(1, 1)


@dataclass
class _Open:
    """A mapping or list the event stream is inside of."""

    anchor: str | None
    start: int  # values counted before it
    level: int  # its own nesting level, 1 at the top
    deepest: int  # the deepest level reached inside it, aliases expanded
    mapping: bool
    step: str | int = 0  # the key or index being read
    on_key: bool = True  # in a mapping: the next node is a key

    def advance(self) -> None:
        """One node inside it is complete."""
        if self.mapping:
            self.on_key = not self.on_key
        else:
            self.step = int(self.step) + 1


class _Guard:
    """Watches a document's events for the first one that makes it too deep, too big or
    foreign.

    Counts values and depth as if every ``*alias`` were replaced by its anchor's value (which
    is what copying the document does), from each anchor's measured size, so a billion-laughs
    bomb is refused at the alias that crosses the limit. The loader stops there: nothing past a
    limit is parsed or built.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.opened: list[_Open] = []
        self.measured: dict[str, tuple[int, int]] = {}  # anchor -> (values, levels)
        self.total = 0

    def see(self, event: Event) -> Problem | None:
        """The problem ``event`` makes, if any."""
        opened = self.opened
        if isinstance(event, CollectionEndEvent):
            done = opened.pop()
            if done.anchor is not None:
                self.measured[done.anchor] = (
                    self.total - done.start,
                    done.deepest - done.level + 1,
                )
            if opened:
                opened[-1].deepest = max(opened[-1].deepest, done.deepest)
                opened[-1].advance()
            return None
        if not isinstance(event, NodeEvent):
            return None
        parent = opened[-1] if opened else None
        is_key = parent is not None and parent.mapping and parent.on_key
        if is_key and isinstance(event, ScalarEvent) and parent is not None:
            parent.step = str(event.value)
        path: YamlPath = tuple(o.step for o in (opened[:-1] if is_key else opened))
        problem, reach, self.total = _measure(
            event, self.file, path, opened, self.measured, self.total
        )
        if problem is not None:
            return problem
        if parent is not None:
            parent.deepest = max(parent.deepest, reach)
            if not isinstance(event, CollectionStartEvent):
                parent.advance()
        hint = "split it into smaller files"
        if reach > MAX_DEPTH:
            path = path[:3]  # where it starts going down; fifty levels of path help no one
            message = f"nested more than {MAX_DEPTH} levels deep"
            hint = "flatten it: a journey needs a few levels, not this many"
        elif self.total > MAX_NODES:
            message = f"more than {MAX_NODES:,} values"
            if isinstance(event, AliasEvent):
                message += " once `*aliases` are expanded"
                hint = "use fewer aliases"
        else:
            return None
        return _at(event, self.file, path, message, hint)


class _Refused(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _guarded_parser(file: str) -> type[RoundTripParser]:
    """A round-trip parser that shows every event to a :class:`_Guard` as the loader reads
    it, so the document is parsed once, not once to check and once to load."""
    guard = _Guard(file)

    class GuardedParser(RoundTripParser):
        def get_event(self) -> Any:
            event = super().get_event()
            problem = guard.see(event)
            if problem is not None:
                raise _Refused(problem)
            return event

    return GuardedParser


def _measure(
    event: NodeEvent,
    file: str,
    path: YamlPath,
    opened: list[_Open],
    measured: dict[str, tuple[int, int]],
    total: int,
) -> tuple[Problem | None, int, int]:
    """(a problem, the depth reached, the values counted) once ``event`` is read."""
    anchor = None if event.anchor is None else str(event.anchor)
    if isinstance(event, AliasEvent):
        if anchor is None or anchor not in measured:
            if any(o.anchor == anchor for o in opened):
                problem = _at(
                    event,
                    file,
                    path,
                    f"`*{anchor}` is inside the value `&{anchor}` names",
                    "an alias cannot repeat the value that contains it",
                )
                return problem, 0, total
            return None, len(opened), total  # undefined: the parser says so in its own words
        size, height = measured[anchor]
        return None, len(opened) + height, total + size
    tag = getattr(event, "tag", None)
    if tag is not None and str(tag) not in _CORE_TAGS:
        problem = _at(
            event,
            file,
            path,
            f"YAML tag `{str(tag).replace(_CORE, '!!')}` is not supported",
            "write the plain value without a `!` tag",
        )
        return problem, 0, total
    total += 1
    if isinstance(event, CollectionStartEvent):
        level = len(opened) + 1
        opened.append(
            _Open(anchor, total - 1, level, level, mapping=isinstance(event, MappingStartEvent))
        )
    elif anchor is not None:
        measured[anchor] = (1, 0)
    return None, len(opened), total


def _at(event: Event, file: str, path: YamlPath, message: str, hint: str) -> Problem:
    mark = event.start_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return Problem(file, line, col, format_path(path), message, hint)


def _plain(
    node: Any,
    path: YamlPath,
    positions: SourceMap,
    problems: list[Problem],
    file: str,
) -> Any:
    """Copy ``node`` into plain Python values, recording positions below ``path``."""
    if isinstance(node, CommentedMap):
        return _plain_map(node, path, positions, problems, file)
    if isinstance(node, CommentedSeq):
        return _plain_seq(node, path, positions, problems, file)
    if isinstance(node, TaggedScalar):
        where = positions.value(path)
        problems.append(
            Problem(
                file,
                where.line,
                where.col,
                format_path(path),
                f"YAML tag `{str(node.tag.value).replace(_CORE, '!!')}` is not supported",
                "write the plain value without a `!` tag",
            )
        )
        return None
    return _scalar(node)


def _plain_map(
    node: CommentedMap,
    path: YamlPath,
    positions: SourceMap,
    problems: list[Problem],
    file: str,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        name = _key_text(key)
        child = (*path, name)
        if node.lc.data is None or key not in node.lc.data:
            # Merged in by `<<: *anchor`: ruamel keeps no position for it here; point at the
            # mapping that merges it.
            positions.keys[child] = positions.values[child] = positions.value(path)
            out[name] = _plain(value, child, positions, problems, file)
            continue
        key_line, key_col = node.lc.key(key)
        key_at = Position(key_line + 1, key_col + 1)
        positions.keys[child] = key_at
        if isinstance(value, CommentedMap | CommentedSeq) or value is None:
            # Point at the key: a block's first child is a line further down, and a missing
            # value has no position of its own.
            positions.values[child] = key_at
        else:
            value_line, value_col = node.lc.value(key)
            positions.values[child] = Position(value_line + 1, value_col + 1)
        out[name] = _plain(value, child, positions, problems, file)
    return out


def _plain_seq(
    node: CommentedSeq,
    path: YamlPath,
    positions: SourceMap,
    problems: list[Problem],
    file: str,
) -> list[Any]:
    out: list[Any] = []
    for index, item in enumerate(node):
        child = (*path, index)
        line, col = node.lc.item(index)
        positions.values[child] = Position(line + 1, col + 1)
        out.append(_plain(item, child, positions, problems, file))
    return out


def _key_text(key: Any) -> str:
    # Keys such as `1:` or `true:` are still names to the author; keep them as text.
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def _scalar(value: Any) -> Any:
    """ruamel's scalar subclasses (ScalarInt, ScalarFloat, styled strings) as plain values."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, dt.datetime):
        return dt.datetime.fromisoformat(value.isoformat())
    if isinstance(value, dt.date):
        return dt.date(value.year, value.month, value.day)
    return value


_LEADING = re.compile(r"^[ \t]*")


def _tab_problems(text: str, file: str) -> list[Problem]:
    """A problem for every line indented with a tab (YAML allows only spaces there)."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        indent = _LEADING.match(line)
        lead = indent.group(0) if indent else ""
        if "\t" in lead and lead != line:
            problems.append(
                Problem(
                    file,
                    number,
                    lead.index("\t") + 1,
                    "",
                    "tab character in the indentation",
                    "indent with spaces; YAML does not allow tabs there",
                )
            )
    return problems


# ruamel's wording for common mistakes, and what to tell a marketer instead.
_SYNTAX: Mapping[str, tuple[str, str]] = {
    "mapping values are not allowed here": (
        "unexpected `:`",
        "put a space after each key's colon, and quote text that contains `: `",
    ),
    "could not find expected ':'": (
        "this line is not `key: value`",
        "check the indentation, or quote text that contains `:` or `#`",
    ),
    "scanning a quoted scalar": ("a quoted text is never closed", "close the quote"),
    "found '<stream end>'": (
        "the file ends too early",
        "close every `[`, `{` and quote, and give every key a value",
    ),
    "expected <block end>": (
        "the indentation does not line up with the lines above",
        "indent items of the same list or mapping by the same number of spaces",
    ),
    "expected ',' or ']'": ("a `[...]` list is not closed", "add the missing `]`"),
    "expected ',' or '}'": ("a `{...}` mapping is not closed", "add the missing `}`"),
    "found undefined alias": ("unknown alias", "define the `&anchor` before using `*anchor`"),
    "found another document": (
        "more than one YAML document in the file",
        "remove the extra `---`; a file holds one journey",
    ),
    "found character that cannot start any token": (
        "unexpected character",
        "quote text that starts with `@`, `` ` `` or `%`",
    ),
}


def _syntax_problem(exc: MarkedYAMLError, text: str, file: str) -> Problem:
    line, col = _syntax_position(exc, text)
    opened = _unclosed_quote(text, line)
    if opened is not None:
        # YAML lets a quoted text run over lines, so an unclosed quote swallows the lines
        # after it and the parser stumbles far below; the line to fix is where it opened.
        at, quote = opened
        return Problem(
            file,
            at.line,
            at.col,
            "",
            f"YAML syntax: the {quote} opened here is never closed on this line",
            "close it at the end of the text"
            + (f"; YAML read on to line {line} looking for it" if line > at.line else ""),
        )
    raw = (exc.problem or exc.context or "invalid YAML").strip()
    both = f"{exc.context or ''} {raw}"
    for fragment, (message, hint) in _SYNTAX.items():
        if fragment in both:
            return Problem(file, line, col, "", f"YAML syntax: {message}", hint)
    return Problem(file, line, col, "", f"YAML syntax: {raw}", "check the YAML around here")


# The start of a quoted value: after ``key: `` or ``- ``, or a whole line.
_QUOTED_VALUE = re.compile(r"""^(\s*(?:-\s+)*(?:[^\s#'"][^#'"]*?:\s+)?)(["'])""")


def _unclosed_quote(text: str, error_line: int) -> tuple[Position, str] | None:
    """Where a quoted value opened above ``error_line`` and left open on its line, when
    closing it there makes the error go away (so that is surely the mistake)."""
    lines = text.splitlines()
    for number in range(1, min(error_line, len(lines)) + 1):
        line = lines[number - 1]
        match = _QUOTED_VALUE.match(line)
        if match is None:
            continue
        quote = match.group(2)
        rest = line[match.end() :]
        closed = (
            rest.replace("\\\\", "").replace('\\"', "") if quote == '"' else rest.replace("''", "")
        )
        if quote in closed:
            continue
        fixed = [*lines[: number - 1], line.rstrip() + quote, *lines[number:]]
        try:
            YAML(typ="rt", pure=True).load("\n".join(fixed))
        except YAMLError:
            continue
        name = "double quote" if quote == '"' else "single quote"
        return Position(number, match.end()), name
    return None


def _syntax_position(exc: MarkedYAMLError, text: str) -> tuple[int, int]:
    """Where to point: the problem, or where the construct began when the file ran out."""
    lines = text.splitlines() or [""]
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return 1, 1
    if mark.line >= len(lines) and exc.context_mark is not None:
        mark = exc.context_mark
    line = min(mark.line + 1, len(lines))
    col = min(mark.column + 1, len(lines[line - 1]) + 1)
    return line, col


def _duplicate_key_problem(exc: DuplicateKeyError, text: str, file: str) -> Problem:
    mark = exc.problem_mark
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    match = re.search(r'duplicate key "([^"]*)"', exc.problem or "")
    key = match.group(1) if match else "?"
    first = _first_occurrence(text, key, line, col)
    where = f"first set on line {first}; " if first else ""
    return Problem(file, line, col, "", f"duplicate key `{key}`", f"{where}keep only one")


def _first_occurrence(text: str, key: str, line: int, col: int) -> int | None:
    """The line where ``key`` first appears at the same indentation above ``line``."""
    indent = " " * (col - 1)
    item = " " * max(col - 3, 0) + "- "
    pattern = re.compile(f"^({re.escape(indent)}|{re.escape(item)}){re.escape(key)}\\s*:")
    lines = text.splitlines()
    for number in range(line - 1, 0, -1):
        candidate = lines[number - 1]
        if pattern.match(candidate):
            return number
        stripped = candidate.strip()
        depth = len(candidate) - len(candidate.lstrip(" "))
        if stripped and not stripped.startswith("#") and depth < col - 1:
            return None
    return None
