"""A compiled journey as a Mermaid flowchart (``kairos graph <journey>``).

Paste the output into any Mermaid viewer (GitHub and most wikis render ```` ```mermaid ````
blocks). Each step is a node whose shape says its kind; edges out of branches, splits and
wait_for steps are labelled with their condition, weight, event or timeout; the goal events
(``exit_on``) and the trigger are shown as their own nodes.
"""

from __future__ import annotations

from typing import assert_never

from kairos.language.durations import format_duration
from kairos.language.plan import (
    ActionStep,
    ApiTrigger,
    BranchStep,
    DateTrigger,
    EventTrigger,
    ExitStep,
    GotoStep,
    JourneyPlan,
    PlanStep,
    SegmentTrigger,
    SendStep,
    SetStep,
    SplitStep,
    WaitForStep,
    WaitStep,
)

# Words Mermaid reads as syntax when used as a node id.
_RESERVED = frozenset({"end", "graph", "subgraph", "flowchart", "style", "class", "click",
                       "default", "linkStyle", "classDef", "direction"})  # fmt: skip
_TRIGGER = "trigger"
_DONE = "completed"
_GOAL = "goal"


def to_mermaid(plan: JourneyPlan) -> str:
    """The plan as a ``flowchart TD``: nodes in plan order, then the edges between them."""
    lines = ["flowchart TD", f"    {_TRIGGER}[/{_label(_trigger_text(plan))}\\]"]
    for step in plan.steps.values():
        lines.append(f"    {_node(step)}")
    edges = [f"    {_TRIGGER} --> {_ref(plan.start)}"]
    for step in plan.steps.values():
        edges.extend(f"    {edge}" for edge in _edges(step))
    if any(_DONE in edge for edge in edges):
        lines.append(f"    {_DONE}(({_label('completed')}))")
    if plan.exit_on:
        goals = ", ".join(_match_text(m.event, m.when) for m in plan.exit_on)
        # The goal applies at every step, so it stands apart rather than hanging off one.
        lines.append(f"    {_GOAL}>{_label(f'goal (exit_on): {goals} → converted')}]")
    return "\n".join(lines + edges) + "\n"


def _ref(step_id: str | None) -> str:
    """A step id as a Mermaid node id; None is the journey's end (outcome completed)."""
    if step_id is None:
        return _DONE
    return (
        f"step_{step_id}"
        if step_id in _RESERVED or step_id in (_TRIGGER, _DONE, _GOAL)
        else (step_id)
    )


def _label(text: str) -> str:
    """Text in a quoted Mermaid label; quotes and angle brackets as entities."""
    escaped = text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    return f'"{escaped}"'


def _trigger_text(plan: JourneyPlan) -> str:
    trigger = plan.trigger
    match trigger:
        case EventTrigger():
            return "on " + _match_text(trigger.event, trigger.when)
        case ApiTrigger():
            return "started by api"
        case DateTrigger():
            offset = f" + {_span(trigger.offset_seconds)}" if trigger.offset_seconds else ""
            when = f" if {trigger.when}" if trigger.when else ""
            return f"customer.{trigger.attribute}{offset}{when}"
        case SegmentTrigger():
            return f"on entering segment {trigger.segment}"
        case _:
            assert_never(trigger)


def _span(seconds: int) -> str:
    """Whole days as days (60d, not 8w 4d), as marketers write them; otherwise 1h 30m."""
    if seconds and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    return format_duration(seconds)


def _match_text(event: str, when: str | None) -> str:
    return f"{event} if {when}" if when else event


def _node(step: PlanStep) -> str:
    """The node declaration: ``id<open>"label"<close>`` with a shape per kind."""
    ref = _ref(step.id)
    match step:
        case SendStep():
            fallback = f" (else {step.fallback.value})" if step.fallback else ""
            text = f"{step.id}: send {step.channel.value}{fallback} {step.template}"
            return f"{ref}[{_label(text)}]"
        case WaitStep():
            return f"{ref}[/{_label(f'{step.id}: {_wait_text(step)}')}/]"
        case WaitForStep():
            events = " or ".join(o.event for o in step.events)
            return f"{ref}{{{{{_label(f'{step.id}: wait for {events}')}}}}}"
        case BranchStep():
            return f"{ref}{{{_label(f'{step.id}: branch')}}}"
        case SplitStep():
            return f"{ref}{{{_label(f'{step.id}: split')}}}"
        case SetStep():
            return f"{ref}[({_label(f'{step.id}: {_set_text(step)}')})]"
        case ActionStep():
            what = step.action or (f"webhook {step.webhook.url}" if step.webhook else "?")
            saved = f" → journey.{step.save_as}" if step.save_as else ""
            return f"{ref}[[{_label(f'{step.id}: {what}{saved}')}]]"
        case GotoStep():
            return f"{ref}([{_label(f'{step.id}: goto {step.target}')}])"
        case ExitStep():
            return f"{ref}((({_label(f'exit: {step.outcome}')})))"
        case _:
            assert_never(step)


def _wait_text(step: WaitStep) -> str:
    if step.duration_seconds is not None:
        return f"wait {_span(step.duration_seconds)}"
    if step.time_of_day is not None:
        return f"wait until {step.time_of_day} local"
    offset = step.offset_seconds
    shift = f" {'+' if offset > 0 else '-'} {_span(abs(offset))}" if offset else ""
    return f"wait until customer.{step.until_attribute}{shift}"


def _set_text(step: SetStep) -> str:
    parts = [f"stage = {step.stage.value}"] if step.stage else []
    parts += [f"{name} = {value}" for name, value in step.attributes.items()]
    parts += [f"{name} {'+' if n >= 0 else '-'}= {abs(n):g}" for name, n in step.increment.items()]
    return "set " + ", ".join(parts)


def _edges(step: PlanStep) -> list[str]:
    """Edges out of ``step``, labelled where there is a choice."""
    ref = _ref(step.id)
    match step:
        case SendStep() | WaitStep() | SetStep() | ActionStep():
            return [f"{ref} --> {_ref(step.next)}"]
        case WaitForStep():
            edges = [
                f"{ref} -->|{_label(_match_text(o.event, o.when))}| {_ref(o.next)}"
                for o in step.events
            ]
            timeout = f"timeout {_span(step.timeout_seconds)}"
            return [*edges, f"{ref} -->|{_label(timeout)}| {_ref(step.on_timeout)}"]
        case BranchStep():
            edges = [f"{ref} -->|{_label(c.when)}| {_ref(c.next)}" for c in step.cases]
            return [*edges, f"{ref} -->|{_label('else')}| {_ref(step.otherwise)}"]
        case SplitStep():
            edges = [
                f"{ref} -->|{_label(f'{v.name}: weight {v.weight}')}| {_ref(v.next)}"
                for v in step.variants
            ]
            if step.holdout_percent:
                holdout = f"holdout {step.holdout_percent}%"
                edges.append(f"{ref} -.->|{_label(holdout)}| {_ref(step.holdout_next)}")
            return edges
        case GotoStep():
            return [f"{ref} -.-> {_ref(step.target)}"]
        case ExitStep():
            return []
        case _:
            assert_never(step)
