"""Finding a project's template files: the parts of a message per locale
(``<dir>/<message>.<locale>.<part>.j2``), the locale a message renders in, how each locale
writes dates and money (``templates/locales.yaml``), and the errors rendering raises.

:class:`TemplateFiles` holds the state of a :class:`~kairos.messages.rendering.TemplateStore`; the
static checks (:mod:`kairos.messages.template_checks`) and rendering
(:mod:`kairos.messages.rendering`) build on it. Names with a leading underscore are shared among
these modules only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from jinja2 import Template
from jinja2.sandbox import SandboxedEnvironment

from kairos.language.plan import Channel
from kairos.language.problems import Problem
from kairos.messages.inlining import ShapeCache
from kairos.messages.locales import LOCALES_FILE, LocaleStyle, load_locale_styles, normalise_locale
from kairos.messages.template_environment import _environment

if TYPE_CHECKING:
    from kairos.messages.template_checks import _Unit, _Walk

_T = TypeVar("_T")

PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.email: ("subject", "preheader", "html", "text"),
    Channel.sms: ("sms",),
}
REQUIRED_PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.email: ("subject", "html"),
    Channel.sms: ("sms",),
}


_ALL_PARTS = frozenset(part for parts in PARTS.values() for part in parts)


class RenderError(Exception):
    """A message that cannot be rendered. The message names the file and, if any, the variable.

    Attributes:
        file: The template file at fault, when known.
        line: The line in ``file``, when known.
        variable: The dotted name of an undefined variable, when that is the problem.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | None = None,
        line: int | None = None,
        variable: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.variable = variable


@dataclass(frozen=True)
class TemplateProblem:
    """Something wrong with a template file, found without rendering it."""

    file: Path
    line: int
    message: str
    col: int = 1
    hint: str = ""


class TemplateFiles:
    """The files of one project's templates, found once per store (see TemplateStore)."""

    def __init__(
        self,
        root: Path,
        *,
        clock: Callable[[], datetime] | None = None,
        display_root: str | None = None,
        reuse_shapes: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        # What messages call the directory: a pinned copy still reads as templates/....
        self.display_root = display_root or self.root.name
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._env = _environment(self.root)
        self._indexes: dict[Path, dict[tuple[str, str], dict[str, Path]]] = {}
        self._names: dict[Path, str] = {}  # file -> its name relative to root
        # Checked files by name, with the (mtime, size) they were read at: journeys share
        # layouts and templates, and checking a project should read each version once.
        self._loaded: dict[str, tuple[tuple[int, int], _Unit | TemplateProblem]] = {}
        # templates/locales.yaml, with the (mtime, size) it was read at.
        self._styles: tuple[tuple[int, int], dict[str, LocaleStyle], list[Problem]] | None = None
        self._styles_text: tuple[tuple[int, int], str] | None = None  # its text, for pinning
        # What rendering looks up once per store, as the compiled templates: the parts a
        # message has in the locale a wish resolves to, each locale's Babel locale and
        # default timezone, whether an HTML part's files can carry markers, and the styled
        # shapes of kairos.messages.inlining. A render touches no file once these are filled.
        self._chosen: dict[tuple[str, Channel, str | None, str], tuple[str, dict[str, str]]] = {}
        self._scopes: dict[str, tuple[Any, str]] = {}
        self._markable: dict[str, bool] = {}
        self._compiled: dict[str, Template] = {}
        # Walks by (template, locale, channel), with the (path, version) of each file seen.
        self._walks: dict[
            tuple[str, str, Channel], tuple[tuple[tuple[Path, tuple[int, int]], ...], _Walk]
        ] = {}
        self._shapes = ShapeCache()
        self._reuse_shapes = reuse_shapes
        # Inside steady(): the walks already checked against their files, and answers that
        # depend on nothing but the files (and the values a key names), by key.
        self._steady_walks: set[tuple[str, str, Channel]] | None = None
        self._steady_answers: dict[tuple[Any, ...], Any] | None = None

    @property
    def shapes_reused(self) -> int:
        """How many emails took their inlined CSS from a shape already proven."""
        return self._shapes.reused

    @property
    def environment(self) -> SandboxedEnvironment:
        """The Jinja environment (its ``cache`` holds the compiled templates)."""
        return self._env

    @contextlib.contextmanager
    def steady(self) -> Iterator[None]:
        """Within it the files are taken not to change, so each walk is checked against them
        once: checking a project asks about the same templates for every journey that sends
        them (a hundred journeys made forty thousand file lookups). What depends on the files
        alone (a message's problems, variables and pinned files) is answered once too, and a
        subject rendered with sample data once per set of values it reads (``render_line``)."""
        self._steady_walks = set()
        self._steady_answers = {}
        try:
            yield
        finally:
            self._steady_walks = None
            self._steady_answers = None

    def _steadily(self, key: tuple[Any, ...], answer: Callable[[], _T]) -> _T:
        """``answer()``, remembered under ``key`` until steady() ends (outside it: not kept).

        ``key`` must name everything the answer depends on besides the template files.
        """
        answers = self._steady_answers
        if answers is None:
            return answer()
        if key not in answers:
            answers[key] = answer()
        found: _T = answers[key]
        return found

    # Finding files -------------------------------------------------------------------------

    def locales(self, template: str, channel: Channel) -> set[str]:
        """Locales in which ``template`` has every part ``channel`` requires."""
        directory, message = self._locate(template)
        required = REQUIRED_PARTS[channel]
        return {
            locale
            for (name, locale), parts in self._index(directory).items()
            if name == message and all(part in parts for part in required)
        }

    def files(self, template: str, locale: str, channel: Channel) -> dict[str, Path]:
        """The existing parts of ``template`` in ``locale`` for ``channel``: part -> path."""
        directory, message = self._locate(template)
        parts = self._index(directory).get((message, normalise_locale(locale)), {})
        return {part: parts[part] for part in PARTS[channel] if part in parts}

    def choose_locale(
        self, template: str, channel: Channel, wanted: str | None, default: str
    ) -> str:
        """The locale to render ``template`` in.

        ``wanted`` (``fi-FI``) when complete, else its language (``fi``), else ``default``.
        Case and separators are normalised (``fi_fi`` means ``fi-FI``); a region is never
        invented (``fi`` does not pick ``fi-FI``).
        """
        available = self.locales(template, channel)
        tag = normalise_locale(wanted) if wanted else ""
        for candidate in (tag, tag.split("-")[0]):
            if candidate and candidate in available:
                return candidate
        return normalise_locale(default)

    def style(self, locale: str) -> LocaleStyle:
        """How ``locale`` writes dates, numbers and money (``templates/locales.yaml``)."""
        styles = self._locale_styles()[0]
        tag = normalise_locale(locale)
        return styles.get(tag) or styles.get(tag.split("-")[0]) or LocaleStyle(format=tag)

    def style_problems(self) -> list[Problem]:
        """What is wrong with ``templates/locales.yaml`` (nothing when there is none)."""
        return list(self._locale_styles()[1])

    # Internals -----------------------------------------------------------------------------

    def _locate(self, template: str) -> tuple[Path, str]:
        pieces = template.split("/")
        if any(piece in ("", ".", "..") for piece in pieces) or "\\" in template:
            raise RenderError(f"{template!r} is not a template name such as 'cart/reminder'")
        return self.root.joinpath(*pieces[:-1]), pieces[-1]

    def _index(self, directory: Path) -> dict[tuple[str, str], dict[str, Path]]:
        """(message, locale) -> part -> path for one directory, read once per store."""
        index = self._indexes.get(directory)
        if index is None:
            index = {}
            paths = sorted(directory.glob("*.j2")) if directory.is_dir() else []
            for path in paths:
                pieces = path.name[: -len(".j2")].rsplit(".", 2)
                if len(pieces) == 3 and pieces[2] in _ALL_PARTS and path.is_file():
                    key = (pieces[0], normalise_locale(pieces[1]))
                    index.setdefault(key, {})[pieces[2]] = path
            self._indexes[directory] = index
        return index

    def _name(self, path: Path) -> str:
        name = self._names.get(path)
        if name is None:
            name = self._names[path] = path.relative_to(self.root).as_posix()
        return name

    def _display(self, path: Path | str) -> str:
        """A file as a marketer knows it: ``templates/cart/reminder.fi.html.j2``."""
        name = path if isinstance(path, str) else self._name(path)
        return f"{self.display_root}/{name}"

    def _require(self, template: str, locale: str, channel: Channel) -> dict[str, Path]:
        parts = self.files(template, locale, channel)
        missing = [part for part in REQUIRED_PARTS[channel] if part not in parts]
        if missing:
            available = ", ".join(sorted(self.locales(template, channel))) or "none"
            wanted = f"{template}.{locale}.{missing[0]}.j2"
            raise RenderError(
                f"no {channel.value} template {template!r} in locale {locale!r}: "
                f"{self._display(wanted)} does not exist (complete locales: {available})",
                file=self.root / wanted,
            )
        return parts

    def _locale_styles(self) -> tuple[dict[str, LocaleStyle], list[Problem]]:
        """templates/locales.yaml, read again only when it changes (one stat per call)."""
        path = self.root / LOCALES_FILE
        try:
            stat = path.stat()
            version = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            version = (0, -1)
        if self._styles is None or self._styles[0] != version:
            styles, problems = load_locale_styles(self.root, self._display(LOCALES_FILE))
            # A broken file must not break sending: the compiler reports it, rendering uses
            # whatever locales it could read.
            self._styles = (version, styles, problems)
        return self._styles[1], self._styles[2]


def _version(path: Path) -> tuple[int, int]:
    """(mtime, size) of a file, or (0, -1) when there is none."""
    try:
        stat = path.stat()
    except OSError:
        return (0, -1)
    return (stat.st_mtime_ns, stat.st_size)
