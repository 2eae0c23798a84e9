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
that locale's style in ``templates/locales.yaml`` (:mod:`kairos.messages.locales`), with the filters
of
:mod:`kairos.messages.formatting`.

Rendering also enforces what every marketing message must carry: an email always has an
unsubscribe link (a small localized footer is added when the template has none) and an SMS
always says how to opt out.

This module renders and is the public face; the store is built in layers, one module each:
finding files (:mod:`kairos.messages.template_files`), the Jinja sandbox
(:mod:`kairos.messages.template_environment`) and static checks
(:mod:`kairos.messages.template_checks`); what a render goes through after Jinja is in
:mod:`kairos.messages.message_text` and
:mod:`kairos.messages.compliance_footers`, the context of a send or a preview in
:mod:`kairos.messages.preview`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import css_inline
from jinja2 import TemplateNotFound, TemplateSyntaxError, UndefinedError, nodes

from kairos.language.plan import Channel
from kairos.messages.compliance_footers import (
    _OPT_OUT_HINT,
    _mentions,
    _unsubscribe_url,
    _with_html_footer,
    _with_opt_out,
    _with_text_footer,
    email_headers,
)
from kairos.messages.formatting import SCOPE_KEY, Scope, babel_locale, zone
from kairos.messages.inlining import INLINER, Recording, recording
from kairos.messages.locales import normalise_locale
from kairos.messages.message_text import (
    _one_line,
    _real,
    _tidy,
    _with_preheader,
    html_to_text,
    normalise_sms,
)
from kairos.messages.models import EmailContent, SmsContent
from kairos.messages.preview import message_context, render_preview
from kairos.messages.sms import analyse
from kairos.messages.template_checks import RENDERER_NAMES, TemplateChecks, TemplateLink, _dotted
from kairos.messages.template_files import PARTS, REQUIRED_PARTS, RenderError, TemplateProblem

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

_R = TypeVar("_R")
_MAX_WISHES = 4096  # (template, channel, locale asked for, default) lookups kept per store
_UNDEFINED_NAME = re.compile(r"^'(?P<name>.*)' is undefined$")


class TemplateStore(TemplateChecks):
    """The templates of one project, with a cached sandboxed Jinja environment.

    Args:
        root: The ``templates/`` directory.
        clock: Current time for relative dates (``timeago``); defaults to the system clock.
        reuse_shapes: Inline an email's CSS once per shape (:mod:`kairos.messages.inlining`); False
            inlines every email whole, which gives the same bytes, slower (the tests compare).
    """

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
        name = parts["sms"]

        def render() -> SmsContent:
            body = normalise_sms(self._render(name, self._context(context, chosen)))
            if not body:
                raise RenderError(f"{self._display(name)}: the SMS renders empty")
            if marketing and not _OPT_OUT_HINT.search(body):
                body = _with_opt_out(body, chosen)
            analysis = analyse(body)
            return SmsContent(
                body=body, encoding=analysis.encoding, segments=analysis.segments, locale=chosen
            )

        return self._remembered(("render_sms", name, chosen, marketing), context, render)

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
        name, tag = self._name(path), normalise_locale(locale)

        def render() -> str:
            return _one_line(self._render(name, self._context(context, tag)))

        return self._remembered(("render_line", name, tag), context, render)

    # Internals -----------------------------------------------------------------------------

    def _remembered(
        self, what: tuple[Any, ...], context: Mapping[str, Any], render: Callable[[], _R]
    ) -> _R:
        """``render()`` of the file ``what[1]``, inside steady() once per set of values the
        file (and every file it reaches) reads from ``context``: checking a project renders
        each message with every journey's sample data, which differ in values it never reads
        (the journey's name). ``what`` names everything else the answer depends on."""
        reads = self.line_reads(what[1]) if self._steady_answers is not None else None
        key = _values_key(reads | {_ZONE}, context) if reads is not None else None
        if key is None:
            return render()
        return self._steadily((*what, key), render)

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
        """The HTML part with its personal values as markers (kairos.messages.inlining) and those
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


# The customer's timezone: the render's own scope reads it (dates show in it).
_ZONE: tuple[tuple[str, Any], ...] = (("name", "customer"), ("attr", "timezone"))


class _NotPlain(Exception):
    """A value whose equality with another does not say they render alike."""


def _values_key(reads: set[tuple[tuple[str, Any], ...]], context: Mapping[str, Any]) -> Any:
    """The values ``reads`` name in ``context``, as a key equal only when they render alike;
    None when one of them is not plain data.

    A step is followed only as the template would follow it in a mapping or a list; where a
    step leads nowhere (a missing key, a method, an attribute of something else) the value
    before it is part of the key whole, so whatever the template did with it is covered. A
    name the context lacks is the same in every render: a global, a name the files bind from
    what else they read, or undefined.
    """
    values: list[Any] = []
    for steps in sorted(reads, key=repr):
        if steps[0][1] not in context:
            values.append((steps, -1))
            continue
        value: Any = context
        taken = 0
        for kind, step in steps:
            if not _follows(value, kind, step):
                break
            value = value[step]
            taken += 1
        try:
            values.append((steps, taken, _plain(value)))
        except _NotPlain:
            return None
    return tuple(values)


def _follows(value: Any, kind: str, step: Any) -> bool:
    """Whether the template's step ``kind``/``step`` from ``value`` is ``value[step]``."""
    if isinstance(value, Mapping):
        return isinstance(step, str | int) and step in value
    return (
        kind == "item"
        and type(value) in (list, tuple)
        and type(step) is int
        and -len(value) <= step < len(value)
    )


def _plain(value: Any) -> Any:
    """``value`` as a hashable structure with every type in it (``1``, ``1.0`` and ``True``
    differ; so do ``"a"`` and ``Markup("a")``)."""
    if value is None or type(value) in (bool, int, str):
        return (type(value), value)
    if type(value) is float:
        return (float, repr(value))  # -0.0 and 0.0 are equal but print apart
    if isinstance(value, Mapping):
        return (type(value), tuple((_plain(k), _plain(v)) for k, v in value.items()))
    if type(value) in (list, tuple):
        return (type(value), tuple(_plain(item) for item in value))
    if type(value) in (datetime, date, Decimal):
        return (type(value), repr(value))  # an instant in two timezones: equal, shown apart
    raise _NotPlain
