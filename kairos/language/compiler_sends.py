"""Checks of send steps: the template exists in every locale with every part, its variables
are declared, and with sample data an SMS stays within its segments and alphabet and links to
the customer's own link, and an email's subject and preheader fit an inbox.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kairos.language import schema as s
from kairos.language.actions_catalogue import action_sample
from kairos.language.catalogue import CONSENT_KEYS, Attribute, AttrType, Catalogue
from kairos.language.compiler_conditions import ConditionChecks, _Names
from kairos.language.compiler_state import JourneyState, _Node
from kairos.language.plan import Category, Channel
from kairos.language.problems import Problem, Severity, did_you_mean
from kairos.language.project_files import display_path
from kairos.language.yaml_source import escapes, format_path
from kairos.messages.rendering import REQUIRED_PARTS, RenderError
from kairos.messages.sms import analyse
from kairos.messages.unsubscribe import unsubscribe_url

SMS_SEGMENT_LIMIT = 3
SUBJECT_LIMIT = 60  # characters; most phones show about 40-50, desktop inboxes about 60-70
PREHEADER_LIMIT = 100  # characters; inboxes show 40-100 after the subject
# Plain look-alikes of characters that would send an SMS as UCS-2.
_GSM_LOOKALIKES = {"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "…": "..."}


class SendChecks(ConditionChecks):
    """Checks of the send steps and the templates they use."""

    def _check_send(self, node: _Node, spec: s.SendStep) -> None:
        if spec.fallback == spec.send:
            self.error(
                (*node.path, "fallback"),
                f"the fallback is {spec.send.value} again",
                "fall back to the other channel, or remove `fallback`",
            )
        channels = [spec.send] + ([spec.fallback] if spec.fallback not in (None, spec.send) else [])
        for channel in channels:
            if channel is not None and self._template_complete(node, spec.template, channel):
                self._check_template_files(node, spec.template, channel)

    def _template_complete(self, node: _Node, template: str, channel: Channel) -> bool:
        path = (*node.path, "template")
        try:
            available = self.templates.locales(template, channel)
        except RenderError as exc:
            self.error(path, str(exc))
            return False
        if not available:
            names = _template_names(self.templates.root)
            close = did_you_mean(template, names)
            hint = (
                f"did you mean `{close}`?"
                if close
                else "create " + self._wanted_files(template, self.default_locale, channel)
            )
            self.error(path, f"no {channel.value} template `{template}`", hint)
            return False
        missing = [locale for locale in self.locales if locale not in available]
        for locale in missing:
            self.error(
                path,
                f"`{template}` has no {locale} {channel.value}",
                "add " + self._wanted_files(template, locale, channel),
            )
        return not missing

    def _wanted_files(self, template: str, locale: str, channel: Channel) -> str:
        have = self.templates.files(template, locale, channel)
        wanted = [p for p in REQUIRED_PARTS[channel] if p not in have]
        return " and ".join(f"templates/{template}.{locale}.{part}.j2" for part in wanted)

    def _check_template_files(self, node: _Node, template: str, channel: Channel) -> None:
        note = self._used_by(node)
        for locale in self.locales:
            key = (template, locale, channel)
            first_time = key not in self._checked_templates
            self._checked_templates.add(key)
            if first_time:
                for problem in self.templates.problems(template, locale, channel):
                    self._template_problem(
                        problem.file, problem.line, problem.col, problem.message, problem.hint, note
                    )
            self._check_template_variables(node, template, locale, channel, note)
            if not first_time or self.catalogue is None:
                continue
            if channel == Channel.sms:
                self._check_sms_length(node, template, locale)
                self._check_sms_links(node, template, locale, note)
            else:
                self._check_email_lines(node, template, locale, note)

    def _template_problem(
        self,
        file: Path,
        line: int,
        col: int,
        message: str,
        hint: str,
        note: str,
        severity: Severity = "error",
    ) -> None:
        shown = display_path(file, self.home)
        # When the file cannot be read the problem says so; it just has no quoted line.
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if not escapes(file, self.home):
                self.report.add_source(shown, file.read_text(encoding="utf-8"))
        self.report.add(Problem(shown, max(line, 1), col, "", message, hint, severity, note))

    def _check_template_variables(
        self, node: _Node, template: str, locale: str, channel: Channel, note: str
    ) -> None:
        names = _Names(self, self.events_at(node), template=True)
        paths = self.templates.referenced_paths(template, locale, channel)
        files = list(self.templates.files(template, locale, channel).values())
        for dotted in sorted(paths):
            finding = names.check(dotted)
            if finding is None:
                continue
            file, line, col = _find_in_files(files, ".".join(dotted), self.templates.root)
            self._template_problem(file, line, col, finding[0], finding[1], note)

    def _check_sms_length(self, node: _Node, template: str, locale: str) -> None:
        context = _sample_context(self, node, locale)
        marketing = self.spec.category == Category.marketing
        path = (*node.path, "template")
        try:
            sms = self.templates.render_sms(
                template, locale=locale, default_locale=locale, context=context, marketing=marketing
            )
        except RenderError as exc:
            # Sample data can trip a template in ways real data would not; say so, don't fail.
            self.warn(
                path,
                f"cannot render a sample {locale} SMS: {exc}",
                "check the template with `kairos preview`",
            )
            return
        limits = self.spec.sms or s.SmsLimitsSpec()
        if limits.alphabet == "gsm-7" and sms.encoding != "GSM-7":
            self._sms_leaves_gsm7(node, template, locale, sms.body)
        limit = limits.max_segments or SMS_SEGMENT_LIMIT
        if sms.segments > limit:
            hint = f"keep it to {SMS_SEGMENT_LIMIT} or fewer: each segment is billed"
            if limits.max_segments:
                hint = f"shorten it to {limit}: the journey's `sms: max_segments` is {limit}"
            self.warn(
                path,
                f"the {locale} SMS `{template}` is {sms.segments} {sms.encoding} segments "
                "with sample data",
                hint,
            )

    def _sms_leaves_gsm7(self, node: _Node, template: str, locale: str, body: str) -> None:
        """Point at the character that makes the SMS UCS-2, in the template when it is there."""
        char = analyse(body).non_gsm[0]
        shown = f"`{char}` (U+{ord(char):04X})"
        plain = _GSM_LOOKALIKES.get(char)
        hint = (
            f"write {plain} instead" if plain else "write it without characters outside GSM-7"
        ) + ": the journey's `sms: alphabet` is gsm-7"
        message = (
            f"{shown} makes the {locale} SMS `{template}` UCS-2: 70 characters a segment, not 160"
        )
        files = list(self.templates.files(template, locale, Channel.sms).values())
        file, line, col = _find_in_files(files, char, self.templates.root)
        if (line, col) == (1, 1) and char not in _first_line(file):
            # The character came from the sample data, not the template: point at the step.
            self.warn((*node.path, "template"), message, hint)
            return
        note = self._used_by(node)
        self._template_problem(file, line, col, message, hint, note, "warning")

    def _check_sms_links(self, node: _Node, template: str, locale: str, note: str) -> None:
        """A link written into an SMS where the event carries this customer's own link."""
        assert self.catalogue is not None
        carried = [
            (event, prop)
            for event in sorted(self.events_at(node))
            if (spec := self.catalogue.events.get(event)) is not None
            for prop in spec.properties
            if prop == "url" or prop.endswith("_url")
        ]
        if not carried:
            return
        read = self.templates.referenced_paths(template, locale, Channel.sms)
        if any(("event", prop) in read for _, prop in carried):
            return
        event, prop = carried[0]
        for link in self.templates.constant_links(template, locale, Channel.sms):
            self._template_problem(
                link.file,
                link.line,
                link.col,
                f"the {locale} SMS links to the constant {link.url}, but `{event}` carries "
                f"`{prop}`",
                f"link to {{{{ event.{prop} | default('{link.url}', true) }}}} so each customer "
                "gets their own link",
                note,
                "warning",
            )

    def _check_email_lines(self, node: _Node, template: str, locale: str, note: str) -> None:
        """Subjects and preheaders short enough for an inbox, with sample data."""
        context = _sample_context(self, node, locale)
        for part, limit, why in (
            ("subject", SUBJECT_LIMIT, "about 50 show in full on a phone"),
            ("preheader", PREHEADER_LIMIT, "inboxes show 40 to 100 after the subject"),
        ):
            try:
                text = self.templates.render_line(template, locale, part, context)
            except RenderError:
                continue  # a sample-data problem; rendering checks report real ones
            if text is None or len(text) <= limit:
                continue
            file = self.templates.files(template, locale, Channel.email)[part]
            self._template_problem(
                file,
                1,
                1,
                f"the {locale} {part} is {len(text)} characters with sample data: `{text}`",
                f"keep it to {limit} or fewer; {why}",
                note,
                "warning",
            )

    def _used_by(self, node: _Node) -> str:
        used_at = self.doc.positions.value((*node.path, "template"))
        return f"used by {self.doc.file}:{used_at.line}:{used_at.col} ({format_path(node.path)})"


def _template_names(root: Path) -> list[str]:
    """``folder/message`` for every template file, for did-you-mean."""
    names = set()
    for path in root.glob("*/*.j2"):
        if path.parent.name != "layouts":
            names.add(f"{path.parent.name}/{path.name.split('.')[0]}")
    return sorted(names)


def _find_in_files(files: list[Path], needle: str, root: Path) -> tuple[Path, int, int]:
    """The first file, line and column where ``needle`` appears (layouts searched last)."""
    candidates = [*files, *sorted((root / "layouts").glob("*.j2"))]
    for file in candidates:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        for number, line in enumerate(lines, start=1):
            column = line.find(needle)
            if column >= 0:
                return file, number, column + 1
    return (files[0] if files else root), 1, 1


# --- sample data for SMS length -------------------------------------------------------------

_SAMPLE_BY_TYPE: Mapping[AttrType, Any] = {
    AttrType.string: "Sample text",
    AttrType.number: 123.45,
    AttrType.integer: 3,
    AttrType.boolean: True,
    AttrType.datetime: "2026-01-31T09:00:00+00:00",
    AttrType.date: "2026-01-31",
    AttrType.email: "alexandra.virtanen@example.com",
    AttrType.phone: "+358401234567",
    AttrType.locale: "en",
    AttrType.timezone: "Europe/Helsinki",
    AttrType.list: ["Sample item"],
    AttrType.object: {},
}


def _sample_value(name: str, attr: Attribute) -> Any:
    """A plausible value of realistic length, so segment counts mean something."""
    if attr.type == AttrType.string:
        if name.endswith("url"):
            return "https://shop.example.com/c/8d2f0a61b7c94e3a"
        if name.endswith(("first_name", "last_name")) or name == "name":
            return "Alexandra"
        if "name" in name:
            return "Ethiopia Yirgacheffe"  # a product, as long as real ones are
        if "currency" in name:
            return "EUR"
        if "code" in name:
            return "SAVE20-7KQ2X"
    return _SAMPLE_BY_TYPE[attr.type]


_SAMPLE_NOW = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)


def _first_line(file: Path) -> str:
    try:
        with file.open(encoding="utf-8") as handle:
            return handle.readline()
    except (OSError, UnicodeDecodeError):
        return ""


def _saved(journey: JourneyState) -> list[tuple[str, str]]:
    return [(name, action or "") for name, action in journey.saved.items()]


def _sample_context(journey: JourneyState, node: _Node, locale: str) -> dict[str, Any]:
    catalogue = journey.catalogue or Catalogue()
    customer: dict[str, Any] = {n: _sample_value(n, a) for n, a in catalogue.profile.items()}
    customer |= {
        "id": "sample-customer",
        "stage": journey.spec.stage or "consideration",
        "consent": dict.fromkeys(CONSENT_KEYS, True),
    }
    locale_attr = catalogue.attribute_of_type(AttrType.locale)
    if locale_attr:
        customer[locale_attr] = locale
    event: dict[str, Any] = {"id": "sample-event", "timestamp": "2026-01-31T09:00:00+00:00"}
    for name in sorted(journey.events_at(node)):
        spec = catalogue.events.get(name)
        if spec is not None:
            event |= {p: _sample_value(p, a) for p, a in spec.properties.items()}
            event["name"] = name
    saved = {
        name: action_sample(action, journey.saved_args.get(name, {}), _SAMPLE_NOW)
        for name, action in _saved(journey)
    }
    return {
        "customer": customer,
        "event": event,
        "journey": {
            "name": journey.spec.journey,
            "version": "sample",
            "step": node.id,
            "variant": "a",
            "started_at": "2026-01-31T09:00:00+00:00",
            **saved,
        },
        "unsubscribe_url": unsubscribe_url(
            "https://kairos.example.com", "sample-customer", secret="sample", now=1769850000
        ),
    }
