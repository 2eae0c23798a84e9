"""The journey interpreter: one workflow per run, ``journey:<name>:<customer>:<run_no>``.

It walks the compiled plan it was started with (so a run is pinned to its definition), one small
handler per step kind. It does no I/O: sends, profile changes, actions and the run's end are
activities against the customer store; conditions are pure Jinja expressions over the run's
copy of the profile attributes it reads, kept fresh by the store's signals.

What the store tells a run (``event`` signal, :class:`RunSignal`):

* an event the run listens to: a goal (``exit_on``) ends the run from any step as converted;
  any other is kept for the next ``wait_for`` step. The run's own trigger and any event id it
  has heard before are ignored.
* a newer copy of the profile attributes it reads (by store version: never an older one).
* ``restart``: the journey's trigger fired again and a new run has already started in its
  place. The event that restarted it is checked as a goal first (a win-back order converts the
  old run), then the run ends as ``restarted``.

A run tells the store how it ended (the ``end_run`` activity), also when it is cancelled.

Why over 600 lines: it is one workflow class whose step handlers share the run's state (the
plan, its copy of the profile, the events kept, the step records); the decisions that need no
state are already out (kairos.runtime.routing, kairos.runtime.policy, kairos.runtime.delivery,
kairos.language.expressions).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, NoReturn, assert_never

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutType,
)
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from kairos.language import expressions
    from kairos.language.durations import format_duration
    from kairos.language.expressions import ExpressionError
    from kairos.language.plan import (
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
        StepKind,
        WaitForStep,
        WaitStep,
    )
    from kairos.messages.models import SendOutcome, SendStatus
    from kairos.runtime import delivery, policy, routing
    from kairos.runtime.contract import (
        JOURNEY_WORKFLOW,
        QUERY_STATE,
        SA_OUTCOME,
        SA_STEP,
        SEARCHABLE_WAIT_SECONDS,
        SIGNAL_EVENT,
        UNSETTLED_SENDS,
        ActionRequest,
        DeliverRequest,
        Event,
        FailedSend,
        JourneyInput,
        JourneyResult,
        JourneyState,
        JourneyStatus,
        ProfileChange,
        ProfileSnapshot,
        RunEnd,
        RunOutcome,
        RunProblems,
        RunSignal,
        StepRecord,
        send_record,
    )

DELIVER_ACTIVITY = "deliver"
ACTION_ACTIVITY = "run_action"
CHANGE_PROFILE_ACTIVITY = "change_profile"
END_RUN_ACTIVITY = "end_run"
NOTE_PROBLEMS_ACTIVITY = "note_problems"
FAILED_SEND_ACTIVITY = "record_failed_send"
# A message is deferred by quiet hours, a full frequency cap, or while it holds for a cap's
# last slot; more deferrals than this means the window never opens (misconfiguration), so the
# send is recorded as blocked.
MAX_DEFERRALS = 6
# Enough to recognise a repeated signal: the store repeats one only after a crash.
SEEN_EVENTS = 200
INBOX_EVENTS = 100
# A run that keeps failing the same way says so once per distinct problem, up to this many.
MAX_PROBLEMS = 20
# Patches (workflow.patched): runs recorded before them replay as they ran.
# Short waits show their step in the current details only, not in KairosStep.
STEP_IN_DETAILS = "step-in-details"
# The outcome is recorded in the store only (no KairosOutcome upsert), and by the run's last
# send or set step when nothing but gotos and exits follows it (no end_run activity).
END_IN_STORE = "end-in-store"
# The step records a run keeps (and carries across continue-as-new): the newest ones.
MAX_RECORDS = 500

# A send retries until its deadline (the step's give_up_after, its schedule-to-close timeout),
# however many attempts that takes; Retry-After and the wait for feedback set their own delays.
SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=delivery.SEND_TIMEOUTS.first_retry_seconds),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
)
ACTION_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=5), maximum_attempts=10)
# The store's own activities: retried until PostgreSQL answers again.
STORE_RETRY = RetryPolicy(maximum_interval=timedelta(minutes=1))


def _send_failure(err: ActivityError, give_up_after: int) -> str:
    """Why a send failed for good, in words: the provider's refusal, or the deadline that
    passed (with the last thing that went wrong)."""
    cause = err.cause
    if isinstance(cause, ActivityTimeout) and cause.type is TimeoutType.SCHEDULE_TO_CLOSE:
        cause = cause.cause  # the deadline passed during an attempt: say what it was doing
    elif err.retry_state is not RetryState.TIMEOUT:
        return _failure(cause, err)
    why = f"gave up after {format_duration(give_up_after)}"
    return f"{why}; the last attempt: {_failure(cause, err)}" if cause else why


def _failure(cause: BaseException | None, err: ActivityError) -> str:
    reason = str(cause.message if isinstance(cause, ApplicationError) else cause or err)
    kind = cause.type if isinstance(cause, ApplicationError) and cause.type else "Error"
    return f"{kind}: {reason}"


def _holds(condition: str | None, context: dict[str, Any]) -> bool:
    # Jinja takes locks in its caches, which the sandbox forbids; evaluation itself is pure.
    with workflow.unsafe.sandbox_unrestricted():
        return expressions.holds(condition, context)


def _render(value: Any, context: dict[str, Any]) -> Any:
    with workflow.unsafe.sandbox_unrestricted():
        return expressions.render_value(value, context)


def _cancelled(err: BaseException) -> bool:
    """Whether ``err`` is the run being cancelled (directly, or through an activity)."""
    if isinstance(err, asyncio.CancelledError | CancelledError):
        return True
    return isinstance(err, ActivityError) and isinstance(err.cause, CancelledError)


@workflow.defn(name=JOURNEY_WORKFLOW)
class JourneyWorkflow:
    """Interprets one compiled journey for one customer."""

    @workflow.init
    def __init__(self, input: JourneyInput) -> None:
        self.plan: JourneyPlan = input.plan
        self.customer_id = input.customer_id
        self.run_no = input.run_no
        self.profile: dict[str, Any] = dict(input.profile.values)
        self.profile_version = input.profile.version
        self.timezone_attribute = input.timezone_attribute
        self.max_history = input.max_history
        self.trigger = input.trigger
        self.state = input.state or JourneyState(step=input.plan.start, event=input.trigger)
        if self.trigger is not None and self.trigger.id not in self.state.seen_events:
            self.state.seen_events.append(self.trigger.id)
        self.exit_event: Event | None = None
        self.restarted = False
        self.waiting = ""
        # A RunOutcome, or the word of the exit step that ended it.
        self.outcome: str = RunOutcome.completed
        # The outcome the run's last activity recorded as the run's end, if it did.
        self.ended_as: str | None = None

    @workflow.run
    async def run(self, input: JourneyInput) -> JourneyResult:
        if self.state.started_at is None:
            self.state.started_at = workflow.now()
        try:
            if isinstance(self.plan.trigger, DateTrigger) and not self.state.trigger_waited:
                await self._wait_for_trigger_date(self.plan.trigger)
                self.state.trigger_waited = True
            await self._interpret()
        except BaseException as err:
            if not _cancelled(err):
                raise
            # Support cancelled the run: say so in the store, then end as cancelled.
            self.outcome = RunOutcome.cancelled
            self._record(self.state.step or "end", StepKind.exit, RunOutcome.cancelled)
            await self._end()
            raise
        await self._end()
        return JourneyResult(
            outcome=self.outcome,
            converted=self.outcome == RunOutcome.converted,
            messages=self.state.messages,
            records=self.state.records,
        )

    # --- signals and queries ----------------------------------------------------------------

    @workflow.signal(name=SIGNAL_EVENT)
    def event(self, signal: RunSignal) -> None:
        """What the store tells the run: an event, a newer profile, a restart."""
        if signal.profile is not None:
            self._take_profile(signal.profile)
        event = signal.event
        if event is not None and event.id not in self.state.seen_events:
            self.state.seen_events.append(event.id)
            del self.state.seen_events[:-SEEN_EVENTS]
            if self._is_goal(event):
                self.exit_event = event
            else:
                self.state.inbox.append(event)
                del self.state.inbox[:-INBOX_EVENTS]
        if signal.restart:
            self.restarted = True

    @workflow.query(name=QUERY_STATE)
    def status(self) -> JourneyStatus:
        return JourneyStatus(
            journey=self.plan.name,
            version=self.plan.version,
            customer_id=self.customer_id,
            run_no=self.run_no,
            step=self.state.step,
            waiting=self.waiting,
            variant=self.state.variant,
            held_out=self.state.held_out,
            records=self.state.records,
            messages=self.state.messages,
        )

    # --- the interpreter --------------------------------------------------------------------

    async def _interpret(self) -> None:
        while self.state.step is not None:
            if self._stopped():
                break
            if self._history_full():
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._continue()
            await self._report_problems()
            step = self.plan.step(self.state.step)
            if self.state.resuming:
                # The same visit, resumed after continuing as new inside it: same message keys.
                self.state.resuming = False
            else:
                self.state.visits[step.id] = self.state.visits.get(step.id, 0) + 1
            following = await self._run_step(step)
            if self._stopped():
                # A goal is credited to the step the customer was on when it arrived.
                break
            self.state.step = following
        self._stopped()

    def _stopped(self) -> bool:
        """Whether a goal or a restart ends the run here (a goal wins: it converted)."""
        if self.exit_event is not None:
            if self.outcome != RunOutcome.converted:
                self.outcome = RunOutcome.converted
                self._record(
                    self.state.step or "end", StepKind.exit, f"goal {self.exit_event.name}"
                )
            return True
        if self.restarted:
            if self.outcome != RunOutcome.restarted:
                self.outcome = RunOutcome.restarted
                self._record(self.state.step or "end", StepKind.exit, "restarted by a new trigger")
            return True
        return False

    def _is_goal(self, event: Event) -> bool:
        context = self._context(event)
        return any(
            goal.event == event.name and self._holds(goal.when, context, "exit_on")
            for goal in self.plan.exit_on
        )

    def _holds(self, condition: str | None, context: dict[str, Any], where: str) -> bool:
        """A condition's answer; one that cannot be evaluated is false, and a problem."""
        try:
            return _holds(condition, context)
        except ExpressionError as err:
            self._problem(where, f"{err}; taken as false")
            return False

    def _rendered(self, value: Any, context: dict[str, Any], where: str) -> tuple[Any, bool]:
        """``value`` rendered, and whether it could be (a problem when it could not)."""
        try:
            return _render(value, context), True
        except ExpressionError as err:
            self._problem(where, str(err))
            return value, False

    def _problem(self, step_id: str, text: str) -> None:
        """Record what the run could not do, show it in the Temporal UI, and (at the next
        step) tell the store, where `kairos customer` and the report read it."""
        problem = f"step {step_id}: {text}"
        if problem in self.state.problems or len(self.state.problems) >= MAX_PROBLEMS:
            return
        self.state.problems.append(problem)
        self._record(step_id, StepKind.problem, text)
        workflow.set_current_details(f"problem at {problem}")

    async def _report_problems(self) -> None:
        new = self.state.problems[self.state.problems_reported :]
        if not new:
            return
        await workflow.execute_activity(
            NOTE_PROBLEMS_ACTIVITY,
            RunProblems(
                customer_id=self.customer_id,
                journey=self.plan.name,
                run_no=self.run_no,
                problems=new,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
            summary="record a problem",
        )
        self.state.problems_reported = len(self.state.problems)

    def _take_profile(self, snapshot: ProfileSnapshot) -> None:
        """Keep the newer copy: a signal read before a ``set`` step never undoes it."""
        if snapshot.version > self.profile_version:
            self.profile = dict(snapshot.values)
            self.profile_version = snapshot.version

    async def _end(self) -> None:
        """Tell the store how the run ended (unless its last activity did), and show it in the
        Temporal UI."""
        if workflow.patched(END_IN_STORE):
            if workflow.info().typed_search_attributes.get(SA_STEP):
                workflow.upsert_search_attributes([SA_STEP.value_unset()])
        else:
            workflow.upsert_search_attributes(
                [SA_STEP.value_unset(), SA_OUTCOME.value_set(self.outcome)]
            )
        workflow.set_current_details(f"ended: {self.outcome}")
        problems = self.state.problems[self.state.problems_reported :]
        if self.ended_as == self.outcome and not problems:
            return
        await workflow.execute_activity(
            END_RUN_ACTIVITY,
            RunEnd(
                customer_id=self.customer_id,
                journey=self.plan.name,
                run_no=self.run_no,
                outcome=self.outcome,
                problems=problems,
                goal_event=(
                    self.exit_event.id
                    if self.outcome == RunOutcome.converted and self.exit_event is not None
                    else None
                ),
                records=self.state.records,
                variant=self.state.variant,
                held_out=self.state.held_out,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
            summary=f"record the end: {self.outcome}",
        )

    def _end_after(self, step: SendStep | SetStep) -> RunEnd | None:
        """The run's end for ``step``'s activity to record, when only gotos and exits follow
        it (so nothing else can happen in between but a goal, a restart or a cancellation,
        after which the run records its own end)."""
        outcome: str = RunOutcome.completed
        target, seen = step.next, set()
        tail: list[StepRecord] = []
        while target is not None:
            if target in seen:
                return None
            seen.add(target)
            following = self.plan.step(target)
            if isinstance(following, GotoStep):
                tail.append(self._record_of(following.id, StepKind.goto, f"to {following.target}"))
                target = following.target
            elif isinstance(following, ExitStep):
                tail.append(self._record_of(following.id, StepKind.exit, following.outcome))
                outcome, target = following.outcome, None
            else:
                return None
        unsettled = self.exit_event is not None or self.restarted
        if unsettled or self.state.problems[self.state.problems_reported :]:
            return None
        if not workflow.patched(END_IN_STORE):
            return None
        return RunEnd(
            customer_id=self.customer_id, journey=self.plan.name, run_no=self.run_no,
            outcome=outcome, records=self.state.records, variant=self.state.variant,
            held_out=self.state.held_out, tail=tail,
        )  # fmt: skip

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
                self._record(step.id, StepKind.goto, f"to {step.target}")
                return step.target
            case ExitStep():
                self._record(step.id, StepKind.exit, step.outcome)
                self.outcome = step.outcome
                return None
            case _:
                assert_never(step)

    # --- step handlers ------------------------------------------------------------------------

    async def _send(self, step: SendStep) -> str | None:
        key = self._message_key(step.id)
        if self.state.held_out:
            outcome = SendOutcome(
                key=key, channel=step.channel, status=SendStatus.held_out, reason="holdout"
            )
            return self._sent(step, outcome)
        request = DeliverRequest(
            key=key,
            customer_id=self.customer_id,
            journey=self.plan.name,
            journey_version=self.plan.version,
            run_no=self.run_no,
            step=step.id,
            channel=step.channel,
            fallback=step.fallback,
            template=step.template,
            templates=self.plan.templates,
            category=self.plan.category,
            priority=self.plan.priority,
            quiet_hours=(self.plan.quiet_hours.start, self.plan.quiet_hours.end)
            if self.plan.quiet_hours
            else None,
            ignore_quiet_hours=self.plan.ignore_quiet_hours,
            default_locale=self.plan.default_locale,
            # The activity renders with the stored profile as it is at send time, so the
            # run's copy would only add bytes (and personal data) to every send's history.
            context=self._context(customer=False),
            end=self._end_after(step),
        )
        for _ in range(MAX_DEFERRALS + 1):
            outcome = await self._deliver(request, step)
            if outcome.status != SendStatus.deferred or outcome.defer_until is None:
                return self._sent(step, outcome)
            self._record(step.id, StepKind.send, f"deferred: {outcome.reason}")
            await self._pause(step.id, outcome.defer_until, f"deferred: {outcome.reason}")
            if self.exit_event is not None or self.restarted:
                return step.next
            # The end a later attempt records carries the deferral's record too.
            request = request.model_copy(update={"end": self._end_after(step)})
        blocked = outcome.model_copy(
            update={"status": SendStatus.blocked, "reason": "deferred too often"}
        )
        return self._sent(step, blocked)

    async def _deliver(self, request: DeliverRequest, step: SendStep) -> SendOutcome:
        outcome = await self._deliver_on(request, step)
        if outcome.status == SendStatus.rerouted:
            # The fallback channel carries it: on that channel's queue, within its rate limit.
            fallback = request.model_copy(update={"channel": outcome.channel, "fallback": None})
            outcome = await self._deliver_on(fallback, step)
        return outcome

    async def _deliver_on(self, request: DeliverRequest, step: SendStep) -> SendOutcome:
        give_up_after = step.give_up_after_seconds or delivery.DEFAULT_GIVE_UP_AFTER
        timeouts = delivery.SEND_TIMEOUTS
        try:
            outcome: SendOutcome = await workflow.execute_activity(
                DELIVER_ACTIVITY,
                request,
                result_type=SendOutcome,
                schedule_to_close_timeout=timedelta(seconds=give_up_after),
                start_to_close_timeout=timedelta(seconds=timeouts.start_to_close_seconds),
                heartbeat_timeout=timedelta(seconds=timeouts.heartbeat_seconds)
                if timeouts.heartbeat_seconds
                else None,
                retry_policy=SEND_RETRY,
                task_queue=delivery.send_queue(workflow.info().task_queue, request.channel),
                summary=f"send {request.channel.value} {step.template}",
            )
            if request.end is not None and outcome.status not in UNSETTLED_SENDS:
                self.ended_as = request.end.outcome
            return outcome
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise  # support cancelled the run: stop, don't record a failed send
            failed = SendOutcome(
                key=request.key,
                channel=request.channel,
                status=SendStatus.failed,
                reason=_send_failure(err, give_up_after),
            )
            await workflow.execute_activity(
                FAILED_SEND_ACTIVITY,
                FailedSend(key=request.key, customer_id=self.customer_id, reason=failed.reason),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=STORE_RETRY,
                summary="record the failed send",
            )
            return failed

    def _sent(self, step: SendStep, outcome: SendOutcome) -> str | None:
        self.state.messages.append(outcome)
        self._keep(send_record(step.id, outcome, workflow.now()))
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
                self._record(step.id, StepKind.wait, f"skipped: customer.{attribute} is not set")
                return step.next
            until = base + timedelta(seconds=step.offset_seconds)
            label = f"wait until customer.{attribute}"
            if step.offset_seconds:
                label += f" {'+' if step.offset_seconds > 0 else '-'}"
                label += format_duration(abs(step.offset_seconds))
        await self._pause(step.id, until, label)
        interrupted = self.exit_event is not None or self.restarted
        self._record(step.id, StepKind.wait, f"{label} (interrupted)" if interrupted else label)
        return step.next

    async def _wait_for(self, step: WaitForStep) -> str | None:
        names = " or ".join(o.event for o in step.events)
        label = f"wait {format_duration(step.timeout_seconds)} for {names}"
        until = workflow.now() + timedelta(seconds=step.timeout_seconds)
        matched: list[tuple[Event, str | None]] = []

        def arrived() -> bool:
            # Events that came while the run was busy elsewhere count too, oldest first; the
            # ones this step does not wait for are dropped as it looks at them.
            while self.state.inbox and not matched:
                event = self.state.inbox.pop(0)
                for outcome in step.events:
                    context = self._context(event)
                    if outcome.event == event.name and self._holds(outcome.when, context, step.id):
                        matched.append((event, outcome.next))
                        break
            return bool(matched)

        if not arrived():
            await self._pause(step.id, until, label, arrived)
        if matched:
            event, target = matched[0]
            self.state.event = event
            self._record(step.id, StepKind.wait_for, f"{event.name} arrived")
            return target
        if self.exit_event is None and not self.restarted:
            self._record(step.id, StepKind.wait_for, "timed out")
        else:
            self._record(step.id, StepKind.wait_for, "interrupted")
        return step.on_timeout

    def _branch(self, step: BranchStep) -> str | None:
        context = self._context()
        for index, case in enumerate(step.cases):
            if self._holds(case.when, context, step.id):
                self._record(step.id, StepKind.branch, f"case {index + 1}: {case.when}")
                return case.next
        self._record(step.id, StepKind.branch, "else")
        return step.otherwise

    def _split(self, step: SplitStep) -> str | None:
        variant = policy.choose_variant(
            self.customer_id, self.plan.name, step.id, step.variants, step.holdout_percent
        )
        if variant is None:
            self.state.held_out = True
            self.state.variant = "holdout"
            self._record(step.id, StepKind.split, "holdout")
            return step.holdout_next
        self.state.variant = variant.name
        self._record(step.id, StepKind.split, f"variant {variant.name}")
        return variant.next

    async def _set(self, step: SetStep) -> str | None:
        context = self._context()
        # A value that cannot be rendered leaves its attribute as it was.
        rendered = {k: self._rendered(v, context, step.id) for k, v in step.attributes.items()}
        change = ProfileChange(
            key=self._message_key(step.id),
            customer_id=self.customer_id,
            journey=self.plan.name,
            run_no=self.run_no,
            attributes={k: value for k, (value, ok) in rendered.items() if ok},
            increment=step.increment,
            stage=step.stage.value if step.stage else None,
            reads=sorted(self._reads()),
        )
        names = sorted([*change.attributes, *step.increment])
        record = self._record_of(step.id, StepKind.set, ", ".join(names) or "stage")
        end = self._end_after(step)
        change.end = end.after(record) if end is not None else None
        # Written to the store and read back: a condition after this step sees the stored
        # result (an increment added to the current score, not to this run's copy).
        stored: ProfileSnapshot = await workflow.execute_activity(
            CHANGE_PROFILE_ACTIVITY,
            change,
            result_type=ProfileSnapshot,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
            summary=f"set {', '.join(sorted([*change.attributes, *step.increment])) or 'stage'}",
        )
        self._take_profile(stored)
        if change.end is not None:
            self.ended_as = change.end.outcome
        self._keep(record)
        return step.next

    def _reads(self) -> frozenset[str]:
        with workflow.unsafe.sandbox_unrestricted():
            return routing.reads(self.plan, self.timezone_attribute)

    async def _action(self, step: ActionStep) -> str | None:
        context = self._context()
        name = step.action or (step.webhook.url if step.webhook else "webhook")
        # A webhook's body and headers are templated like an action's arguments.
        args, args_ok = self._rendered(step.args, context, step.id)
        body, body_ok = self._rendered(
            step.webhook.body if step.webhook else None, context, step.id
        )
        headers, headers_ok = self._rendered(
            step.webhook.headers if step.webhook else {}, context, step.id
        )
        if not (args_ok and body_ok and headers_ok):
            self._record(
                step.id, StepKind.action, f"{name} not called: its values could not be rendered"
            )
            return step.next
        request = ActionRequest(
            key=self._message_key(step.id),
            customer_id=self.customer_id,
            journey=self.plan.name,
            step=step.id,
            action=step.action,
            webhook=step.webhook.model_copy(update={"body": body, "headers": headers})
            if step.webhook
            else None,
            args=args,
        )
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
            self._record(step.id, StepKind.action, f"{name} failed: {err.cause or err}")
            return step.next
        if step.save_as:
            self.state.vars[step.save_as] = result
        self._record(step.id, StepKind.action, f"{name} done")
        return step.next

    # --- helpers ----------------------------------------------------------------------------

    async def _pause(self, step_id: str, until: datetime, label: str, done: Any = None) -> None:
        """Durably wait until ``until`` (one timer), waking early for goals and restarts.

        A long wait that many signals reach (a month of engagement events) continues as new
        in the middle when its history grows long, and the next run waits on to the same
        deadline.
        """
        if self.state.deadline is not None and self.state.deadline_step == step_id:
            until = self.state.deadline  # resumed after continuing as new inside this wait
        self.state.deadline = self.state.deadline_step = None
        remaining = until - workflow.now()
        if remaining <= timedelta(0):
            # A date already past (an imported customer's old sign-up): nothing to wait for,
            # so no step to show and no action to pay.
            return
        since = workflow.now().strftime("%Y-%m-%d %H:%M UTC")
        self.waiting = f"{label} (since {since})"
        workflow.set_current_details(f"step {step_id}: {self.waiting}")
        self._show_step(step_id, remaining)

        def woken() -> bool:
            return (
                self.exit_event is not None or self.restarted or (done is not None and bool(done()))
            )

        while remaining > timedelta(0):
            try:
                await workflow.wait_condition(
                    lambda: woken() or self._history_full(),
                    timeout=remaining,
                    timeout_summary=label,
                )
            except TimeoutError:
                break
            if woken():
                break
            # Only a long history woke us: carry the deadline into the next run.
            self.state.deadline, self.state.deadline_step = until, step_id
            self.state.resuming = True
            await workflow.wait_condition(workflow.all_handlers_finished)
            self._continue()
        self.waiting = ""

    def _history_full(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > self.max_history
        )

    def _show_step(self, step_id: str, remaining: timedelta) -> None:
        """Put the current step in the KairosStep search attribute (one billable action) when
        the wait is long enough for support to look for who waits there.

        A shorter wait shows its step in the current details only (free), and clears a step
        shown by an earlier long wait. A loop back to the same wait (nurture listens again
        after each engagement) or a quiet-hours deferral of a send leaves the attribute as it
        is, so it costs nothing.
        """
        shown = workflow.info().typed_search_attributes.get(SA_STEP)
        short = remaining < timedelta(seconds=SEARCHABLE_WAIT_SECONDS)
        if short and workflow.patched(STEP_IN_DETAILS):
            if shown and shown != step_id:
                workflow.upsert_search_attributes([SA_STEP.value_unset()])
            return
        if shown == step_id:
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
        self._record("trigger", StepKind.wait, label)

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
        return f"{self.plan.name}:{self.customer_id}:{self.run_no}:{step_id}:{visit}"

    def _record(self, step_id: str, kind: StepKind, outcome: str) -> None:
        self._keep(self._record_of(step_id, kind, outcome))

    def _record_of(self, step_id: str, kind: StepKind, outcome: str) -> StepRecord:
        return StepRecord(step=step_id, kind=kind, at=workflow.now(), outcome=outcome)

    def _keep(self, record: StepRecord) -> None:
        self.state.records.append(record)
        # A run that loops for months keeps its latest steps, not an ever-growing input.
        del self.state.records[:-MAX_RECORDS]

    def _continue(self) -> NoReturn:
        workflow.continue_as_new(
            JourneyInput(
                plan=self.plan,
                customer_id=self.customer_id,
                run_no=self.run_no,
                profile=ProfileSnapshot(version=self.profile_version, values=self.profile),
                trigger=self.trigger,
                state=self.state,
                timezone_attribute=self.timezone_attribute,
                max_history=self.max_history,
            )
        )
