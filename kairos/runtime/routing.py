"""Routing rules: which journeys an event starts, and what a running journey hears of it.

Pure functions over compiled plans; the customer store applies them inside each customer's
transaction (:mod:`kairos.store.ingest`). What a run hears is decided by its *pinned* plan: the
events it ``listens`` to (its goals and the events its ``wait_for`` steps await) and the profile
attributes it ``reads`` (in conditions, waits, and the values its ``set`` and ``action`` steps
render). Both are stored with the plan when a run starts, so editing or deleting the YAML never
deafens a run in flight.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kairos.language import expressions
from kairos.language.plan import (
    ActionStep,
    ApiTrigger,
    BranchStep,
    DateTrigger,
    EventTrigger,
    JourneyPlan,
    SegmentTrigger,
    SetStep,
    WaitForStep,
    WaitStep,
)
from kairos.runtime.contract import Event

# Internal events: recorded like product events (deduplicated by id, routed the same way), but
# never declared in the catalogue and never a journey's trigger.
IDENTIFY_EVENT = "$identify"
SET_EVENT = "$set"
CONSENT_EVENT = "$consent"
START_EVENT = "$start"
INTERNAL_EVENTS = frozenset({IDENTIFY_EVENT, SET_EVENT, CONSENT_EVENT, START_EVENT})


def listens(plan: JourneyPlan) -> frozenset[str]:
    """The events a run of ``plan`` reacts to while running (goals and wait_for events)."""
    return frozenset(plan.events_of_interest())


def reads(plan: JourneyPlan, timezone_attribute: str | None) -> frozenset[str]:
    """The profile attributes a run of ``plan`` needs to see, at their current values.

    ``consent`` and ``stage`` are included when a condition reads them. The customer's timezone
    is included when the plan waits for a time of day.
    """
    conditions: list[str] = [m.when for m in plan.exit_on if m.when]
    rendered: list[Any] = []
    names: set[str] = set()
    if isinstance(plan.trigger, DateTrigger):
        names.add(plan.trigger.attribute)
    for step in plan.steps.values():
        match step:
            case BranchStep():
                conditions += [case.when for case in step.cases]
            case WaitForStep():
                conditions += [outcome.when for outcome in step.events if outcome.when]
            case WaitStep():
                if step.until_attribute:
                    names.add(step.until_attribute)
                if step.time_of_day and timezone_attribute:
                    names.add(timezone_attribute)
            case SetStep():
                rendered.append(step.attributes)
            case ActionStep():
                rendered.append(step.args)
                if step.webhook is not None:
                    rendered += [step.webhook.body, step.webhook.headers]
            case _:
                pass
    paths = [p for c in conditions for p in expressions.referenced_paths(c)]
    paths += [
        p for t in _templates(rendered) for p in expressions.referenced_paths(t, template=True)
    ]
    names.update(path[1] for path in paths if path[0] == "customer" and len(path) > 1)
    names.discard("id")
    return frozenset(names)


def _templates(values: Iterable[Any]) -> Iterable[str]:
    for value in values:
        if isinstance(value, str) and "{{" in value:
            yield value
        elif isinstance(value, dict):
            yield from _templates(value.values())
        elif isinstance(value, list):
            yield from _templates(value)


def event_view(event: Event) -> dict[str, Any]:
    """``event`` as conditions see it: its properties plus name, id and timestamp."""
    return {
        **event.properties,
        "name": event.name,
        "id": event.id,
        "timestamp": event.timestamp.isoformat() if event.timestamp else None,
    }


def triggers(
    plan: JourneyPlan,
    event: Event,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
) -> bool:
    """Whether ``event`` triggers ``plan`` for a customer whose profile went from ``before``
    to ``after`` with it (profiles as conditions see them, with ``consent`` and ``stage``).

    Event triggers fire on their event when ``when`` holds. Date triggers fire when the dated
    attribute changes to a value. API-triggered journeys are started only by name, segment
    triggers by the store when the customer enters the segment (kairos.store.segment_entry).
    """
    context = {"customer": dict(after), "event": event_view(event), "journey": {"name": plan.name}}
    trigger = plan.trigger
    match trigger:
        case EventTrigger():
            return trigger.event == event.name and expressions.holds(trigger.when, context)
        case DateTrigger():
            value = after.get(trigger.attribute)
            changed = value is not None and value != before.get(trigger.attribute)
            return changed and expressions.holds(trigger.when, context)
        case ApiTrigger() | SegmentTrigger():
            return False
