"""One journey compiled into its :class:`~kairos.language.plan.JourneyPlan`: its steps collected and
named (derived ids such as ``send_email_cart_1``), nested steps flattened into the plan graph,
every step checked (the layers below) and the graph checked for steps that never run and gotos
that loop without waiting.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, assert_never
from urllib.parse import urlparse

from kairos.language import schema as s
from kairos.language.compiler_state import _event_refs, _Node
from kairos.language.compiler_steps import StepChecks
from kairos.language.durations import parse_duration
from kairos.language.plan import (
    ActionStep,
    BranchCase,
    BranchStep,
    ExitStep,
    GotoStep,
    JourneyPlan,
    PlanStep,
    QuietHours,
    SendStep,
    SetStep,
    SplitStep,
    SplitVariant,
    Stage,
    WaitForOutcome,
    WaitForStep,
    WaitStep,
    Webhook,
)
from kairos.language.reachability import busy_loop, reachable_from
from kairos.language.yaml_source import YamlPath


class JourneyCompiler(StepChecks):
    """Compiles one journey; the checks it runs are its bases'."""

    # The whole journey ---------------------------------------------------------------------

    def compile(self) -> JourneyPlan:
        self._check_name()
        self._collect(self.spec.steps, ("steps",), None, None)
        self._assign_ids()
        self._collect_saved()
        start = self._flatten(self.spec.steps, ("steps",), None)
        trigger = self._trigger()
        exit_on = self._exit_on()
        for node in self.nodes:
            self._check_step(node)
        self._check_graph(start)
        # Document order reads best in the plan (and in `kairos graph`); the version ignores it.
        self.steps = {node.id: self.steps[node.id] for node in self.nodes if node.id in self.steps}
        return JourneyPlan(
            name=self.spec.journey,
            description=self.spec.description,
            stage=Stage(self.spec.stage) if self.spec.stage else None,
            category=self.spec.category,
            priority=self.spec.priority,
            quiet_hours=self._quiet_hours(),
            ignore_quiet_hours=self.spec.quiet_hours in ("off", False),
            default_locale=self.default_locale,
            locales=tuple(self.locales),
            trigger=trigger,
            entry=self.spec.entry,
            exit_on=exit_on,
            start=start,
            steps=self.steps,
            source=self.doc.file,
            named_steps=frozenset(n.id for n in self.nodes if n.spec.id is not None),
            goal_window=self._conversion_window(),
            step_lines={n.id: self.doc.positions.value(n.path).line for n in self.nodes},
        )

    def _conversion_window(self) -> int | None:
        window = self.spec.conversion_window
        if window is None:
            return None
        if not self.spec.exit_on:
            self.error(
                ("conversion_window",),
                "conversion_window without a goal: nothing can convert",
                "name the goal events in exit_on, or remove conversion_window",
            )
        return parse_duration(window)

    def _check_name(self) -> None:
        name = self.spec.journey
        if name != self.stem:
            self.error(
                ("journey",),
                f"journey `{name}` is in {self.stem}.yaml",
                f"the name must equal the file name: write `journey: {self.stem}`, or rename the "
                f"file to {name}.yaml",
            )

    def _quiet_hours(self) -> QuietHours | None:
        window = self.spec.quiet_hours
        if not isinstance(window, s.QuietHoursSpec):
            return None
        return QuietHours(start=_hhmm(window.start), end=_hhmm(window.end))

    # Collecting and naming steps -----------------------------------------------------------

    def _collect(
        self,
        steps: Sequence[s.StepSpec],
        path: YamlPath,
        on_event: str | None,
        parent: YamlPath | None,
    ) -> None:
        previous: YamlPath | None = None
        for index, spec in enumerate(steps):
            node = _Node(spec, (*path, index), on_event, parent, previous)
            self.nodes.append(node)
            self.by_path[node.path] = node
            for child_steps, child_path, child_event in _children(spec, node.path, on_event):
                self._collect(child_steps, child_path, child_event, node.path)
            previous = node.path

    def _assign_ids(self) -> None:
        explicit: dict[str, YamlPath] = {}
        for node in self.nodes:
            if node.spec.id is None:
                continue
            if node.spec.id in explicit:
                first = self.doc.positions.value((*explicit[node.spec.id], "id")).line
                self.error(
                    (*node.path, "id"),
                    f"duplicate step id `{node.spec.id}`",
                    f"already used on line {first}; ids must be unique in a journey",
                )
            else:
                explicit[node.spec.id] = node.path
            node.id = node.spec.id
        counters: dict[str, int] = {}
        for node in self.nodes:
            if node.spec.id is None:
                node.id = _next_free(_base_id(node.spec), counters, explicit)

    def _collect_saved(self) -> None:
        for node in self.nodes:
            if isinstance(node.spec, s.ActionStep) and node.spec.save_as:
                action = node.spec.action if isinstance(node.spec.action, str) else None
                self.saved[node.spec.save_as] = action
                self.saved_args[node.spec.save_as] = dict(node.spec.with_)

    # Flattening ----------------------------------------------------------------------------

    def _flatten(
        self, steps: Sequence[s.StepSpec], path: YamlPath, after: str | None
    ) -> str | None:
        """Add ``steps`` to the plan, the last continuing at ``after``; return the first id."""
        ids = [self.by_path[(*path, i)].id for i in range(len(steps))]
        for index, spec in enumerate(steps):
            following = ids[index + 1] if index + 1 < len(ids) else after
            node_path = (*path, index)
            self.steps[ids[index]] = self._plan_step(spec, ids[index], node_path, following)
        return ids[0] if ids else after

    def _plan_step(
        self, spec: s.StepSpec, step_id: str, path: YamlPath, nxt: str | None
    ) -> PlanStep:
        match spec:
            case s.SendStep():
                give_up_after = spec.give_up_after or self.spec.give_up_after
                return SendStep(
                    id=step_id,
                    channel=spec.send,
                    template=spec.template,
                    fallback=spec.fallback,
                    give_up_after_seconds=parse_duration(give_up_after) if give_up_after else None,
                    next=nxt,
                )
            case s.WaitStep():
                return _wait_step(spec, step_id, nxt)
            case s.WaitForStep():
                return self._wait_for_step(spec, step_id, path, nxt)
            case s.BranchStep():
                return self._branch_step(spec, step_id, path, nxt)
            case s.SplitStep():
                return self._split_step(spec, step_id, path, nxt)
            case s.SetStep():
                return SetStep(
                    id=step_id,
                    attributes=dict(spec.set.attributes),
                    increment=dict(spec.set.increment),
                    stage=spec.set.stage,
                    next=nxt,
                )
            case s.ActionStep():
                return _action_step(spec, step_id, nxt)
            case s.GotoStep():
                return GotoStep(id=step_id, target=spec.goto)
            case s.ExitStep():
                return ExitStep(id=step_id, outcome=spec.exit)
            case _:
                assert_never(spec)

    def _wait_for_step(
        self, spec: s.WaitForStep, step_id: str, path: YamlPath, nxt: str | None
    ) -> WaitForStep:
        paths = spec.on or {}
        outcomes = []
        for ref in _event_refs(spec.wait_for, (*path, "wait_for")):
            steps = paths.get(ref.event)
            head = self._flatten(steps, (*path, "on", ref.event), nxt) if steps else nxt
            outcomes.append(WaitForOutcome(event=ref.event, when=ref.when, next=head))
        timeout_head = nxt
        if spec.on_timeout:
            timeout_head = self._flatten(spec.on_timeout, (*path, "on_timeout"), nxt)
        for event, steps in paths.items():
            if event not in {o.event for o in outcomes}:
                self._flatten(steps, (*path, "on", event), nxt)  # reported in the checks
        return WaitForStep(
            id=step_id,
            events=tuple(outcomes),
            timeout_seconds=parse_duration(spec.timeout),
            on_timeout=timeout_head,
        )

    def _branch_step(
        self, spec: s.BranchStep, step_id: str, path: YamlPath, nxt: str | None
    ) -> BranchStep:
        cases: list[BranchCase] = []
        otherwise = nxt
        for index, case in enumerate(spec.branch):
            case_path = (*path, "branch", index)
            match case:
                case s.IfCase() | s.ElifCase():
                    when = case.if_ if isinstance(case, s.IfCase) else case.elif_
                    head = self._flatten(case.steps, (*case_path, "steps"), nxt)
                    cases.append(BranchCase(when=when, next=head))
                case s.ElseCase():
                    otherwise = self._flatten(case.else_, (*case_path, "else"), nxt)
                case _:
                    assert_never(case)
        return BranchStep(id=step_id, cases=tuple(cases), otherwise=otherwise)

    def _split_step(
        self, spec: s.SplitStep, step_id: str, path: YamlPath, nxt: str | None
    ) -> SplitStep:
        variants = []
        for index, variant in enumerate(spec.split.variants):
            steps_path = (*path, "split", "variants", index, "steps")
            head = self._flatten(variant.steps, steps_path, nxt)
            variants.append(SplitVariant(name=variant.name, weight=variant.weight, next=head))
        return SplitStep(
            id=step_id,
            variants=tuple(variants),
            holdout_percent=spec.split.holdout,
            holdout_next=nxt,
        )

    # The graph -----------------------------------------------------------------------------

    def _check_graph(self, start: str | None) -> None:
        if any(p.severity == "error" and p.file == self.doc.file for p in self.report.problems):
            return  # a dangling goto or a duplicate id would make the graph misleading
        reachable = reachable_from(self.steps, start)
        for node in self.nodes:
            if node.id in reachable or not self._first_unreachable(node, reachable):
                continue
            self.warn(
                node.path,
                f"step `{node.id}` can never run",
                "nothing leads here: it follows a goto or an exit; move it or remove it",
            )
        for node in self.nodes:
            spec = node.spec
            if (
                isinstance(spec, s.GotoStep)
                and node.id in reachable
                and busy_loop(self.steps, node.id)
            ):
                self.warn(
                    (*node.path, "goto"),
                    f"`goto: {spec.goto}` loops without waiting",
                    "put a wait or wait_for inside the loop, or it repeats at once",
                )

    def _first_unreachable(self, node: _Node, reachable: set[str]) -> bool:
        """Report only where unreachable code begins, not every step after it."""
        for other in (node.previous, node.parent):
            if other is not None and self.by_path[other].id not in reachable:
                return False
        return True


def _children(
    spec: s.StepSpec, path: YamlPath, on_event: str | None
) -> Iterator[tuple[Sequence[s.StepSpec], YamlPath, str | None]]:
    """Nested step lists of a step, with their paths and the event current in them."""
    match spec:
        case s.WaitForStep():
            for event, steps in (spec.on or {}).items():
                yield steps, (*path, "on", event), event
            if spec.on_timeout:
                yield spec.on_timeout, (*path, "on_timeout"), on_event
        case s.BranchStep():
            for index, case in enumerate(spec.branch):
                if isinstance(case, s.ElseCase):
                    yield case.else_, (*path, "branch", index, "else"), on_event
                else:
                    yield case.steps, (*path, "branch", index, "steps"), on_event
        case s.SplitStep():
            for index, variant in enumerate(spec.split.variants):
                yield variant.steps, (*path, "split", "variants", index, "steps"), on_event
        case _:
            return


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:48].rstrip("_")


def _base_id(spec: s.StepSpec) -> str:
    """The derived id of a step without ``id:``: its kind and what it does."""
    match spec:
        case s.SendStep():
            return _slug(f"send_{spec.send.value}_{spec.template}")
        case s.WaitStep():
            wait = spec.wait
            if isinstance(wait, s.WaitUntil):
                until = wait.until.removeprefix("customer.").replace(":", "")
                return _slug(f"wait_until_{until}")
            return _slug("wait_" + _short_duration(wait))
        case s.WaitForStep():
            events = [r.event for r in _event_refs(spec.wait_for, ())]
            return _slug("wait_for_" + "_or_".join(events))
        case s.BranchStep():
            return "branch"
        case s.SplitStep():
            return _slug("split_" + "_".join(v.name for v in spec.split.variants))
        case s.SetStep():
            return _slug("set_" + "_".join(_set_words(spec.set)))
        case s.ActionStep():
            if isinstance(spec.action, s.WebhookSpec):
                return _slug("webhook_" + (urlparse(spec.action.webhook).hostname or ""))
            return _slug(f"action_{spec.action}")
        case s.GotoStep():
            return _slug(f"goto_{spec.goto}")
        case s.ExitStep():
            return _slug(f"exit_{spec.exit}")
        case _:
            assert_never(spec)


def _short_duration(text: str) -> str:
    """``14d`` stays ``14d``; ``1 hour 30 minutes`` becomes ``1h30m`` (units by first letter)."""
    parts = re.findall(r"(-?\d+)\s*([A-Za-z]+)", text)
    return "".join(f"{amount}{unit[0].lower()}" for amount, unit in parts)


def _set_words(change: s.SetSpec) -> list[str]:
    words = [f"stage_{change.stage.value}"] if change.stage else []
    return words + list(change.attributes) + list(change.increment)


def _next_free(base: str, counters: dict[str, int], taken: Mapping[str, Any]) -> str:
    """``base``, then ``base_2``, ``base_3``...; branches are always numbered (branch_1).

    Numbering goes by order of appearance among steps with the same base, so adding a step of
    another kind never renames this one. Ids taken explicitly are skipped.
    """
    while True:
        counters[base] = counters.get(base, 0) + 1
        count = counters[base]
        candidate = f"{base}_{count}" if (count > 1 or base == "branch") else base
        if candidate not in taken:
            return candidate


def _wait_step(spec: s.WaitStep, step_id: str, nxt: str | None) -> WaitStep:
    wait = spec.wait
    if not isinstance(wait, s.WaitUntil):
        return WaitStep(id=step_id, duration_seconds=parse_duration(wait), next=nxt)
    offset = parse_duration(wait.offset) if wait.offset else 0
    if wait.until.startswith("customer."):
        attribute = wait.until.removeprefix("customer.")
        return WaitStep(id=step_id, until_attribute=attribute, offset_seconds=offset, next=nxt)
    return WaitStep(id=step_id, time_of_day=_hhmm(wait.until), next=nxt)


def _action_step(spec: s.ActionStep, step_id: str, nxt: str | None) -> ActionStep:
    if isinstance(spec.action, s.WebhookSpec):
        hook = spec.action
        webhook = Webhook(
            url=hook.webhook, method=hook.method, headers=dict(hook.headers), body=hook.body
        )
        return ActionStep(id=step_id, webhook=webhook, save_as=spec.save_as, next=nxt)
    return ActionStep(
        id=step_id, action=spec.action, args=dict(spec.with_), save_as=spec.save_as, next=nxt
    )


def _hhmm(text: str) -> str:
    hours, minutes = text.split(":")
    return f"{int(hours):02d}:{minutes}"
