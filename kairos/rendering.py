"""Message templates: finding them per locale, checking them, and rendering email and SMS.

Templates live under ``templates/`` as ``<dir>/<message>.<locale>.<part>.j2`` (parts: subject,
preheader, html, text for email; sms for SMS) with shared layouts in ``templates/layouts/``.
A :class:`TemplateStore` wraps one sandboxed Jinja environment per project: templates are
compiled once and cached, undefined variables are errors (``StrictUndefined``) and only HTML is
autoescaped. The compiler uses ``locales``, ``referenced_paths``, ``problems``,
``constant_links`` and ``render_line`` to check a journey before it runs; the send activity and
``kairos preview`` build one context (``message_context``) and use ``render_email`` and
``render_sms``.

A message renders in the locale ``choose_locale`` picks (``sv-FI``, else ``sv``, else the
journey's default), which templates see as ``locale``; dates, numbers, money and plurals follow
that locale's style in ``templates/locales.yaml`` (:mod:`kairos.locales`), with the filters of
:mod:`kairos.formatting`.

Rendering also enforces what every marketing message must carry: an email always has an
unsubscribe link (a small localized footer is added when the template has none) and an SMS
always says how to opt out.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import css_inline
import html2text
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
)
from jinja2.environment import TemplateModule
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from kairos.actions_catalogue import action_sample
from kairos.catalogue import CONSENT_KEYS
from kairos.expressions import paths_in
from kairos.formatting import (
    FILTERS,
    GLOBALS,
    PLURAL_CATEGORIES,
    SCOPE_KEY,
    Scope,
    babel_locale,
    plural_categories,
    zone,
)
from kairos.inlining import INLINER, Recording, ShapeCache, faithful_tree, finalize, recording
from kairos.locales import LOCALES_FILE, LocaleStyle, load_locale_styles, normalise_locale
from kairos.messages import EmailContent, SmsContent
from kairos.plan import ActionStep, Category, Channel, EventTrigger, JourneyPlan, SendStep
from kairos.problems import Problem, did_you_mean, quote_list, suggestion
from kairos.sms import analyse, is_gsm7
from kairos.template_safety import (
    NESTING_HINT,
    GuardedSandbox,
    guard_filters,
    too_deep,
    unsafe,
)
from kairos.yaml_source import MAX_BYTES, OUTSIDE, OUTSIDE_HINT, escapes

__all__ = [
    "PARTS",
    "RENDERER_NAMES",
    "REQUIRED_PARTS",
    "RenderError",
    "TemplateLink",
    "TemplateProblem",
    "TemplateStore",
    "email_headers",
    "message_context",
    "normalise_locale",
    "render_preview",
]

PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.email: ("subject", "preheader", "html", "text"),
    Channel.sms: ("sms",),
}
REQUIRED_PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.email: ("subject", "html"),
    Channel.sms: ("sms",),
}
# Names the renderer itself provides, so templates may use them without declaring them.
RENDERER_NAMES = frozenset({"unsubscribe_url", "message", "locale"})
# Names Jinja binds inside templates (loops, blocks, macros, call blocks).
_JINJA_NAMES = frozenset({"loop", "self", "super", "caller", "varargs", "kwargs"})
_ALL_PARTS = frozenset(part for parts in PARTS.values() for part in parts)
_T = TypeVar("_T")

_EMAIL_FOOTER: dict[str, tuple[str, str]] = {
    "en": ("Don't want these emails?", "Unsubscribe"),
    # Not "Peru tilaus": tilaus is also an order and a (coffee) subscription.
    "fi": ("Etkö halua enää näitä viestejä?", "Lopeta markkinointiviestit"),
    # Not "Avsluta prenumerationen", for the same reason: a prenumeration is also a product.
    "sv": ("Vill du inte längre få de här mejlen?", "Avregistrera dig från utskicken"),
    "de": ("Sie möchten diese E-Mails nicht mehr erhalten?", "Abmelden"),
    "hu": ("Nem szeretne több ilyen levelet kapni?", "Leiratkozás"),
    "ru": ("Не хотите получать эти письма?", "Отписаться"),
}
# STOP stays in English everywhere: it is the keyword carriers and Twilio act on.
_SMS_OPT_OUT: dict[str, str] = {
    "en": "Reply STOP to opt out.",
    "fi": "Lopeta viestit vastaamalla STOP.",
    "sv": "Svara STOP för att avregistrera dig.",
    "de": "Zum Abmelden STOP antworten.",
    "hu": "Leiratkozáshoz válaszoljon STOP szöveggel.",
    "ru": "Чтобы отписаться, ответьте STOP.",
}
_OPT_OUT_HINT = re.compile(r"\b(STOP|STOPALL|UNSUBSCRIBE)\b")

_PREHEADER_STYLE = (
    "display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0;max-width:0;"
    "opacity:0;overflow:hidden;mso-hide:all"
)
_FOOTER_STYLE = "margin:24px 0 0;font-size:12px;line-height:18px;color:#6b7280;text-align:center"
_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_MD_ESCAPE = re.compile(r"\\([\\.+\-])")
_LINE_BREAKS = re.compile(r"[ \t\r\n\f\v]+")
_UNDEFINED_NAME = re.compile(r"^'(?P<name>.*)' is undefined$")
_URL = re.compile(r"https?://[^\s<>\"']+")


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


def email_headers(unsubscribe_url: str | None, *, one_click: bool = True) -> dict[str, str]:
    """``List-Unsubscribe`` headers for a marketing email (RFC 2369; one-click per RFC 8058)."""
    if not unsubscribe_url:
        return {}
    headers = {"List-Unsubscribe": f"<{unsubscribe_url}>"}
    if one_click:
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


class _Undefined(StrictUndefined):
    """StrictUndefined whose message always has one shape, so the name can be read back."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        return f"{self._undefined_name!r} is undefined"


# -- The environment -------------------------------------------------------------------------


_MAX_WISHES = 4096  # (template, channel, locale asked for, default) lookups kept per store
_PLAIN_DATA = frozenset({dict, list, tuple, str, int, float, bool})


class _Environment(GuardedSandbox):
    """Sandboxed; on a mapping ``a.b`` is the key ``b`` and never a method.

    Template data is JSON-like, so ``event.items`` means the event's ``items`` property, which
    the compiler checked against the catalogue, not ``dict.items``; when the event has no
    ``items`` it is undefined, so ``event.items | default([], true)`` gives the empty list.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Compiled file -> (its output can carry markers, the files it names).
        self.faithful: dict[str, tuple[bool, tuple[str, ...]]] = {}

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict or isinstance(obj, Mapping):  # the exact type first: ABCs are slow
            if attribute in obj:
                return obj[attribute]
            return self.undefined(obj=obj, name=attribute)
        if type(obj) is TemplateModule and not attribute.startswith("_"):
            # What an imported template exports (legal.footers): the sandbox's checks pass
            # any such name whose value is plain data, so plain data skips them.
            value = vars(obj).get(attribute)
            if type(value) in _PLAIN_DATA:
                return value
        return super().getattr(obj, attribute)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        # A plain dict, not Jinja's ChainMap over the environment's globals: every render
        # copies a template's globals into its context, and set-differences them on every
        # {% import %}, a third of a short part's render time with a ChainMap. The globals
        # are set before the first template loads and never change (_environment).
        return {**self.globals, **(d or {})}

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # Jinja's hook for every compile: note, from the very tree compiled, whether the
        # file's output can carry the markers of kairos.inlining, and which files it names.
        if name is not None:
            self.faithful[name] = faithful_tree(source)
        return super()._generate(source, name, filename, defer_init)


def _environment(root: Path) -> _Environment:
    env = _Environment(
        loader=FileSystemLoader(str(root)),
        undefined=_Undefined,
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # a store lives as long as its project: templates are read once
        cache_size=4096,
        finalize=finalize,
    )
    env.filters.update(FILTERS)
    guard_filters(env.filters)
    env.globals.update(GLOBALS)
    return env


# -- The store -------------------------------------------------------------------------------


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


class TemplateStore:
    """The templates of one project, with a cached sandboxed Jinja environment.

    Args:
        root: The ``templates/`` directory.
        clock: Current time for relative dates (``timeago``); defaults to the system clock.
        reuse_shapes: Inline an email's CSS once per shape (:mod:`kairos.inlining`); False
            inlines every email whole, which gives the same bytes, slower (the tests compare).
    """

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
        # Checked files by name, with the (mtime, size) they were read at: journeys share
        # layouts and templates, and checking a project should read each version once.
        self._loaded: dict[str, tuple[tuple[int, int], _Unit | TemplateProblem]] = {}
        # templates/locales.yaml, with the (mtime, size) it was read at.
        self._styles: tuple[tuple[int, int], dict[str, LocaleStyle], list[Problem]] | None = None
        self._styles_text: tuple[tuple[int, int], str] | None = None  # its text, for pinning
        # What rendering looks up once per store, as the compiled templates: the parts a
        # message has in the locale a wish resolves to, each locale's Babel locale and
        # default timezone, whether an HTML part's files can carry markers, and the styled
        # shapes of kairos.inlining. A render touches no file once these are filled.
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
        # Inside steady(): the walks already checked against their files.
        self._steady_walks: set[tuple[str, str, Channel]] | None = None

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
        them (a hundred journeys made forty thousand file lookups)."""
        self._steady_walks = set()
        try:
            yield
        finally:
            self._steady_walks = None

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

    # Checking ------------------------------------------------------------------------------

    def referenced_paths(
        self, template: str, locale: str, channel: Channel
    ) -> set[tuple[str, ...]]:
        """Dotted variables read by the parts and the layouts/includes they use.

        Names the renderer provides (``unsubscribe_url``, ``message``), Jinja's own names and
        globals, and names bound in the templates (loop variables, ``set``, macros, imports)
        are left out. Files that do not parse are skipped: ``problems`` reports them.
        """
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

    def style(self, locale: str) -> LocaleStyle:
        """How ``locale`` writes dates, numbers and money (``templates/locales.yaml``)."""
        styles = self._locale_styles()[0]
        tag = normalise_locale(locale)
        return styles.get(tag) or styles.get(tag.split("-")[0]) or LocaleStyle(format=tag)

    def style_problems(self) -> list[Problem]:
        """What is wrong with ``templates/locales.yaml`` (nothing when there is none)."""
        return list(self._locale_styles()[1])

    def constant_links(self, template: str, locale: str, channel: Channel) -> list[TemplateLink]:
        """Links written as text in the message's files, not made from its data."""
        links: list[TemplateLink] = []
        for unit in self._walk(template, locale, channel).units:
            links.extend(unit.links)
        return links

    def closure(self, template: str, channel: Channel) -> dict[str, str]:
        """Every file ``template`` can read when sent on ``channel``, in every locale it is
        complete in: relative name -> source. This is what a run is pinned to."""
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

    # Rendering -----------------------------------------------------------------------------

    def render_email(
        self,
        template: str,
        *,
        locale: str | None,
        default_locale: str,
        context: Mapping[str, Any],
        marketing: bool,
    ) -> EmailContent:
        """Render an email: subject, preheader, CSS-inlined HTML and a plain-text part.

        Raises:
            RenderError: A missing part, an undefined variable, a template error, or a
                marketing email without ``unsubscribe_url`` in the context.
        """
        chosen, parts = self._parts(template, Channel.email, locale, default_locale)
        ctx = self._context(context, chosen)
        url = _unsubscribe_url(ctx, template, marketing)
        subject = _one_line(self._render(parts["subject"], ctx))
        if not subject:
            raise RenderError(f"{self._display(parts['subject'])}: the subject renders empty")
        preheader = _one_line(self._render(parts["preheader"], ctx)) if "preheader" in parts else ""
        skeleton, values = self._render_html(parts["html"], ctx)
        # The HTML as written, built from the skeleton only when something reads it: when a
        # value is the link itself, the HTML shows it (escaped) and nothing does.
        html = skeleton if values is None else None
        if url and not (values and url in values.texts):
            html = html if html is not None else _real(skeleton, values)
            if not _mentions(html, url):
                html = _with_html_footer(html, url, chosen)
                if values:
                    skeleton = _with_html_footer(skeleton, values.mark(url), chosen)
        if "text" in parts:
            text = _tidy(self._render(parts["text"], ctx))
        else:
            text = html_to_text(html if html is not None else _real(skeleton, values))
        if url and url not in text:
            text = _with_text_footer(text, url, chosen)

        def inline(document: str) -> str:
            return self._inline_css(document, parts["html"])

        if values:
            inlined = self._shapes.styled(skeleton, values, inline)
        else:
            inlined = inline(skeleton if html is None else html)
        html = _with_preheader(inlined, preheader)
        return EmailContent(
            subject=subject, preheader=preheader, html=html, text=text, locale=chosen
        )

    def render_sms(
        self,
        template: str,
        *,
        locale: str | None,
        default_locale: str,
        context: Mapping[str, Any],
        marketing: bool,
    ) -> SmsContent:
        """Render an SMS with its encoding and segment count.

        Raises:
            RenderError: A missing part, an undefined variable, a template error or an
                empty body.
        """
        chosen, parts = self._parts(template, Channel.sms, locale, default_locale)
        body = normalise_sms(self._render(parts["sms"], self._context(context, chosen)))
        if not body:
            raise RenderError(f"{self._display(parts['sms'])}: the SMS renders empty")
        if marketing and not _OPT_OUT_HINT.search(body):
            body = _with_opt_out(body, chosen)
        analysis = analyse(body)
        return SmsContent(
            body=body, encoding=analysis.encoding, segments=analysis.segments, locale=chosen
        )

    def render_line(
        self, template: str, locale: str, part: str, context: Mapping[str, Any]
    ) -> str | None:
        """A one-line email part (``subject``, ``preheader``) exactly as it would render in
        ``locale``, without the rest of the email; None when the part does not exist.

        Raises:
            RenderError: Any render error.
        """
        path = self.files(template, locale, Channel.email).get(part)
        if path is None:
            return None
        ctx = self._context(context, normalise_locale(locale))
        return _one_line(self._render(self._name(path), ctx))

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
        return path.relative_to(self.root).as_posix()

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

    def _context(self, context: Mapping[str, Any], locale: str) -> dict[str, Any]:
        ctx = dict(context)
        ctx.setdefault("unsubscribe_url", None)
        ctx.setdefault("message", {})
        ctx["locale"] = locale
        scope = self._scopes.get(locale)
        if scope is None:
            style = self.style(locale)
            scope = self._scopes[locale] = (babel_locale(style.format), style.timezone or "UTC")
        customer = ctx.get("customer")
        zone_name = customer.get("timezone") if isinstance(customer, Mapping) else None
        if not (isinstance(zone_name, str) and zone_name):
            zone_name = scope[1]
        ctx[SCOPE_KEY] = Scope(scope[0], zone(zone_name), self.clock())
        return ctx

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

    def _parts(
        self, template: str, channel: Channel, wanted: str | None, default: str
    ) -> tuple[str, dict[str, str]]:
        """The locale a message renders in and its parts (part -> file name), looked up once
        per store for each wish."""
        key = (template, channel, wanted, default)
        found = self._chosen.get(key)
        if found is None:
            chosen = self.choose_locale(template, channel, wanted, default)
            paths = self._require(template, chosen, channel)
            found = (chosen, {part: self._name(path) for part, path in paths.items()})
            if len(self._chosen) < _MAX_WISHES:  # wishes come from customer data: bounded
                self._chosen[key] = found
        return found

    def _render_html(self, name: str, ctx: Mapping[str, Any]) -> tuple[str, Recording | None]:
        """The HTML part with its personal values as markers (kairos.inlining) and those
        values; the ordinary HTML and None where markers cannot stand for them."""
        if not (self._reuse_shapes and self._can_mark(name)):
            return self._render(name, ctx), None
        values = Recording()
        token = recording.set(values)
        try:
            skeleton = self._render(name, ctx)
        finally:
            recording.reset(token)
        if not values.faithful:
            return self._render(name, ctx), None
        return skeleton, values

    def _can_mark(self, name: str) -> bool:
        """Whether every file the HTML part ``name`` can read lets markers through."""
        known = self._markable.get(name)
        if known is None:
            known = True
            queue, seen = [name], {name}
            while queue and known:
                current = queue.pop()
                self._env.get_template(current)  # compiled, so its tree was looked at
                faithful, targets = self._env.faithful.get(current, (False, ()))
                known = faithful
                for target in targets:
                    if target not in seen:
                        seen.add(target)
                        queue.append(target)
            self._markable[name] = known
        return known

    def _render(self, name: str, ctx: Mapping[str, Any]) -> str:
        try:
            template = self._compiled.get(name)
            if template is None:
                template = self._compiled[name] = self._env.get_template(name)
            return template.render(ctx)
        except UndefinedError as exc:
            raise self._undefined(exc, self.root / name) from exc
        except TemplateSyntaxError as exc:
            file = Path(exc.filename) if exc.filename else self.root / name
            raise RenderError(
                f"{self._display(file)}:{exc.lineno}: {exc.message}", file=file, line=exc.lineno
            ) from exc
        except TemplateNotFound as exc:
            file, line = self._origin(exc.__traceback__, self.root / name)
            raise RenderError(
                f"{self._where(file, line)}: template {exc.name!r} does not exist",
                file=file,
                line=line,
            ) from exc
        except Exception as exc:  # anything a template does wrong is the template's problem
            file, line = self._origin(exc.__traceback__, self.root / name)
            raise RenderError(f"{self._where(file, line)}: {exc}", file=file, line=line) from exc

    def _undefined(self, exc: UndefinedError, path: Path) -> RenderError:
        file, line = self._origin(exc.__traceback__, path)
        match = _UNDEFINED_NAME.match(str(exc))
        if match is None:
            return RenderError(f"{self._where(file, line)}: {exc}", file=file, line=line)
        variable = self._dotted_at(file, line, match["name"]) or match["name"]
        return RenderError(
            f"{self._where(file, line)}: {variable} is undefined (give it a value, or write "
            f"{{{{ {variable} | default('') }}}} or {{% if {variable} is defined %}})",
            file=file,
            line=line,
            variable=variable,
        )

    def _origin(self, tb: TracebackType | None, fallback: Path) -> tuple[Path, int | None]:
        """The innermost template file and line in a traceback (Jinja rewrites its frames)."""
        file, line = fallback, None
        root = str(self.root) + os.sep
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if filename.startswith(root) and filename.endswith(".j2"):
                file, line = Path(filename), tb.tb_lineno
            tb = tb.tb_next
        return file, line

    def _where(self, file: Path, line: int | None) -> str:
        return self._display(file) + (f":{line}" if line else "")

    def _dotted_at(self, file: Path, line: int | None, name: str) -> str | None:
        """The full dotted path (``customer.first_name``) whose last part is ``name``."""
        try:
            tree = self._env.parse(file.read_text(encoding="utf-8"))
        except (OSError, TemplateSyntaxError):
            return None
        best: tuple[str, ...] = ()
        for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
            path = _dotted(node)
            if path and path[-1] == name and node.lineno == line and len(path) > len(best):
                best = path
        return ".".join(best) or None

    def _inline_css(self, html: str, name: str) -> str:
        try:
            return INLINER.inline(html)
        except (css_inline.InlineError, ValueError) as exc:
            raise RenderError(
                f"{self._display(name)}: cannot inline CSS: {exc}", file=self.root / name
            ) from exc

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

    def _missing(self, unit: _Unit, kind: str, target: str, line: int) -> TemplateProblem:
        siblings = [self._name(p) for p in (self.root / target).parent.glob("*.j2")]
        close = did_you_mean(target, siblings)
        hint = f" (did you mean `{close}`?)" if close else ""
        message = f'{{% {kind} "{target}" %}}: {self._display(target)} does not exist{hint}'
        return TemplateProblem(unit.path, line, message)


def _version(path: Path) -> tuple[int, int]:
    """(mtime, size) of a file, or (0, -1) when there is none."""
    try:
        stat = path.stat()
    except OSError:
        return (0, -1)
    return (stat.st_mtime_ns, stat.st_size)


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


# -- Post-processing -------------------------------------------------------------------------


def _one_line(text: str) -> str:
    # ASCII whitespace only: the non-breaking spaces Babel puts in "1 234,50 €" should stay.
    return _LINE_BREAKS.sub(" ", text).strip(" ")


def _tidy(text: str) -> str:
    """Trailing spaces off every line, at most one blank line in a row, no outer blank lines."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an email's HTML: links kept, layout tables flattened."""
    converter = html2text.HTML2Text()
    converter.body_width = 0  # never wrap: a wrapped URL is a broken link
    converter.unicode_snob = True  # keep ä and € rather than ASCII look-alikes
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True  # email layouts are tables; their cells are the text
    # html2text escapes what Markdown would misread (1\. Socks, \- 20% off); a plain-text
    # reader is not a Markdown parser, so the escapes are undone.
    return _tidy(_MD_ESCAPE.sub(r"\1", str(converter.handle(html))))


def normalise_sms(text: str) -> str:
    """Collapse spaces within lines and blank-line runs, and strip.

    Non-breaking spaces (Babel puts them in ``1 234,50 €``) become plain spaces: they are not
    in GSM-7, and one of them would turn the whole message into UCS-2.
    """
    lines = [re.sub(r"[^\S\n]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _localized(table: Mapping[str, _T], locale: str) -> _T:
    return table.get(locale) or table.get(locale.split("-")[0]) or table["en"]


def _unsubscribe_url(ctx: Mapping[str, Any], template: str, marketing: bool) -> str | None:
    if not marketing:
        return None
    url = ctx.get("unsubscribe_url")
    if not isinstance(url, str) or not url:
        raise RenderError(
            f"{template}: a marketing email needs an unsubscribe link, but the context has no "
            "unsubscribe_url"
        )
    return url


def _real(skeleton: str, values: Recording | None) -> str:
    return values.real(skeleton) if values else skeleton


def _mentions(html: str, url: str) -> bool:
    return url in html or str(escape(url)) in html


def _with_html_footer(html: str, url: str, locale: str) -> str:
    question, label = _localized(_EMAIL_FOOTER, locale)
    footer = (
        f'<p style="{_FOOTER_STYLE}">{escape(question)} '
        f'<a href="{escape(url)}" style="color:#6b7280;text-decoration:underline">'
        f"{escape(label)}</a></p>"
    )
    closes = list(_BODY_CLOSE.finditer(html))
    if not closes:
        return html + footer
    at = closes[-1].start()
    return html[:at] + footer + html[at:]


def _with_text_footer(text: str, url: str, locale: str) -> str:
    question, label = _localized(_EMAIL_FOOTER, locale)
    return f"{text}\n\n{question} {label}: {url}"


def _with_preheader(html: str, preheader: str) -> str:
    if not preheader:
        return html
    span = f'<span style="{_PREHEADER_STYLE}">{escape(preheader)}</span>'
    body = _BODY_OPEN.search(html)
    if body is None:
        return span + html
    return html[: body.end()] + span + html[body.end() :]


def _with_opt_out(body: str, locale: str) -> str:
    suffix = _localized(_SMS_OPT_OUT, locale)
    # A localized hint must not turn a GSM-7 message into UCS-2 (half the room per segment).
    if is_gsm7(body) and not is_gsm7(suffix):
        suffix = _SMS_OPT_OUT["en"]
    return f"{body} {suffix}"


# -- Sending and previewing ------------------------------------------------------------------


def message_context(
    *,
    customer: Mapping[str, Any],
    event: Mapping[str, Any],
    journey: Mapping[str, Any],
    unsubscribe_url: str | None,
    key: str,
) -> dict[str, Any]:
    """The names a message renders with. The send activity and ``kairos preview`` both build
    their context here, so a preview shows the text a customer receives."""
    return {
        "customer": dict(customer),
        "event": dict(event),
        "journey": dict(journey),
        "unsubscribe_url": unsubscribe_url,
        "message": {"key": key},
    }


def render_preview(
    store: TemplateStore,
    plan: JourneyPlan,
    step_id: str,
    customer: Mapping[str, Any],
    event: Mapping[str, Any],
    locale: str | None,
    unsubscribe_url: str | None,
) -> EmailContent | SmsContent:
    """Render a send step's message for one customer as the send activity would.

    Built-in names the customer or event file leave out are filled in (``customer.id``,
    ``consent`` all granted, ``event.name`` from the trigger), and results of earlier actions
    (``journey.<save_as>``) are what the action would return for the step's own arguments at
    the time of the preview (a 10% coupon says 10%, valid from today), with the registered
    action's sample values for the rest.

    Args:
        locale: The locale asked for; None uses ``customer["locale"]``, then the journey's
            default.

    Raises:
        RenderError: An unknown or non-send step (with a did-you-mean), or any render error.
    """
    step = _send_step(plan, step_id)
    now = store.clock()
    marketing = plan.category == Category.marketing
    context = message_context(
        customer=_preview_customer(plan, customer),
        event=_preview_event(plan, event, now),
        journey=_preview_journey(plan, step_id, now),
        # As the send activity: only marketing messages carry an unsubscribe link.
        unsubscribe_url=unsubscribe_url if marketing else None,
        key=f"preview:{plan.name}:{step_id}",
    )
    render = store.render_email if step.channel == Channel.email else store.render_sms
    return render(
        step.template,
        locale=locale or _str_or_none(customer.get("locale")),
        default_locale=plan.default_locale,
        context=context,
        marketing=marketing,
    )


def _send_step(plan: JourneyPlan, step_id: str) -> SendStep:
    step = plan.steps.get(step_id)
    if isinstance(step, SendStep):
        return step
    sends = [sid for sid, s in plan.steps.items() if isinstance(s, SendStep)]
    if step is None:
        hint = suggestion(step_id, sends, kind="send steps")
        raise RenderError(f"journey `{plan.name}` has no step `{step_id}` ({hint})")
    raise RenderError(
        f"step `{step_id}` of journey `{plan.name}` is a {step.kind} step, not a send "
        f"(send steps: {quote_list(sends, conj='and')})"
    )


def _preview_customer(plan: JourneyPlan, customer: Mapping[str, Any]) -> dict[str, Any]:
    builtins: dict[str, Any] = {
        "id": "preview-customer",
        "stage": plan.stage.value if plan.stage else None,
        "consent": dict.fromkeys(CONSENT_KEYS, True),
    }
    return builtins | dict(customer)


def _preview_event(plan: JourneyPlan, event: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    name = plan.trigger.event if isinstance(plan.trigger, EventTrigger) else None
    builtins = {"name": name, "id": "preview-event", "timestamp": now.isoformat()}
    return builtins | dict(event)


def _preview_journey(plan: JourneyPlan, step_id: str, now: datetime) -> dict[str, Any]:
    journey: dict[str, Any] = {
        "name": plan.name,
        "version": plan.version,
        "step": step_id,
        "variant": None,
        "started_at": now.isoformat(),
    }
    for step in plan.steps.values():
        if isinstance(step, ActionStep) and step.save_as:
            journey[step.save_as] = action_sample(step.action, step.args, now)
    return journey


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


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
