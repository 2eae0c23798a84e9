"""The journey interpreter: one workflow per customer per journey, ``journey:<name>:<id>``.

It walks the compiled plan it was started with (so a run is pinned to its definition), one small
handler per step kind. It does no I/O: sends, actions and routing are activities; conditions are
pure Jinja expressions. Exit events end the run from any step and count as converted.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any, NoReturn, assert_never

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from kairos import expressions, policy
    from kairos.durations import format_duration
    from kairos.messages import SendOutcome
    from kairos.plan import (
        ActionStep,
        BranchStep,
        DateTrigger,
        ExitStep,
        GotoStep,
        JourneyPlan,
        PlanStep,
        SendStep,
        SetStep,
        SplitStep,
        WaitForStep,
        WaitStep,
    )
    from kairos.runtime import (
        JOURNEY_WORKFLOW,
        QUERY_STATE,
        SA_OUTCOME,
        SA_STEP,
        SIGNAL_EVENT,
        SIGNAL_PROFILE,
        SIGNAL_RECORD,
        SIGNAL_TRIGGER,
        ActionRequest,
        DeliverRequest,
        Event,
        JourneyInput,
        JourneyResult,
        JourneyState,
        JourneyStatus,
        MessageRecord,
        ProfileChange,
        RoutedEvent,
        StepRecord,
        customer_workflow_id,
    )

DELIVER_ACTIVITY = "deliver"
ACTION_ACTIVITY = "run_action"
CONVERTED = "converted"
COMPLETED = "completed"
# A message deferred by quiet hours is retried at the end of the window; more deferrals than
# this means the window never opens (misconfiguration), so the send is recorded as blocked.
MAX_DEFERRALS = 3
# Interpreter changes that alter the commands a run issues, guarded for runs in flight.
SKIP_REPEATED_STEP_UPSERT = "skip-repeated-step-upsert"
PAUSE_SKIPS_PAST_DEADLINES = "pause-skips-past-deadlines"

SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=12,
)
ACTION_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=5), maximum_attempts=10)


def _holds(condition: str | None, context: dict[str, Any]) -> bool:
    # Jinja takes locks in its caches, which the sandbox forbids; evaluation itself is pure.
    with workflow.unsafe.sandbox_unrestricted():
        return expressions.holds(condition, context)


def _render(value: Any, context: dict[str, Any]) -> Any:
    with workflow.unsafe.sandbox_unrestricted():
        return expressions.render_value(value, context)


class _Restart(Exception):
    """A new trigger arrived for a journey whose entry rule is ``restart``."""


@workflow.defn(name=JOURNEY_WORKFLOW)
class JourneyWorkflow:
    """Interprets one compiled journey for one customer."""

    @workflow.init
    def __init__(self, input: JourneyInput) -> None:
        self.plan: JourneyPlan = input.plan
        self.customer_id = input.customer_id
        self.profile: dict[str, Any] = dict(input.profile)
        self.timezone_attribute = input.timezone_attribute
        self.max_history = input.max_history
        self.trigger = input.trigger
        self.state = input.state or JourneyState(step=input.plan.start, event=input.trigger)
        self.exit_event: Event | None = None
        self.restart_event: Event | None = None
        self.inbox: list[Event] = []
        self.messages: list[SendOutcome] = []
        self.waiting = ""
        self.outcome = COMPLETED

    @workflow.run
    async def run(self, input: JourneyInput) -> JourneyResult:
        if not self.state.run_key:
            self.state.run_key = self.trigger.id if self.trigger else workflow.info().run_id
        if self.state.started_at is None:
            self.state.started_at = workflow.now()
        try:
            if input.state is None and isinstance(self.plan.trigger, DateTrigger):
                await self._wait_for_trigger_date(self.plan.trigger)
            await self._interpret()
        except _Restart:
            self._restart()
        converted = self.outcome == CONVERTED
        workflow.upsert_search_attributes(
            [SA_STEP.value_unset(), SA_OUTCOME.value_set(self.outcome)]
        )
        workflow.set_current_details(f"ended: {self.outcome}")
        return JourneyResult(
            outcome=self.outcome,
            converted=converted,
            messages=self.messages,
            records=self.state.records,
        )

    # --- signals and queries ----------------------------------------------------------------

    @workflow.signal(name=SIGNAL_EVENT)
    def event(self, routed: RoutedEvent) -> None:
        """An event routed by the customer entity: a goal, or something a wait_for awaits."""
        self.profile.update(routed.profile)
        context = self._context(routed.event)
        for goal in self.plan.exit_on:
            if goal.event == routed.event.name and _holds(goal.when, context):
                self.exit_event = routed.event
                return
        self.inbox.append(routed.event)

    @workflow.signal(name=SIGNAL_TRIGGER)
    def retrigger(self, routed: RoutedEvent) -> None:
        """The trigger fired again while running (entry rule ``restart``)."""
        if self.trigger is None or routed.event.id != self.trigger.id:
            self.profile.update(routed.profile)
            self.restart_event = routed.event

    @workflow.query(name=QUERY_STATE)
    def status(self) -> JourneyStatus:
        return JourneyStatus(
            journey=self.plan.name,
            version=self.plan.version,
            customer_id=self.customer_id,
            step=self.state.step,
            waiting=self.waiting,
            variant=self.state.variant,
            held_out=self.state.held_out,
            records=self.state.records,
            messages=self.messages,
        )

    # --- the interpreter --------------------------------------------------------------------

    async def _interpret(self) -> None:
        while self.state.step is not None:
            if self.exit_event is not None:
                self._convert()
                return
            if self.restart_event is not None:
                raise _Restart
            info = workflow.info()
            if (
                info.is_continue_as_new_suggested()
                or info.get_current_history_length() > self.max_history
            ):
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._continue(self.state, self.trigger)
            step = self.plan.step(self.state.step)
            self.state.visits[step.id] = self.state.visits.get(step.id, 0) + 1
            following = await self._run_step(step)
            if self.exit_event is not None:
                # Credit the goal to the step the customer was on when it arrived.
                self._convert()
                return
            self.state.step = following
        if self.exit_event is not None:
            self._convert()

    async def _run_step(self, step: PlanStep) -> str | None:
        match step:
            case SendStep():
                return await self._send(step)
            case WaitStep():
                return await self._wait(step)
            case WaitForStep():
                return await self._wait_for(step)
            case BranchStep():
                return self._branch(step)
            case SplitStep():
                return self._split(step)
            case SetStep():
                return await self._set(step)
            case ActionStep():
                return await self._action(step)
            case GotoStep():
                self._record(step.id, "goto", f"to {step.target}")
                return step.target
            case ExitStep():
                self._record(step.id, "exit", step.outcome)
                self.outcome = step.outcome
                return None
            case _:
                assert_never(step)

    # --- step handlers ------------------------------------------------------------------------

    async def _send(self, step: SendStep) -> str | None:
        key = self._message_key(step.id)
        if self.state.held_out:
            outcome = SendOutcome(
                key=key, channel=step.channel, status="held_out", reason="holdout"
            )
            return self._sent(step, outcome)
        request = DeliverRequest(
            key=key,
            customer_id=self.customer_id,
            journey=self.plan.name,
            journey_version=self.plan.version,
            step=step.id,
            channel=step.channel,
            fallback=step.fallback,
            template=step.template,
            category=self.plan.category,
            priority=self.plan.priority,
            quiet_hours=(self.plan.quiet_hours.start, self.plan.quiet_hours.end)
            if self.plan.quiet_hours
            else None,
            ignore_quiet_hours=self.plan.ignore_quiet_hours,
            default_locale=self.plan.default_locale,
            # The activity renders with the entity's profile as it is at send time, so the
            # journey's copy would only add bytes to every send's history.
            context=self._context(customer=False),
        )
        for _ in range(MAX_DEFERRALS + 1):
            outcome = await self._deliver(request, step)
            if outcome.status != "deferred" or outcome.defer_until is None:
                return self._sent(step, outcome)
            self._record(step.id, "send", f"deferred: {outcome.reason}")
            await self._pause(
                step.id, outcome.defer_until, f"deferred by quiet hours: {outcome.reason}"
            )
            if self.exit_event is not None or self.restart_event is not None:
                return step.next
        blocked = outcome.model_copy(update={"status": "blocked", "reason": "deferred too often"})
        return self._sent(step, blocked)

    async def _deliver(self, request: DeliverRequest, step: SendStep) -> SendOutcome:
        try:
            outcome: SendOutcome = await workflow.execute_activity(
                DELIVER_ACTIVITY,
                request,
                result_type=SendOutcome,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=SEND_RETRY,
                summary=f"send {step.channel.value} {step.template}",
            )
            return outcome
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise  # support cancelled the run: stop, don't record a failed send
            cause = err.cause
            reason = str(cause.message if isinstance(cause, ApplicationError) else cause or err)
            kind = cause.type if isinstance(cause, ApplicationError) and cause.type else "Error"
            failed = SendOutcome(
                key=request.key, channel=step.channel, status="failed", reason=f"{kind}: {reason}"
            )
            await workflow.get_external_workflow_handle(
                customer_workflow_id(self.customer_id)
            ).signal(SIGNAL_RECORD, MessageRecord(key=request.key, status="failed", reason=kind))
            return failed

    def _sent(self, step: SendStep, outcome: SendOutcome) -> str | None:
        self.messages.append(outcome)
        detail = outcome.status if not outcome.reason else f"{outcome.status}: {outcome.reason}"
        self._record(step.id, "send", f"{outcome.channel.value} {detail}")
        return step.next

    async def _wait(self, step: WaitStep) -> str | None:
        now = workflow.now()
        label: str
        if step.duration_seconds is not None:
            until = now + timedelta(seconds=step.duration_seconds)
            label = f"wait {format_duration(step.duration_seconds)}"
        elif step.time_of_day is not None:
            tz = self.profile.get(self.timezone_attribute) if self.timezone_attribute else None
            until = policy.next_time_of_day(now, step.time_of_day, tz)
            label = f"wait until {step.time_of_day} local time"
        else:
            attribute = step.until_attribute or ""
            base = policy.parse_datetime(self.profile.get(attribute))
            if base is None:
                self._record(step.id, "wait", f"skipped: customer.{attribute} is not set")
                return step.next
            until = base + timedelta(seconds=step.offset_seconds)
            label = f"wait until customer.{attribute}"
            if step.offset_seconds:
                label += f" {'+' if step.offset_seconds > 0 else '-'}"
                label += format_duration(abs(step.offset_seconds))
        await self._pause(step.id, until, label)
        interrupted = self.exit_event is not None or self.restart_event is not None
        self._record(step.id, "wait", f"{label} (interrupted)" if interrupted else label)
        return step.next

    async def _wait_for(self, step: WaitForStep) -> str | None:
        self.inbox.clear()
        names = " or ".join(o.event for o in step.events)
        label = f"wait {format_duration(step.timeout_seconds)} for {names}"
        until = workflow.now() + timedelta(seconds=step.timeout_seconds)
        matched: list[tuple[Event, str | None]] = []

        def arrived() -> bool:
            while self.inbox and not matched:
                event = self.inbox.pop(0)
                for outcome in step.events:
                    context = self._context(event)
                    if outcome.event == event.name and _holds(outcome.when, context):
                        matched.append((event, outcome.next))
                        break
            return bool(matched)

        await self._pause(step.id, until, label, arrived)
        if matched:
            event, target = matched[0]
            self.state.event = event
            self._record(step.id, "wait_for", f"{event.name} arrived")
            return target
        if self.exit_event is None and self.restart_event is None:
            self._record(step.id, "wait_for", "timed out")
        else:
            self._record(step.id, "wait_for", "interrupted")
        return step.on_timeout

    def _branch(self, step: BranchStep) -> str | None:
        context = self._context()
        for index, case in enumerate(step.cases):
            if _holds(case.when, context):
                self._record(step.id, "branch", f"case {index + 1}: {case.when}")
                return case.next
        self._record(step.id, "branch", "else")
        return step.otherwise

    def _split(self, step: SplitStep) -> str | None:
        variant = policy.choose_variant(
            self.customer_id, self.plan.name, step.id, step.variants, step.holdout_percent
        )
        if variant is None:
            self.state.held_out = True
            self.state.variant = "holdout"
            self._record(step.id, "split", "holdout")
            return step.holdout_next
        self.state.variant = variant.name
        self._record(step.id, "split", f"variant {variant.name}")
        return variant.next

    async def _set(self, step: SetStep) -> str | None:
        context = self._context()
        attributes = {k: _render(v, context) for k, v in step.attributes.items()}
        change = ProfileChange(
            attributes=attributes,
            increment=step.increment,
            stage=step.stage.value if step.stage else None,
        )
        self.profile.update(attributes)
        for name, amount in step.increment.items():
            current = self.profile.get(name)
            self.profile[name] = (current if isinstance(current, int | float) else 0) + amount
        if step.stage:
            self.profile["stage"] = step.stage.value
        await workflow.get_external_workflow_handle(customer_workflow_id(self.customer_id)).signal(
            SIGNAL_PROFILE, change
        )
        self._record(step.id, "set", ", ".join(sorted([*attributes, *step.increment])) or "stage")
        return step.next

    async def _action(self, step: ActionStep) -> str | None:
        context = self._context()
        request = ActionRequest(
            key=self._message_key(step.id),
            customer_id=self.customer_id,
            journey=self.plan.name,
            step=step.id,
            action=step.action,
            # A webhook's body and headers are templated like an action's arguments.
            webhook=step.webhook.model_copy(
                update={
                    "body": _render(step.webhook.body, context),
                    "headers": _render(step.webhook.headers, context),
                }
            )
            if step.webhook
            else None,
            args=_render(step.args, context),
        )
        name = step.action or (step.webhook.url if step.webhook else "webhook")
        try:
            result: dict[str, Any] = await workflow.execute_activity(
                ACTION_ACTIVITY,
                request,
                result_type=dict,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=ACTION_RETRY,
                summary=f"action {name}",
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            self._record(step.id, "action", f"{name} failed: {err.cause or err}")
            return step.next
        if step.save_as:
            self.state.vars[step.save_as] = result
        self._record(step.id, "action", f"{name} done")
        return step.next

    # --- helpers ----------------------------------------------------------------------------

    async def _pause(self, step_id: str, until: datetime, label: str, done: Any = None) -> None:
        """Durably wait until ``until`` (one timer), waking early for goals and restarts."""
        remaining = until - workflow.now()
        if remaining <= timedelta(0) and workflow.patched(PAUSE_SKIPS_PAST_DEADLINES):
            # A date already past (an imported customer's old sign-up): nothing to wait for,
            # so no step to show and no action to pay.
            return
        since = workflow.now().strftime("%Y-%m-%d %H:%M UTC")
        self.waiting = f"{label} (since {since})"
        workflow.set_current_details(f"step {step_id}: {self.waiting}")
        self._show_step(step_id)

        def woken() -> bool:
            return (
                self.exit_event is not None
                or self.restart_event is not None
                or (done is not None and bool(done()))
            )

        if remaining > timedelta(0):
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(woken, timeout=remaining, timeout_summary=label)
        self.waiting = ""

    def _show_step(self, step_id: str) -> None:
        """Put the current step in the KairosStep search attribute (one billable action).

        A loop back to the same wait (nurture listens again after each engagement) or a
        quiet-hours deferral of a send leaves the attribute as it is, so it costs nothing.
        """
        shown = workflow.info().typed_search_attributes.get(SA_STEP)
        if shown == step_id and workflow.patched(SKIP_REPEATED_STEP_UPSERT):
            return
        workflow.upsert_search_attributes([SA_STEP.value_set(step_id)])

    async def _wait_for_trigger_date(self, trigger: DateTrigger) -> None:
        base = policy.parse_datetime(self.profile.get(trigger.attribute))
        if base is None:
            return
        until = base + timedelta(seconds=trigger.offset_seconds)
        label = (
            f"wait until customer.{trigger.attribute} + {format_duration(trigger.offset_seconds)}"
        )
        await self._pause("trigger", until, label)
        self._record("trigger", "wait", label)
        if self.restart_event is not None:
            raise _Restart

    def _context(self, event: Event | None = None, *, customer: bool = True) -> dict[str, Any]:
        current = event or self.state.event
        event_view: dict[str, Any] = {}
        if current is not None:
            event_view = {
                **current.properties,
                "name": current.name,
                "id": current.id,
                "timestamp": current.timestamp.isoformat() if current.timestamp else None,
            }
        journey = {
            **self.state.vars,
            "name": self.plan.name,
            "version": self.plan.version,
            "step": self.state.step,
            "variant": self.state.variant,
            "started_at": self.state.started_at.isoformat() if self.state.started_at else None,
        }
        context: dict[str, Any] = {"event": event_view, "journey": journey}
        if customer:
            context["customer"] = {**self.profile, "id": self.customer_id}
        return context

    def _message_key(self, step_id: str) -> str:
        visit = self.state.visits.get(step_id, 1)
        return f"{self.plan.name}:{self.customer_id}:{self.state.run_key}:{step_id}:{visit}"

    def _record(self, step_id: str, kind: str, outcome: str) -> None:
        self.state.records.append(
            StepRecord(step=step_id, kind=kind, at=workflow.now(), outcome=outcome)
        )

    def _convert(self) -> None:
        assert self.exit_event is not None
        self.outcome = CONVERTED
        self._record(self.state.step or "end", "exit", f"goal {self.exit_event.name}")

    def _restart(self) -> NoReturn:
        assert self.restart_event is not None
        self._continue(None, self.restart_event)

    def _continue(self, state: JourneyState | None, trigger: Event | None) -> NoReturn:
        workflow.continue_as_new(
            JourneyInput(
                plan=self.plan,
                customer_id=self.customer_id,
                profile=self.profile,
                trigger=trigger,
                state=state,
                timezone_attribute=self.timezone_attribute,
                max_history=self.max_history,
            )
        )
