"""Checks of the journey's settings that name events (trigger, exit_on) and of every step kind
but send: waits, wait_for paths, branches, splits, gotos, set and action (with webhooks).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, assert_never
from urllib.parse import urlparse

from kairos.language import schema as s
from kairos.language.actions_catalogue import ACTIONS
from kairos.language.catalogue import BUILTIN_PROFILE, Attribute, AttrType, type_problem
from kairos.language.compiler_catalogue import _NUMERIC
from kairos.language.compiler_conditions import JOURNEY_NAMES
from kairos.language.compiler_sends import SendChecks
from kairos.language.compiler_state import _event_refs, _Node
from kairos.language.durations import parse_duration
from kairos.language.plan import (
    ApiTrigger,
    DateTrigger,
    EventMatch,
    EventTrigger,
    SegmentTrigger,
    Trigger,
)
from kairos.language.problems import suggestion
from kairos.language.segments import SEGMENTS_DIR, segment_files
from kairos.language.yaml_source import YamlPath

_DATE_TYPES = (AttrType.datetime, AttrType.date)


class StepChecks(SendChecks):
    """Checks of the settings and of each step kind; sends are checked by the base."""

    # Settings that name events -------------------------------------------------------------

    def _trigger(self) -> Trigger:
        trigger = self.spec.trigger
        match trigger:
            case "api":
                return ApiTrigger()
            case s.EventTriggerSpec():
                self._check_event(("trigger", "event"), trigger.event)
                events = frozenset({trigger.event})
                self._check_condition(("trigger", "when"), trigger.when, events)
                return EventTrigger(event=trigger.event, when=trigger.when)
            case s.DateTriggerSpec():
                attribute = self._date_attribute(("trigger", "date"), trigger.date)
                self._check_condition(("trigger", "when"), trigger.when, frozenset())
                offset = parse_duration(trigger.offset) if trigger.offset else 0
                return DateTrigger(attribute=attribute, offset_seconds=offset, when=trigger.when)
            case s.SegmentTriggerSpec():
                self._check_segment(("trigger", "segment"), trigger.segment)
                return SegmentTrigger(segment=trigger.segment)
            case _:
                assert_never(trigger)

    def _exit_on(self) -> tuple[EventMatch, ...]:
        refs = _event_refs(self.spec.exit_on, ("exit_on",)) if self.spec.exit_on else []
        matches = []
        for ref in refs:
            self._check_event(ref.path, ref.event)
            self._check_condition((*ref.path[:-1], "when"), ref.when, frozenset({ref.event}))
            matches.append(EventMatch(event=ref.event, when=ref.when))
        return tuple(matches)

    def _check_event(self, path: YamlPath, event: str) -> bool:
        if self.catalogue is None or event in self.catalogue.events:
            return True
        hint = suggestion(event, self.catalogue.events, kind="declared events")
        if not hint.startswith("did you mean"):
            hint = f"declare it under `events:` in journeys/customer.yaml; {hint}"
        self.error(path, f"unknown event `{event}`", hint)
        return False

    def _check_segment(self, path: YamlPath, name: str) -> None:
        """A segment trigger names a segment that compiled and that a customer can enter."""
        if self.segments is None:
            return
        segment = self.segments.get(name)
        if segment is None:
            if (self.home / SEGMENTS_DIR / f"{name}.yaml").is_file():
                return  # the segment's own problems are reported with its file
            names = [p.stem for p in segment_files(self.home)]
            hint = suggestion(name, names, kind="segments")
            if not hint.startswith("did you mean"):
                hint = f"create {SEGMENTS_DIR}/{name}.yaml; {hint}"
            self.error(path, f"no segment `{name}`", hint)
        elif segment.constant:
            self.error(
                path,
                f"segment `{name}` is `{segment.when}` for every customer: nobody ever enters it",
                "a trigger segment reads the customer: customer.lead_score >= 50, events(...)",
            )

    def _date_attribute(self, path: YamlPath, written: str) -> str:
        """The profile attribute named by ``customer.x``, checked to hold a date."""
        name = written.removeprefix("customer.")
        if self.catalogue is None:
            return name
        dates = [n for n, a in self.catalogue.profile.items() if a.type in _DATE_TYPES]
        attr = self.catalogue.profile.get(name)
        if attr is None:
            hint = suggestion(name, dates, kind="date attributes")
            self.error(path, f"`{written}` is not a profile attribute", (hint))
        elif attr.type not in _DATE_TYPES:
            self.error(
                path,
                f"`{written}` is a {attr.type.value}, not a date",
                (suggestion(name, dates, kind="date attributes")),
            )
        return name

    # Checking steps ------------------------------------------------------------------------

    def _check_step(self, node: _Node) -> None:
        spec = node.spec
        match spec:
            case s.SendStep():
                self._check_send(node, spec)
            case s.WaitStep():
                self._check_wait(node, spec)
            case s.WaitForStep():
                self._check_wait_for(node, spec)
            case s.BranchStep():
                self._check_branch(node, spec)
            case s.SplitStep():
                self._check_split(node, spec)
            case s.SetStep():
                self._check_set(node, spec)
            case s.ActionStep():
                self._check_action(node, spec)
            case s.GotoStep():
                self._check_goto(node, spec)
            case s.ExitStep():
                pass  # any outcome name is fine; the schema checked its form
            case _:
                assert_never(spec)

    def _check_wait(self, node: _Node, spec: s.WaitStep) -> None:
        wait = spec.wait
        if not isinstance(wait, s.WaitUntil):
            return
        path = (*node.path, "wait", "until")
        if wait.until.startswith("customer."):
            self._date_attribute(path, wait.until)
        elif wait.offset:
            self.error(
                (*node.path, "wait", "offset"),
                "`offset` only applies to a date",
                "remove it, or wait for a duration first: `- wait: 1d`",
            )

    def _check_wait_for(self, node: _Node, spec: s.WaitForStep) -> None:
        refs = _event_refs(spec.wait_for, (*node.path, "wait_for"))
        seen: set[str] = set()
        for ref in refs:
            if ref.event in seen:
                self.error(ref.path, f"`{ref.event}` is listed twice", "list each event once")
            seen.add(ref.event)
            self._check_event(ref.path, ref.event)
            when_path = (*ref.path[:-1], "when") if ref.path[-1] == "event" else ref.path
            self._check_condition(when_path, ref.when, frozenset({ref.event}))
        for event in spec.on or {}:
            if event not in seen:
                self.error(
                    (*node.path, "on", event),
                    f"this step does not wait for `{event}`",
                    (suggestion(event, seen, kind="it waits for")),
                    key=True,
                )
            elif event in self._goal_events():
                self.warn(
                    (*node.path, "on", event),
                    f"`{event}` is a goal (exit_on): the run ends before this path runs",
                    f"remove `{event}` from exit_on, or this `on:` path",
                    key=True,
                )

    def _goal_events(self) -> set[str]:
        return {r.event for r in _event_refs(self.spec.exit_on, ())} if self.spec.exit_on else set()

    def _check_branch(self, node: _Node, spec: s.BranchStep) -> None:
        last = len(spec.branch) - 1
        for index, case in enumerate(spec.branch):
            case_path = (*node.path, "branch", index)
            match case:
                case s.IfCase():
                    if index:
                        self.error(
                            (*case_path, "if"),
                            "only the first case is `if`",
                            "use `elif` here",
                            key=True,
                        )
                    self._check_condition((*case_path, "if"), case.if_, self.events_at(node))
                case s.ElifCase():
                    if not index:
                        self.error(
                            (*case_path, "elif"),
                            "a branch starts with `if`",
                            "write `if` for the first case",
                            key=True,
                        )
                    self._check_condition((*case_path, "elif"), case.elif_, self.events_at(node))
                case s.ElseCase():
                    if index != last or not index:
                        self.error(
                            (*case_path, "else"),
                            "`else` must be the last case, after `if`",
                            "move it to the end",
                            key=True,
                        )
                case _:
                    assert_never(case)

    def _check_split(self, node: _Node, spec: s.SplitStep) -> None:
        names: set[str] = set()
        for index, variant in enumerate(spec.split.variants):
            if variant.name in names:
                path = (*node.path, "split", "variants", index, "name")
                self.error(
                    path, f"variant `{variant.name}` is listed twice", "name each variant once"
                )
            names.add(variant.name)

    def _check_goto(self, node: _Node, spec: s.GotoStep) -> None:
        ids = [n.id for n in self.nodes]
        if spec.goto not in ids:
            hint = suggestion(spec.goto, ids, kind="step ids")
            self.error((*node.path, "goto"), f"no step with id `{spec.goto}`", hint)

    # Set and action ------------------------------------------------------------------------

    def _check_set(self, node: _Node, spec: s.SetStep) -> None:
        change = spec.set
        base = (*node.path, "set")
        if change.stage is None and not change.attributes and not change.increment:
            self.error(base, "`set` changes nothing", "add `stage:`, `attributes:` or `increment:`")
        for name, value in change.attributes.items():
            path = (*base, "attributes", name)
            attr = self._settable(path, name)
            if attr is None:
                continue
            if isinstance(value, str) and "{{" in value:
                self._check_text(path, value, node)
            elif value is not None and (problem := type_problem(attr.type, value)):
                declared = f"customer.yaml declares `{name}` as {attr.type.value}"
                self.error(path, f"`{name}` {problem}", declared)
        for name in change.increment:
            path = (*base, "increment", name)
            attr = self._settable(path, name)
            if attr is not None and attr.type not in _NUMERIC:
                self.error(
                    path,
                    f"`{name}` is a {attr.type.value}, not a number",
                    "increment only number or integer attributes",
                    key=True,
                )

    def _settable(self, path: YamlPath, name: str) -> Attribute | None:
        if self.catalogue is None:
            return None
        if name in BUILTIN_PROFILE:
            hint = "use `stage:` beside `attributes:`" if name == "stage" else "it is built in"
            self.error(path, f"`{name}` cannot be set here", hint, key=True)
            return None
        attr = self.catalogue.profile.get(name)
        if attr is None:
            hint = suggestion(name, self.catalogue.profile, kind="profile attributes")
            if not hint.startswith("did you mean"):
                hint = f"declare it under `profile:` in journeys/customer.yaml; {hint}"
            self.error(path, f"unknown profile attribute `{name}`", hint, key=True)
        return attr

    def _check_action(self, node: _Node, spec: s.ActionStep) -> None:
        if spec.save_as in JOURNEY_NAMES:
            self.error(
                (*node.path, "save_as"),
                f"`journey.{spec.save_as}` is built in",
                "choose another name, such as coupon",
            )
        if isinstance(spec.action, s.WebhookSpec):
            self._check_webhook(node, spec.action)
            if spec.with_:
                self.error(
                    (*node.path, "with"),
                    "a webhook takes no `with:`",
                    "put what it should send under `body:`",
                    key=True,
                )
            return
        action = ACTIONS.get(spec.action)
        if action is None:
            hint = suggestion(spec.action, ACTIONS, kind="registered actions")
            self.error((*node.path, "action"), f"unknown action `{spec.action}`", hint)
            return
        for name, value in spec.with_.items():
            path = (*node.path, "with", name)
            arg = action.args.get(name)
            if arg is None:
                hint = suggestion(name, action.args, kind=f"{action.name} takes")
                self.error(path, f"`{action.name}` has no argument `{name}`", hint, key=True)
            elif isinstance(value, str) and "{{" in value:
                self._check_text(path, value, node)
            elif problem := type_problem(arg.type, value):
                self.error(path, f"`{name}` {problem}")

    def _check_webhook(self, node: _Node, hook: s.WebhookSpec) -> None:
        path = (*node.path, "action", "webhook")
        url = urlparse(hook.webhook)
        if url.scheme not in ("http", "https") or not url.netloc:
            self.error(
                path,
                f"`{hook.webhook}` is not an http(s) URL",
                "write the full address, such as https://hooks.example.com/kairos",
            )
        elif "{{" in hook.webhook:
            self._check_text(path, hook.webhook, node)
        for name, value in hook.headers.items():
            if "{{" in value:
                self._check_text((*node.path, "action", "headers", name), value, node)
        for sub_path, text in _strings(hook.body, (*node.path, "action", "body")):
            if "{{" in text:
                self._check_text(sub_path, text, node)


def _strings(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    """Every text value inside a JSON-like structure, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))
