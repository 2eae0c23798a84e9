"""Checking message templates without rendering them: every file a message reads (its parts,
layouts, includes and imports, each parsed once per version), the variables they read, syntax
errors in a marketer's words at the line where the broken tag opened, unknown filters, what
the sandbox refuses, plural forms a locale needs, links written as text, and the files a run
is pinned to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from kairos.language.expressions import paths_in
from kairos.language.plan import Channel
from kairos.language.problems import did_you_mean
from kairos.language.template_safety import NESTING_HINT, too_deep, unsafe
from kairos.language.yaml_source import MAX_BYTES, OUTSIDE, OUTSIDE_HINT, escapes
from kairos.messages.formatting import (
    PLURAL_CATEGORIES,
    READS_CLOCK,
    SCOPE_KEY,
    plural_categories,
)
from kairos.messages.locales import LOCALES_FILE
from kairos.messages.template_files import TemplateFiles, TemplateProblem, _version

# Names the renderer itself provides, so templates may use them without declaring them.
RENDERER_NAMES = frozenset({"unsubscribe_url", "message", "locale"})
# Names Jinja binds inside templates (loops, blocks, macros, call blocks).
_JINJA_NAMES = frozenset({"loop", "self", "super", "caller", "varargs", "kwargs"})


_URL = re.compile(r"https?://[^\s<>\"']+")
# Filters and globals whose answer is not fixed by the values a template reads: the clock's,
# Jinja's random ones, and the render's own scope (which holds the clock).
_NOT_PURE = READS_CLOCK | {"random", "lipsum", SCOPE_KEY}


@dataclass
class _Unit:
    """One parsed template file reached from a message's parts (a part, layout or include)."""

    name: str
    path: Path
    source: str
    tree: nodes.Template

    @cached_property
    def references(self) -> list[tuple[str, str, int, bool]]:
        """The file's literal extends/include/import (computed once per file version)."""
        return list(_references(self.tree))

    @cached_property
    def paths(self) -> set[tuple[str, ...]]:
        """Dotted variables the file reads (computed once per file version)."""
        return paths_in(self.tree)

    @cached_property
    def bound(self) -> set[str]:
        """Names the file binds itself (computed once per file version)."""
        return _bound_names(self.tree)

    @cached_property
    def reads(self) -> set[tuple[tuple[str, Any], ...]] | None:
        """Every value the file can read from its context, as the steps from a name to it;
        None when what it renders depends on more than those values and the files."""
        return _reads(self.tree)

    @cached_property
    def plurals(self) -> list[tuple[int, frozenset[str]]]:
        """(line, forms given) of every ``plural(...)`` with literal keyword arguments."""
        found: list[tuple[int, frozenset[str]]] = []
        for node in self.tree.find_all(nodes.Filter):
            if node.name == "plural" and node.dyn_kwargs is None:
                found.append((node.lineno, frozenset(str(k.key) for k in node.kwargs)))
        return found

    @cached_property
    def links(self) -> list[TemplateLink]:
        """Links written as plain text in the file (not made by an expression)."""
        lines = self.source.splitlines()
        found: list[TemplateLink] = []
        for data in self.tree.find_all(nodes.TemplateData):
            for match in _URL.finditer(data.data):
                url = match.group(0).rstrip(".,;:!?)")
                line = data.lineno + data.data.count("\n", 0, match.start())
                text = lines[line - 1] if 0 < line <= len(lines) else ""
                found.append(TemplateLink(self.path, line, max(text.find(url), 0) + 1, url))
        return found


@dataclass(frozen=True)
class TemplateLink:
    """A link written as text in a template file."""

    file: Path
    line: int
    col: int
    url: str


@dataclass
class _Walk:
    units: list[_Unit] = field(default_factory=list)
    problems: list[TemplateProblem] = field(default_factory=list)


class TemplateChecks(TemplateFiles):
    """The static checks of a store's templates; see TemplateStore."""

    # Checking ------------------------------------------------------------------------------

    def referenced_paths(
        self, template: str, locale: str, channel: Channel
    ) -> set[tuple[str, ...]]:
        """Dotted variables read by the parts and the layouts/includes they use.

        Names the renderer provides (``unsubscribe_url``, ``message``), Jinja's own names and
        globals, and names bound in the templates (loop variables, ``set``, macros, imports)
        are left out. Files that do not parse are skipped: ``problems`` reports them.
        """
        key = ("referenced_paths", template, locale, channel)
        return set(self._steadily(key, lambda: self._referenced_paths(template, locale, channel)))

    def _referenced_paths(
        self, template: str, locale: str, channel: Channel
    ) -> set[tuple[str, ...]]:
        walk = self._walk(template, locale, channel)
        bound = set(RENDERER_NAMES) | _JINJA_NAMES | set(self._env.globals)
        for unit in walk.units:
            bound |= unit.bound
        found: set[tuple[str, ...]] = set()
        for unit in walk.units:
            found |= unit.paths
        return {path for path in found if path[0] not in bound}

    def problems(self, template: str, locale: str, channel: Channel) -> list[TemplateProblem]:
        """Syntax errors, unknown filters and missing extends/include/import targets.

        Also every ``plural(...)`` that leaves out a form the locale's plural rules need (a
        Finnish message needs ``one=`` and ``other=``). Missing parts are not reported here:
        ``locales`` already tells which locales are complete.
        """
        # The locale's plural rules come from templates/locales.yaml, one of the files.
        key = ("problems", template, locale, channel)
        return list(self._steadily(key, lambda: self._problems(template, locale, channel)))

    def _problems(self, template: str, locale: str, channel: Channel) -> list[TemplateProblem]:
        walk = self._walk(template, locale, channel)
        needed = plural_categories(self.style(locale).format)
        problems = list(walk.problems)
        for unit in walk.units:
            for line, given in unit.plurals:
                missing = [c for c in PLURAL_CATEGORIES if c in needed and c not in given]
                if missing:
                    forms = " and ".join(f"{c}=" for c in missing)
                    rules = ", ".join(c for c in PLURAL_CATEGORIES if c in needed)
                    message = f"plural(...) needs {forms} for {locale} (its forms are {rules})"
                    text = unit.source.splitlines()[line - 1] if line else ""
                    col = text.find("plural") + 1 or 1
                    problems.append(TemplateProblem(unit.path, line, message, col))
        return problems

    def constant_links(self, template: str, locale: str, channel: Channel) -> list[TemplateLink]:
        """Links written as text in the message's files, not made from its data."""
        links: list[TemplateLink] = []
        for unit in self._walk(template, locale, channel).units:
            links.extend(unit.links)
        return links

    def closure(self, template: str, channel: Channel) -> dict[str, str]:
        """Every file ``template`` can read when sent on ``channel``, in every locale it is
        complete in: relative name -> source. This is what a run is pinned to."""
        return dict(
            self._steadily(("closure", template, channel), lambda: self._closure(template, channel))
        )

    def _closure(self, template: str, channel: Channel) -> dict[str, str]:
        files: dict[str, str] = {}
        for locale in sorted(self.locales(template, channel)):
            for unit in self._walk(template, locale, channel).units:
                files[unit.name] = unit.source
        styles = self.root / LOCALES_FILE
        version = _version(styles)
        if version != (0, -1) and styles.is_file():  # how dates and money read is rendered
            if self._styles_text is None or self._styles_text[0] != version:
                self._styles_text = (version, styles.read_text(encoding="utf-8"))
            files[LOCALES_FILE] = self._styles_text[1]
        return files

    def _walk(self, template: str, locale: str, channel: Channel) -> _Walk:
        """Every file a message reads, starting from its parts and following references.

        Journeys share templates and a check asks about each several times (its problems,
        variables, links, the files a run is pinned to): a walk is remembered with the
        version of every file it looked at, and made again once one of them changes.
        """
        key = (template, locale, channel)
        remembered = self._walks.get(key)
        steady = self._steady_walks
        if remembered is not None and steady is not None and key in steady:
            return remembered[1]
        if steady is not None:
            steady.add(key)
        if remembered is not None and all(_version(path) == v for path, v in remembered[0]):
            return remembered[1]
        walk, seen = self._walk_files(template, locale, channel)
        self._walks[key] = (tuple((path, _version(path)) for path in seen), walk)
        return walk

    def _walk_files(self, template: str, locale: str, channel: Channel) -> tuple[_Walk, list[Path]]:
        looked_at: list[Path] = []
        walk = _Walk()
        queue = [self._name(path) for path in self.files(template, locale, channel).values()]
        looked_at.extend(self.root / name for name in queue)
        seen = set(queue)
        while queue:
            unit = self._load(queue.pop(0), walk)
            if unit is None:
                continue
            walk.units.append(unit)
            for kind, target, line, optional in unit.references:
                looked_at.append(self.root / target)
                if not (self.root / target).is_file():
                    if not optional:
                        walk.problems.append(self._missing(unit, kind, target, line))
                elif target not in seen:
                    seen.add(target)
                    queue.append(target)
        return walk, looked_at

    def _load(self, name: str, walk: _Walk) -> _Unit | None:
        path = self.root / name
        version = _version(path)
        cached = self._loaded.get(name)
        if cached is None or cached[0] != version:
            cached = (version, self._read(name, path))
            self._loaded[name] = cached
        loaded = cached[1]
        if isinstance(loaded, TemplateProblem):
            walk.problems.append(loaded)
            return None
        return loaded

    def _read(self, name: str, path: Path) -> _Unit | TemplateProblem:
        # root.parent is the project home; a link out of it is not read, so not quoted.
        if escapes(path, self.root.parent):
            return TemplateProblem(path, 1, OUTSIDE, 1, OUTSIDE_HINT)
        try:
            size = path.stat().st_size
            if size > MAX_BYTES:
                message = f"the file is {size:,} bytes; the limit is {MAX_BYTES:,}"
                return TemplateProblem(path, 1, message, 1, "split it with {% include %}")
            source = path.read_text(encoding="utf-8")
            deep = too_deep(source)
            if deep is not None:
                text = source.splitlines()[deep[0] - 1] if deep[0] else ""
                opened = [i for i in (text.find("{{"), text.find("{%")) if i >= 0]
                col = min(opened, default=0) + 1
                return TemplateProblem(path, deep[0], deep[1], col, NESTING_HINT)
            tree = self._env.parse(source, name, str(path))
        except TemplateSyntaxError as exc:
            return _syntax_problem(path, source, exc)
        except (OSError, UnicodeDecodeError) as exc:
            return TemplateProblem(path, 0, f"cannot read the template: {exc}")
        # What compiling would refuse, found in the tree already parsed (a check reads each
        # file once; the renderer compiles only what it renders).
        for node in tree.find_all((nodes.Filter, nodes.Test)):
            known = self._env.filters if isinstance(node, nodes.Filter) else self._env.tests
            if node.name not in known:
                kind = "filter" if isinstance(node, nodes.Filter) else "test"
                return TemplateProblem(path, node.lineno, f"No {kind} named {node.name!r}.")
        for refused in unsafe(tree):
            lines = source.splitlines()
            text = lines[refused.line - 1] if 0 < refused.line <= len(lines) else ""
            col = text.find(refused.needle) + 1 if refused.needle else 0
            return TemplateProblem(path, refused.line, refused.message, col or 1, refused.hint)
        return _Unit(name, path, source, tree)

    def line_reads(self, name: str) -> set[tuple[tuple[str, Any], ...]] | None:
        """What the file ``name`` (relative to the root) and every file it reaches read from
        the context (see ``_Unit.reads``); None when that does not fix what it renders: a
        file that does not load, a reference made by an expression, the clock, chance."""
        return self._steadily(("line_reads", name), lambda: self._line_reads(name))

    def _line_reads(self, name: str) -> set[tuple[tuple[str, Any], ...]] | None:
        walk = _Walk()
        reads: set[tuple[tuple[str, Any], ...]] = set()
        queue, seen = [name], {name}
        while queue:
            unit = self._load(queue.pop(), walk)
            if unit is None or unit.reads is None:
                return None
            reads |= unit.reads
            for _, target, _, _ in unit.references:
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
        return reads

    def _missing(self, unit: _Unit, kind: str, target: str, line: int) -> TemplateProblem:
        siblings = [self._name(p) for p in (self.root / target).parent.glob("*.j2")]
        close = did_you_mean(target, siblings)
        hint = f" (did you mean `{close}`?)" if close else ""
        message = f'{{% {kind} "{target}" %}}: {self._display(target)} does not exist{hint}'
        return TemplateProblem(unit.path, line, message)


# -- Template trees --------------------------------------------------------------------------


def _references(tree: nodes.Template) -> Iterator[tuple[str, str, int, bool]]:
    """(kind, template name, line, optional) for every literal extends/include/import."""
    kinds: dict[type[nodes.Node], str] = {
        nodes.Extends: "extends",
        nodes.Include: "include",
        nodes.Import: "import",
        nodes.FromImport: "from",
    }
    for node in tree.find_all(tuple(kinds)):
        if not isinstance(node, nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport):
            continue
        target = node.template
        if isinstance(target, nodes.Const) and isinstance(target.value, str):
            optional = isinstance(node, nodes.Include) and bool(node.ignore_missing)
            yield kinds[type(node)], target.value, node.lineno, optional


_REFERENCES = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def _reads(tree: nodes.Template) -> set[tuple[tuple[str, Any], ...]] | None:
    """The values a file reads from its context: for each name read, the steps
    (``("attr", "coupon")``, ``("item", 0)``) as far as they are written literally.

    ``event[key]`` reads ``event`` (and ``key``); ``(a or b).c`` reads ``a`` and ``b``. Names
    the file binds itself are kept too: a value too many only makes a key longer. None when
    the output depends on more than these values: a filter or global of ``_NOT_PURE`` or a
    file named by an expression.
    """
    for reference in tree.find_all(_REFERENCES):
        target = reference.template  # type: ignore[attr-defined]
        if not (isinstance(target, nodes.Const) and isinstance(target.value, str)):
            return None
    for named in tree.find_all((nodes.Filter, nodes.Test, nodes.Name)):
        if named.name in _NOT_PURE:  # type: ignore[attr-defined]
            return None
    inner = {id(step.node) for step in tree.find_all((nodes.Getattr, nodes.Getitem))}  # type: ignore[attr-defined]
    found: set[tuple[tuple[str, Any], ...]] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if id(node) in inner:
            continue
        steps: list[tuple[str, Any]] = []
        current: nodes.Node = node
        while isinstance(current, nodes.Getattr | nodes.Getitem):
            if isinstance(current, nodes.Getattr):
                steps.append(("attr", current.attr))
            elif isinstance(current.arg, nodes.Const):
                steps.append(("item", current.arg.value))
            else:  # a step made by an expression: the value before it is read whole
                steps.clear()
            current = current.node
        if isinstance(current, nodes.Name) and current.ctx == "load":
            found.add((("name", current.name), *reversed(steps)))
    return found


def _bound_names(tree: nodes.Template) -> set[str]:
    """Names a template defines for itself: assignments, parameters, macros, imports."""
    names = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    names |= {macro.name for macro in tree.find_all(nodes.Macro)}
    names |= {imp.target for imp in tree.find_all(nodes.Import)}
    for imp in tree.find_all(nodes.FromImport):
        names |= {item if isinstance(item, str) else item[1] for item in imp.names}
    return names


def _dotted(node: nodes.Node) -> tuple[str, ...] | None:
    parts: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const):
            parts.append(str(node.arg.value))
        else:
            return None
        node = node.node
    if not isinstance(node, nodes.Name):
        return None
    return (node.name, *reversed(parts))


# Jinja's delimiters, and the block tags that need an end tag.
_CLOSERS = {"{{": "}}", "{%": "%}", "{#": "#}"}
_OPENER = re.compile(r"\{[{%#]")
_BLOCK_TAG = re.compile(r"\{%[-+]?\s*(end)?(\w+)")
_NEEDS_END = frozenset({"if", "for", "block", "macro", "call", "filter", "with", "raw", "trans"})


def _syntax_problem(path: Path, source: str, exc: TemplateSyntaxError) -> TemplateProblem:
    """A template syntax error at the line where the broken tag opened, in a marketer's words.

    Jinja notices an unclosed ``{{`` or ``{%`` only where the next tag or the file ends, and
    says so in its parser's words ("unexpected '/'"); the line to fix is where it opened.
    """
    unclosed = _unclosed_delimiter(source, exc.lineno)
    if unclosed is not None:
        line, col, opener = unclosed
        closer = _CLOSERS[opener]
        return TemplateProblem(
            path, line, f"`{opener}` opened here is never closed (end it with `{closer}`)", col
        )
    block = _unclosed_block(source, exc)
    if block is not None:
        line, col, tag = block
        return TemplateProblem(
            path, line, f"`{{% {tag} %}}` opened here has no `{{% end{tag} %}}`", col
        )
    return TemplateProblem(path, exc.lineno, exc.message or str(exc))


def _position(source: str, offset: int) -> tuple[int, int]:
    before = source[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _unclosed_delimiter(source: str, error_line: int) -> tuple[int, int, str] | None:
    """The first ``{{``, ``{%`` or ``{#`` up to ``error_line`` whose closer does not come
    before the next tag opens (or at all)."""
    openers = list(_OPENER.finditer(source))
    for index, match in enumerate(openers):
        line, col = _position(source, match.start())
        if line > error_line:
            return None
        opener = match.group(0)
        end = source.find(_CLOSERS[opener], match.end())
        if opener == "{#":  # a comment may hold anything, tags included
            if end < 0:
                return line, col, opener
            continue
        following = [m.start() for m in openers[index + 1 :] if m.start() >= match.end()]
        if end < 0 or (following and following[0] < end):
            return line, col, opener
    return None


def _unclosed_block(source: str, exc: TemplateSyntaxError) -> tuple[int, int, str] | None:
    """The innermost ``{% if %}``-like tag left open, when Jinja reached the end looking for
    its end tag."""
    if "Unexpected end of template" not in (exc.message or ""):
        return None
    stack: list[tuple[int, str]] = []
    for match in _BLOCK_TAG.finditer(source):
        is_end, tag = match.group(1), match.group(2)
        if tag not in _NEEDS_END:
            continue
        if not is_end:
            stack.append((match.start(), tag))
        elif stack and stack[-1][1] == tag:
            stack.pop()
    if not stack:
        return None
    offset, tag = stack[-1]
    return (*_position(source, offset), tag)
