"""Routing: which journeys an event starts, restarts or wakes. Runs for the customer entity.

The entity cannot know the compiled journeys (workflows do no I/O), so it hands each event to
this local activity, which holds the worker's project: the catalogue and the plans.
"""

from __future__ import annotations

import logging
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from kairos import expressions, phone
from kairos.catalogue import AttrType
from kairos.compiler import Project
from kairos.plan import (
    ApiTrigger,
    BranchStep,
    DateTrigger,
    Entry,
    EventTrigger,
    JourneyPlan,
    WaitForStep,
    WaitStep,
)
from kairos.runtime import (
    JOURNEY_WORKFLOW,
    SA_CUSTOMER,
    SIGNAL_EVENT,
    SIGNAL_TRIGGER,
    Event,
    RoutedEvent,
    RouteRequest,
    RouteResult,
    journey_workflow_id,
)
from kairos.temporal import quote, start_journey
from kairos.web.phonebook import Phonebook

log = logging.getLogger(__name__)
IDENTIFY_EVENT = "$identify"


class Routing:
    """Activities of the customer entity that need the project or the Temporal client."""

    def __init__(self, client: Client, task_queue: str, project: Project, secret: str) -> None:
        self.client = client
        self.task_queue = task_queue
        self.project = project
        self.timezone_attribute = project.catalogue.attribute_of_type(AttrType.timezone)
        self.phone_attribute = project.catalogue.attribute_of_type(AttrType.phone)
        # Inbound SMS (STOP/START) names a number, not a customer: keep the number's link.
        self.phonebook = Phonebook(client, secret, task_queue)
        self.reads = {name: profile_reads(plan) for name, plan in project.plans.items()}

    @activity.defn(name="route_event")
    async def route_event(self, request: RouteRequest) -> RouteResult:
        """Validate the event, work out its profile updates, start and signal journeys."""
        event = request.event
        problems, updates = self._validate(event)
        if problems:
            # Product code that bypassed the client's validation: record, don't route.
            log.warning("rejected event %s (%s): %s", event.id, event.name, "; ".join(problems))
            return RouteResult(rejected="; ".join(problems))
        merged = {**request.profile, **updates}
        await self._relink_phone(request.customer_id, request.profile, merged)
        profile = {
            **merged,
            "id": request.customer_id,
            "stage": request.stage,
            "consent": request.consent.model_dump(),
        }
        result = RouteResult(profile_updates=updates)
        plans = sorted(self.project.plans.values(), key=lambda p: (-p.priority, p.name))
        for plan in plans:
            triggered = self._triggers(plan, event, request.profile, profile)
            if triggered and await self._enter(plan, request, event, profile):
                result.started.append(plan.name)
                continue
            # A running journey hears of the event when it waits for it or exits on it, and
            # when the event changes a profile attribute its conditions read (an emptied cart).
            interested = event.name in plan.events_of_interest() or bool(
                self.reads[plan.name] & updates.keys()
            )
            if interested and await self._signal(
                plan, request.customer_id, SIGNAL_EVENT, RoutedEvent(event=event, profile=profile)
            ):
                result.signalled.append(plan.name)
        return result

    @activity.defn(name="forget_customer")
    async def forget_customer(self, customer_id: str) -> int:
        """Cancel every running journey of a customer; returns how many were cancelled."""
        query = (
            f"{SA_CUSTOMER.name} = '{quote(customer_id)}' AND WorkflowType = '{JOURNEY_WORKFLOW}'"
            " AND ExecutionStatus = 'Running'"
        )
        cancelled = 0
        async for execution in self.client.list_workflows(query):
            await self.client.get_workflow_handle(execution.id).cancel()
            cancelled += 1
        return cancelled

    async def _relink_phone(
        self, customer_id: str, before: dict[str, Any], after: dict[str, Any]
    ) -> None:
        if self.phone_attribute is None:
            return
        old, new = (_e164(p.get(self.phone_attribute)) for p in (before, after))
        if old == new:
            return
        if old:
            await self.phonebook.unlink(old, customer_id)
        if new:
            await self.phonebook.link(new, customer_id)

    def _validate(self, event: Event) -> tuple[list[str], dict[str, Any]]:
        catalogue = self.project.catalogue
        if event.name == IDENTIFY_EVENT:
            return catalogue.validate_profile(event.properties), dict(event.properties)
        problems = catalogue.validate_event(event.name, event.properties)
        return problems, catalogue.profile_updates(event.name, event.properties)

    def _triggers(
        self,
        plan: JourneyPlan,
        event: Event,
        before: dict[str, Any],
        profile: dict[str, Any],
    ) -> bool:
        trigger = plan.trigger
        context = {"customer": profile, "event": _event_view(event), "journey": {"name": plan.name}}
        match trigger:
            case EventTrigger():
                return trigger.event == event.name and expressions.holds(trigger.when, context)
            case DateTrigger():
                changed = profile.get(trigger.attribute) != before.get(trigger.attribute)
                present = profile.get(trigger.attribute) is not None
                return changed and present and expressions.holds(trigger.when, context)
            case ApiTrigger():
                return False

    async def _enter(
        self, plan: JourneyPlan, request: RouteRequest, event: Event, profile: dict[str, Any]
    ) -> bool:
        """Start (or restart) the journey per its entry rule. True when a run was started."""
        if plan.entry is Entry.once and plan.name in request.entered:
            return False
        if plan.entry is Entry.restart:
            restarted = await self._signal(
                plan, request.customer_id, SIGNAL_TRIGGER, RoutedEvent(event=event, profile=profile)
            )
            if restarted:
                return False
        try:
            await start_journey(
                self.client,
                self.task_queue,
                plan,
                request.customer_id,
                profile=profile,
                trigger=event,
                timezone_attribute=self.timezone_attribute,
                conflict=WorkflowIDConflictPolicy.FAIL,
            )
        except WorkflowAlreadyStartedError:
            return False
        return True

    async def _signal(self, plan: JourneyPlan, customer_id: str, signal: str, arg: Any) -> bool:
        """Signal the customer's run of ``plan`` if one is running."""
        handle = self.client.get_workflow_handle(journey_workflow_id(plan.name, customer_id))
        try:
            await handle.signal(signal, arg)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True


def profile_reads(plan: JourneyPlan) -> frozenset[str]:
    """The profile attributes a journey's conditions read (``customer.X`` in when/if)."""
    conditions = [m.when for m in plan.exit_on]
    for step in plan.steps.values():
        match step:
            case BranchStep():
                conditions += [case.when for case in step.cases]
            case WaitForStep():
                conditions += [outcome.when for outcome in step.events]
            case WaitStep() if step.until_attribute:
                conditions.append(f"customer.{step.until_attribute}")
            case _:
                pass
    names: set[str] = set()
    for condition in filter(None, conditions):
        for path in expressions.referenced_paths(condition):
            if path[0] == "customer" and len(path) > 1:
                names.add(path[1])
    return frozenset(names)


def _e164(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return phone.normalise(value)
    except phone.PhoneError:
        return None


def _event_view(event: Event) -> dict[str, Any]:
    return {**event.properties, "name": event.name, "id": event.id}
