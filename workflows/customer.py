"""The customer entity: one long-lived workflow per customer, ``customer:<id>``.

It is where product code sends events (signal-with-start), where a customer's profile, stage,
consent and message ledger live, and where every send is decided (``reserve_send``) so that
consent, frequency caps and quiet hours are applied atomically across all of a customer's
journeys. Routing an event to journeys is done by a local activity, because only the worker
knows the compiled journeys.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from kairos import policy
    from kairos.messages import PolicyDecision, Verdict
    from kairos.runtime import (
        CUSTOMER_WORKFLOW,
        QUERY_STATE,
        SA_CUSTOMER,
        SA_STAGE,
        SIGNAL_CONSENT,
        SIGNAL_EVENT,
        SIGNAL_FORGET,
        SIGNAL_IDENTIFY,
        SIGNAL_PROFILE,
        SIGNAL_RECORD,
        UPDATE_RESERVE,
        ConsentChange,
        CustomerInput,
        CustomerState,
        CustomerView,
        Event,
        LedgerEntry,
        MessageRecord,
        ProfileChange,
        ReserveResult,
        RouteRequest,
        RouteResult,
        SendRequest,
    )

ROUTE_ACTIVITY = "route_event"
FORGET_ACTIVITY = "forget_customer"
# Enough to recognise a redelivered event; older duplicates are vanishingly rare.
SEEN_EVENT_IDS = 1000
# The ledger keeps what frequency caps and support need: recent entries only.
LEDGER_ENTRIES = 200
IDENTIFY_EVENT = "$identify"


@workflow.defn(name=CUSTOMER_WORKFLOW)
class CustomerWorkflow:
    """Profile, consent, stage and message ledger of one customer; routes their events."""

    @workflow.init
    def __init__(self, input: CustomerInput) -> None:
        self.customer_id = input.customer_id
        self.state = input.state or CustomerState()
        self.forgotten = False
        self.identifies = 0
        self.max_history = input.max_history

    @workflow.run
    async def run(self, input: CustomerInput) -> CustomerView:
        self._ensure_search_attributes()
        while True:
            await workflow.wait_condition(
                lambda: bool(self.state.pending) or self.forgotten or self._history_full()
            )
            if self.forgotten:
                return await self._forget()
            while self.state.pending and not self.forgotten:
                await self._route(self.state.pending.pop(0))
            if self._history_full() and not self.forgotten:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    CustomerInput(
                        customer_id=self.customer_id,
                        state=self.state,
                        max_history=self.max_history,
                    )
                )

    # --- messages from product code and journeys -------------------------------------------

    @workflow.signal(name=SIGNAL_EVENT)
    def event(self, event: Event) -> None:
        """Queue an event for routing, once per event id."""
        if event.id in self.state.seen_event_ids:
            return
        self.state.seen_event_ids.append(event.id)
        del self.state.seen_event_ids[:-SEEN_EVENT_IDS]
        self.state.pending.append(event)

    @workflow.signal(name=SIGNAL_IDENTIFY)
    def identify(self, attributes: dict[str, Any]) -> None:
        """Merge profile attributes; routed like an event so date triggers can fire."""
        self.identifies += 1
        self.state.pending.append(
            Event(
                id=f"{IDENTIFY_EVENT}:{workflow.info().run_id}:{self.identifies}",
                name=IDENTIFY_EVENT,
                properties=attributes,
                timestamp=workflow.now(),
            )
        )

    @workflow.signal(name=SIGNAL_CONSENT)
    def consent(self, change: ConsentChange) -> None:
        topics = ("email", "sms", "marketing") if change.topic == "all" else (change.topic,)
        for topic in topics:
            if topic in type(self.state.consent).model_fields:
                setattr(self.state.consent, topic, change.granted)

    @workflow.signal(name=SIGNAL_PROFILE)
    def update_profile(self, change: ProfileChange) -> None:
        profile = self.state.profile
        profile.update(change.attributes)
        for name, amount in change.increment.items():
            current = profile.get(name)
            base = current if isinstance(current, int | float) else 0
            profile[name] = base + amount
        if change.stage and change.stage != self.state.stage:
            self.state.stage = change.stage
            workflow.upsert_search_attributes([SA_STAGE.value_set(change.stage)])

    @workflow.signal(name=SIGNAL_RECORD)
    def record_message(self, record: MessageRecord) -> None:
        for entry in reversed(self.state.ledger):
            if entry.key == record.key:
                entry.status = record.status
                entry.reason = record.reason
                return

    @workflow.signal(name=SIGNAL_FORGET)
    def forget(self) -> None:
        self.forgotten = True

    @workflow.update(name=UPDATE_RESERVE)
    def reserve_send(self, request: SendRequest) -> ReserveResult:
        """Decide one message atomically: consent, caps, quiet hours. Idempotent per key."""
        profile = self.view_profile()
        for entry in reversed(self.state.ledger):
            if entry.key == request.key and entry.status in policy.COUNTED:
                decision = PolicyDecision(verdict=Verdict.send, reason="already allowed")
                return ReserveResult(
                    decision=decision.model_copy(update={"profile": profile}),
                    channel=entry.channel,
                )
        if self.forgotten:
            blocked = PolicyDecision(verdict=Verdict.blocked, reason="customer forgotten")
            return ReserveResult(decision=blocked)
        now = workflow.now()
        decision, channel = policy.decide(
            request, profile, self.state.consent, self.state.ledger, now
        )
        self.state.ledger = [e for e in self.state.ledger if e.key != request.key]
        self.state.ledger.append(
            LedgerEntry(
                key=request.key,
                journey=request.journey,
                step=request.step,
                channel=channel or request.channels[0],
                category=request.category,
                status="sent" if decision.verdict is Verdict.send else decision.verdict.value,
                reason=decision.reason,
                at=now,
            )
        )
        del self.state.ledger[:-LEDGER_ENTRIES]
        return ReserveResult(
            decision=decision.model_copy(update={"profile": profile}), channel=channel
        )

    @workflow.query(name=QUERY_STATE)
    def view(self) -> CustomerView:
        return CustomerView(
            customer_id=self.customer_id,
            profile=self.view_profile(),
            stage=self.state.stage,
            consent=self.state.consent,
            ledger=self.state.ledger,
            entered=self.state.entered,
            forgotten=self.forgotten,
        )

    # --- internals ---------------------------------------------------------------------------

    def view_profile(self) -> dict[str, Any]:
        """The profile as templates and conditions see it, with the built-in attributes."""
        return {
            **self.state.profile,
            "id": self.customer_id,
            "stage": self.state.stage,
            "consent": self.state.consent.model_dump(),
        }

    def _history_full(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > self.max_history
        )

    def _ensure_search_attributes(self) -> None:
        if workflow.info().typed_search_attributes.get(SA_CUSTOMER) is None:
            workflow.upsert_search_attributes([SA_CUSTOMER.value_set(self.customer_id)])

    async def _route(self, event: Event) -> None:
        result: RouteResult = await workflow.execute_local_activity(
            ROUTE_ACTIVITY,
            RouteRequest(
                customer_id=self.customer_id,
                event=event,
                profile=self.state.profile,
                stage=self.state.stage,
                consent=self.state.consent,
                entered=self.state.entered,
            ),
            result_type=RouteResult,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            summary=f"route {event.name}",
        )
        self.state.profile.update(result.profile_updates)
        now = workflow.now()
        for journey in result.started:
            self.state.entered[journey] = now

    async def _forget(self) -> CustomerView:
        await workflow.execute_activity(
            FORGET_ACTIVITY,
            self.customer_id,
            start_to_close_timeout=timedelta(minutes=2),
            summary="end every running journey of this customer",
        )
        self.state = CustomerState()
        return self.view()
