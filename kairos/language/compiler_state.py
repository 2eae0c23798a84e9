"""The state of compiling one journey, shared by every part of the journey compiler.

:class:`JourneyState` holds the journey's document, spec, catalogue, templates and the steps as
written (:class:`_Node`); it reports problems and knows which events are current at a step. The
checks build on it one layer a module: conditions and templated text
(:mod:`kairos.language.compiler_conditions`), sends (:mod:`kairos.language.compiler_sends`), the
other steps and settings (:mod:`kairos.language.compiler_steps`), and the plan itself
(:mod:`kairos.language.compiler_plan`). Names with a leading underscore are shared among these
modules and private to the compiler.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kairos.language import schema as s
from kairos.language.catalogue import Catalogue
from kairos.language.plan import Channel, PlanStep
from kairos.language.problems import Report, quote_list
from kairos.language.segments import Segment
from kairos.language.yaml_source import YamlDocument, YamlPath
from kairos.messages.rendering import TemplateStore, normalise_locale


@dataclass
class _Node:
    """One step as written, where it is, and what surrounds it."""

    spec: s.StepSpec
    path: YamlPath
    on_event: str | None  # inside a wait_for `on: <event>` path: that event is current
    parent: YamlPath | None
    previous: YamlPath | None
    id: str = ""


@dataclass(frozen=True)
class _EventRef:
    event: str
    when: str | None
    path: YamlPath  # where the event name is written


class JourneyState:
    """The state of compiling one journey: its document, spec, nodes and findings."""

    def __init__(
        self,
        doc: YamlDocument,
        spec: s.JourneySpec,
        catalogue: Catalogue | None,
        templates: TemplateStore,
        report: Report,
        home: Path,
        stem: str,
        segments: Mapping[str, Segment] | None = None,
    ) -> None:
        self.doc = doc
        self.segments = segments
        self.spec = spec
        self.catalogue = catalogue
        self.templates = templates
        self.report = report
        self.home = home
        self.stem = stem
        self.nodes: list[_Node] = []
        self.by_path: dict[YamlPath, _Node] = {}
        self.steps: dict[str, PlanStep] = {}
        self.locales, self.default_locale = self._locales()
        self.saved: dict[str, str | None] = {}  # save_as name -> action name (None: webhook)
        self.saved_args: dict[str, dict[str, Any]] = {}  # save_as name -> its `with:`
        self._checked_templates: set[tuple[str, str, Channel]] = set()

    # Problems ------------------------------------------------------------------------------

    def error(self, path: YamlPath, message: str, hint: str = "", **where: Any) -> None:
        self.report.add(self.doc.problem(path, message, hint, **where))

    def warn(self, path: YamlPath, message: str, hint: str = "", **where: Any) -> None:
        self.report.add(self.doc.problem(path, message, hint, severity="warning", **where))

    def _locales(self) -> tuple[list[str], str]:
        spec = self.spec
        written = spec.locales or ([spec.default_locale] if spec.default_locale else ["en"])
        locales: list[str] = []
        for index, tag in enumerate(written):
            locale = normalise_locale(tag)
            if locale in locales and spec.locales is not None:
                self.error(("locales", index), f"`{tag}` is listed twice", "list each locale once")
            elif locale not in locales:
                locales.append(locale)
        default = normalise_locale(spec.default_locale) if spec.default_locale else locales[0]
        if default not in locales:
            self.error(
                ("default_locale",),
                f"`{spec.default_locale}` is not in locales",
                f"add it to locales, or use {quote_list(locales)}",
            )
        return locales, default

    def trigger_event(self) -> str | None:
        trigger = self.spec.trigger
        return trigger.event if isinstance(trigger, s.EventTriggerSpec) else None

    def events_at(self, node: _Node) -> frozenset[str]:
        """The events whose properties ``event.X`` may read at ``node`` (see the spec)."""
        if node.on_event is not None:
            return frozenset({node.on_event})
        names = {self.trigger_event()} if self.trigger_event() else set()
        for other in self.nodes:
            if isinstance(other.spec, s.WaitForStep):
                names.update(r.event for r in _event_refs(other.spec.wait_for, ()))
        return frozenset(n for n in names if n)


def _event_refs(value: Any, path: YamlPath) -> list[_EventRef]:
    """The events of ``wait_for`` / ``exit_on`` in any of their written forms."""
    match value:
        case str():
            return [_EventRef(value, None, path)]
        case s.EventMatchSpec():
            return [_EventRef(value.event, value.when, (*path, "event"))]
        case list():
            refs: list[_EventRef] = []
            for index, item in enumerate(value):
                refs.extend(_event_refs(item, (*path, index)))
            return refs
        case _:
            return []
