"""The benchmark journeys written by hand as plain Temporal workflows: the baseline.

Each workflow does what its YAML twin in benchmarks/journeys does, step for step, the way one
would write it directly against the Temporal SDK over the same customer store: sends are the
same ``deliver`` activity (the store's send transaction decides policy), actions the same
``run_action`` activity, ``set`` steps the same ``change_profile`` activity, and each run tells
the store how it ended with the same ``end_run`` activity. Events reach them the same way: the
store records each event, decides which runs to start or signal, and the same dispatcher makes
the calls (:func:`start_baseline` is its starter here, so only the workflow type differs). They
answer the same ``event`` signal, keep the same workflow ids (one per run) and give support the
same search attributes (customer, journey, outcome; the current step in the current details,
and in ``KairosStep`` while waiting an hour or more).

What they do not do is interpret a plan: conditions are Python, the step order is code. The
difference in cost between the two is therefore the cost of interpreting YAML.

Why over 600 lines: the five journeys are subclasses of one BaselineJourney and are read side by
side with their YAML twins; the plain anchor at the end is the seam to cut along if it grows.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.client import Client

with workflow.unsafe.imports_passed_through():
    from kairos.language.plan import Category, Channel, SplitVariant
    from kairos.messages.models import SendOutcome, SendStatus
    from kairos.runtime import policy
    from kairos.runtime.contract import (
        SA_STEP,
        SEARCHABLE_WAIT_SECONDS,
        SIGNAL_EVENT,
        UNSETTLED_SENDS,
        ActionRequest,
        DeliverRequest,
        Event,
        JourneyResult,
        ProfileChange,
        ProfileSnapshot,
        RunEnd,
        RunSignal,
    )
    from kairos.runtime.temporal import RunStart, start_run
    from workflows.journey import ACTION_RETRY, SEND_RETRY, STORE_RETRY

VERSION = "hand-written"
CONVERTED = "converted"
RESTARTED = "restarted"


class BaselineInput(BaseModel):
    """Whom the run is for, which run it is, the profile attributes it reads, and why."""

    customer_id: str
    run_no: int
    profile: ProfileSnapshot = Field(default_factory=ProfileSnapshot)
    trigger: Event | None = None


class _Interrupted(Exception):
    """A goal event (exit_on) or a new trigger (entry restart) arrived: the steps stop."""


class BaselineJourney:
    """What every hand-written journey shares: the signal, and one helper per kind of step."""

    NAME: ClassVar[str]
    CATEGORY: ClassVar[Category] = Category.marketing
    PRIORITY: ClassVar[int] = 50
    EXIT_ON: ClassVar[frozenset[str]] = frozenset()
    # The profile attributes the journey's code reads (what the store keeps fresh in the run
    # and what a set step asks back): those its YAML twin reads, checked by a test.
    READS: ClassVar[tuple[str, ...]] = ()

    @workflow.init
    def __init__(self, input: BaselineInput) -> None:
        self.customer_id = input.customer_id
        self.run_no = input.run_no
        self.profile = dict(input.profile.values)
        self.profile_version = input.profile.version
        self.trigger = input.trigger
        self.vars: dict[str, Any] = {}
        self.inbox: list[Event] = []
        self.seen: set[str] = {input.trigger.id} if input.trigger else set()
        self.visits: dict[str, int] = {}
        self.goal: Event | None = None
        self.restarted = False
        self.messages: list[SendOutcome] = []
        self.held_out = False
        # The outcome the run's last activity recorded as the run's end, if it did.
        self.ended_as: str | None = None

    @workflow.signal(name=SIGNAL_EVENT)
    def event(self, signal: RunSignal) -> None:
        if signal.profile is not None:
            self._take(signal.profile)
        event = signal.event
        if event is not None and event.id not in self.seen:
            self.seen.add(event.id)
            if event.name in self.EXIT_ON:
                self.goal = event
            else:
                self.inbox.append(event)
        if signal.restart:
            self.restarted = True

    async def execute(self, steps: Callable[[], Awaitable[str]]) -> JourneyResult:
        """Run ``steps`` (which return the outcome), ending early on a goal or a restart;
        then tell the store how the run ended, unless the last step's activity did."""
        try:
            outcome = await steps()
        except _Interrupted:
            outcome = CONVERTED if self.goal is not None else RESTARTED
        if workflow.info().typed_search_attributes.get(SA_STEP):
            workflow.upsert_search_attributes([SA_STEP.value_unset()])
        workflow.set_current_details(f"ended: {outcome}")
        if self.ended_as != outcome:
            goal = self.goal.id if outcome == CONVERTED and self.goal is not None else None
            await workflow.execute_activity(
                "end_run",
                RunEnd(
                    customer_id=self.customer_id, journey=self.NAME, run_no=self.run_no,
                    outcome=outcome, goal_event=goal,
                ),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=STORE_RETRY,
                summary=f"record the end: {outcome}",
            )  # fmt: skip
        return JourneyResult(
            outcome=outcome, converted=outcome == CONVERTED, messages=self.messages
        )

    # --- one helper per kind of step ------------------------------------------------------

    async def send(
        self, step: str, channel: Channel, template: str, *, ends: str | None = None
    ) -> SendOutcome:
        """Deliver a message; ``ends``: the run's outcome when this is its last step (the
        activity then records the end too)."""
        key = self._key(step)
        if self.held_out:
            outcome = SendOutcome(
                key=key, channel=channel, status=SendStatus.held_out, reason="holdout"
            )
        else:
            outcome = await workflow.execute_activity(
                "deliver",
                DeliverRequest(
                    key=key,
                    customer_id=self.customer_id,
                    journey=self.NAME,
                    journey_version=VERSION,
                    run_no=self.run_no,
                    step=step,
                    channel=channel,
                    template=template,
                    category=self.CATEGORY,
                    priority=self.PRIORITY,
                    context=self._context(),
                    end=self._end(ends),
                ),
                result_type=SendOutcome,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=SEND_RETRY,
                summary=f"send {channel.value} {template}",
            )
            if ends is not None and outcome.status not in UNSETTLED_SENDS:
                self.ended_as = ends
        self.messages.append(outcome)
        self._check_goal()
        return outcome

    async def sleep(self, step: str, seconds: float) -> None:
        await self.sleep_until(step, workflow.now() + timedelta(seconds=seconds))

    async def sleep_until(self, step: str, until: datetime) -> None:
        await self._pause(step, until, lambda: False)

    async def wait_for(self, step: str, events: frozenset[str], seconds: float) -> Event | None:
        """The first of ``events`` to arrive within ``seconds`` (counting those that came
        while the journey was busy elsewhere), or None on timeout."""
        until = workflow.now() + timedelta(seconds=seconds)

        def arrived() -> bool:
            while self.inbox and self.inbox[0].name not in events:
                self.inbox.pop(0)
            return bool(self.inbox)

        if not arrived():
            await self._pause(step, until, arrived)
        return self.inbox.pop(0) if arrived() else None

    async def set_profile(
        self,
        step: str,
        *,
        stage: str | None = None,
        increment: dict[str, float] | None = None,
        ends: str | None = None,
    ) -> None:
        """Write a change to the store and read back what the journey reads, as stored;
        ``ends``: the run's outcome when this is its last step (recorded with the change)."""
        change = ProfileChange(
            key=self._key(step),
            customer_id=self.customer_id,
            journey=self.NAME,
            run_no=self.run_no,
            increment=increment or {},
            stage=stage,
            reads=list(self.READS),
            end=self._end(ends),
        )
        stored: ProfileSnapshot = await workflow.execute_activity(
            "change_profile",
            change,
            result_type=ProfileSnapshot,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=STORE_RETRY,
            summary=f"set {step}",
        )
        self._take(stored)
        self.ended_as = ends

    async def action(self, step: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
            "run_action",
            ActionRequest(
                key=self._key(step),
                customer_id=self.customer_id,
                journey=self.NAME,
                step=step,
                action=name,
                args=args,
            ),
            result_type=dict,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=ACTION_RETRY,
            summary=f"action {name}",
        )
        self._check_goal()
        return result

    def variant(self, step: str, variants: tuple[SplitVariant, ...], holdout: int) -> str | None:
        chosen = policy.choose_variant(self.customer_id, self.NAME, step, variants, holdout)
        self.held_out = chosen is None
        return chosen.name if chosen else None

    # --- internals -------------------------------------------------------------------------

    async def _pause(self, step: str, until: datetime, done: Callable[[], bool]) -> None:
        remaining = until - workflow.now()
        if remaining > timedelta(0):
            # The step in the current details (free); in KairosStep only when the wait is long
            # enough for support to look for who waits there.
            workflow.set_current_details(f"step {step}")
            shown = workflow.info().typed_search_attributes.get(SA_STEP)
            if remaining >= timedelta(seconds=SEARCHABLE_WAIT_SECONDS):
                if shown != step:
                    workflow.upsert_search_attributes([SA_STEP.value_set(step)])
            elif shown:
                workflow.upsert_search_attributes([SA_STEP.value_unset()])
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(
                    lambda: self.goal is not None or self.restarted or done(),
                    timeout=remaining,
                    timeout_summary=step,
                )
        self._check_goal()

    def _end(self, outcome: str | None) -> RunEnd | None:
        if outcome is None or self.goal is not None or self.restarted:
            return None
        return RunEnd(
            customer_id=self.customer_id, journey=self.NAME, run_no=self.run_no, outcome=outcome
        )

    def _check_goal(self) -> None:
        if self.goal is not None or self.restarted:
            raise _Interrupted

    def _take(self, snapshot: ProfileSnapshot) -> None:
        """Keep the newer copy: an older read never undoes a later ``set``."""
        if snapshot.version > self.profile_version:
            self.profile = dict(snapshot.values)
            self.profile_version = snapshot.version

    def _key(self, step: str) -> str:
        """The message (or change) key of this visit to ``step``: sent or applied once."""
        self.visits[step] = self.visits.get(step, 0) + 1
        return f"{self.NAME}:{self.customer_id}:{self.run_no}:{step}:{self.visits[step]}"

    def _context(self) -> dict[str, Any]:
        trigger = self.trigger
        event: dict[str, Any] = {}
        if trigger is not None:
            stamp = trigger.timestamp.isoformat() if trigger.timestamp else None
            event = {**trigger.properties, "name": trigger.name, "id": trigger.id}
            event["timestamp"] = stamp
        return {"event": event, "journey": {**self.vars, "name": self.NAME}}


@workflow.defn(name="BaselineWelcome")
class Welcome(BaselineJourney):
    NAME = "bench_welcome"
    PRIORITY = 60
    EXIT_ON = frozenset({"order_placed"})
    READS = ("stage", "onboarded", "signed_up_at")

    @workflow.run
    async def run(self, input: BaselineInput) -> JourneyResult:
        return await self.execute(self.journey)

    async def journey(self) -> str:
        stage = self.profile.get("stage")
        if not stage or stage == "awareness":
            await self.set_profile("into_consideration", stage="consideration")
        await self.send("welcome", Channel.email, "welcome/welcome")
        if await self.wait_for("wait_for_setup", frozenset({"onboarding_completed"}), 2) is None:
            await self.sleep("wait_1s", 1)
            if not self.profile.get("onboarded"):
                await self.send("onboarding_tips", Channel.email, "welcome/onboarding_tips")
        signed_up = policy.parse_datetime(self.profile.get("signed_up_at"))
        if signed_up is not None:
            await self.sleep_until("wait_until_signed_up_at", signed_up + timedelta(seconds=5))
        await self.sleep("wait_1s_2", 1)
        args = {"percent": 10, "valid_days": 14}
        self.vars["coupon"] = await self.action("first_order_coupon", "issue_coupon", args)
        await self.send("first_order_offer", Channel.email, "welcome/first_order_offer")
        await self.sleep("wait_2s", 2)
        return "no_first_order"


@workflow.defn(name="BaselineCartAbandonment")
class CartAbandonment(BaselineJourney):
    NAME = "bench_cart_abandonment"
    PRIORITY = 70
    EXIT_ON = frozenset({"order_placed"})
    READS = ("cart_total", "consent", "phone")

    @workflow.run
    async def run(self, input: BaselineInput) -> JourneyResult:
        return await self.execute(self.journey)

    async def journey(self) -> str:
        await self.sleep("wait_2s", 2)
        if not (self.profile.get("cart_total") or 0) > 0:
            return "cart_emptied"
        await self.send("first_reminder", Channel.email, "cart_abandonment/reminder")
        await self.wait_for("wait_for_order_placed", frozenset({"order_placed"}), 6)
        if not (self.profile.get("cart_total") or 0) > 0:
            return "cart_emptied"
        consent = self.profile.get("consent") or {}
        if self.profile.get("phone") and consent.get("sms"):
            await self.send(
                "last_chance_sms", Channel.sms, "cart_abandonment/last_chance", ends="completed"
            )
        else:
            await self.send(
                "last_chance_email", Channel.email, "cart_abandonment/last_chance", ends="completed"
            )
        return "completed"


NURTURE_WAIT_SECONDS = 2  # between lessons (4 days in journeys/nurture.yaml)
# After the first lesson: long enough that an engaging lead's events (emitted just after the
# form) are in before lesson 2 decides, however loaded the machine, on both sides alike.
NURTURE_ENGAGE_SECONDS = 10
SALES_READY = 50


@workflow.defn(name="BaselineNurture")
class Nurture(BaselineJourney):
    """Lessons by interest; the lead score is the store's (customer.yaml's scoring rules), and
    a lead who reaches it is handed over by :class:`SalesHandover`: the series ends."""

    NAME = "bench_nurture"
    EXIT_ON = frozenset({"order_placed"})
    READS = ("interest", "lead_score")

    @workflow.run
    async def run(self, input: BaselineInput) -> JourneyResult:
        return await self.execute(self.journey)

    async def journey(self) -> str:
        await self.set_profile("set_stage_consideration", stage="consideration")
        interest = self.profile.get("interest")
        track = interest if interest in ("espresso", "office") else "filter"
        await self.send(f"send_email_nurture_{track}_1", Channel.email, f"nurture/{track}_1")
        await self.sleep("wait_10s", NURTURE_ENGAGE_SECONDS)
        if self.warm():
            return "handed_to_sales"
        await self.send(f"send_email_nurture_{track}_2", Channel.email, f"nurture/{track}_2")
        await self.sleep("wait_2s", NURTURE_WAIT_SECONDS)
        if self.warm():
            return "handed_to_sales"
        await self.send("lesson_3", Channel.email, "nurture/live_tasting")
        await self.sleep("wait_2s_2", NURTURE_WAIT_SECONDS)
        return "handed_to_sales" if self.warm() else "not_ready"

    def warm(self) -> bool:
        return (self.profile.get("lead_score") or 0) >= SALES_READY


@workflow.defn(name="BaselineSalesHandover")
class SalesHandover(BaselineJourney):
    """Started by the store when a lead enters the sales_ready segment."""

    NAME = "bench_sales_handover"
    READS = ("company", "first_name", "interest", "lead_score")

    @workflow.run
    async def run(self, input: BaselineInput) -> JourneyResult:
        return await self.execute(self.journey)

    async def journey(self) -> str:
        name = self.profile.get("first_name") or "(no name)"
        company = self.profile.get("company") or "no company given"
        interest = self.profile.get("interest") or "unknown"
        note = (
            f"Sales-ready lead {name} ({company}), interest {interest}, "
            f"lead score {self.profile.get('lead_score')}."
        )
        self.vars["sales"] = await self.action("hand_to_sales", "notify_sales", {"note": note})
        await self.set_profile("set_stage_purchase", stage="purchase", ends="sales_ready")
        return "sales_ready"


@workflow.defn(name="BaselineReferralReward")
class ReferralReward(BaselineJourney):
    NAME = "bench_referral_reward"
    CATEGORY = Category.transactional
    READS = ("consent", "phone")

    @workflow.run
    async def run(self, input: BaselineInput) -> JourneyResult:
        return await self.execute(self.journey)

    async def journey(self) -> str:
        await self.set_profile("into_advocacy", stage="advocacy")
        args = {"amount": 10, "currency": "EUR"}
        self.vars["reward"] = await self.action("grant_reward", "grant_referral_reward", args)
        await self.send("thanks_email", Channel.email, "referral_reward/thanks")
        consent = self.profile.get("consent") or {}
        if self.profile.get("phone") and consent.get("sms"):
            await self.send("thanks_sms", Channel.sms, "referral_reward/thanks")
        await self.sleep("wait_2s", 2)
        await self.sleep("wait_1s", 1)
        if (self.profile.get("consent") or {}).get("marketing"):
            await self.send(
                "share_again", Channel.email, "referral_reward/share_again", ends="completed"
            )
        return "completed"


WIN_BACK_OFFERS = (
    SplitVariant(name="twenty", weight=50, next="coupon_twenty"),
    SplitVariant(name="fifteen", weight=50, next="coupon_fifteen"),
)
WIN_BACK_PERCENT = {"twenty": 20, "fifteen": 15}


@workflow.defn(name="BaselineWinBack")
class WinBack(BaselineJourney):
    NAME = "bench_win_back"
    EXIT_ON = frozenset({"order_placed"})
    READS = ("last_order_at",)

    @workflow.run
    async def run(self, input: BaselineInput) -> JourneyResult:
        return await self.execute(self.journey)

    async def journey(self) -> str:
        last_order = policy.parse_datetime(self.profile.get("last_order_at"))
        if last_order is not None:
            await self.sleep_until("trigger", last_order + timedelta(seconds=2))
        await self.sleep("wait_1s", 1)
        offer = self.variant("offer", WIN_BACK_OFFERS, holdout=10)
        if offer is not None:
            args = {"percent": WIN_BACK_PERCENT[offer], "valid_days": 14}
            self.vars["coupon"] = await self.action(f"coupon_{offer}", "issue_coupon", args)
        await self.send("we_miss_you", Channel.email, "win_back/we_miss_you")
        await self.sleep("wait_2s", 2)
        await self.send("win_back_reminder", Channel.email, "win_back/reminder")
        await self.sleep("wait_2s_2", 2)
        await self.set_profile("into_lapsed", stage="lapsed", ends="lapsed")
        return "lapsed"


BASELINE_WORKFLOWS: dict[str, tuple[str, type[BaselineJourney]]] = {
    "bench_welcome": ("BaselineWelcome", Welcome),
    "bench_cart_abandonment": ("BaselineCartAbandonment", CartAbandonment),
    "bench_nurture": ("BaselineNurture", Nurture),
    "bench_referral_reward": ("BaselineReferralReward", ReferralReward),
    "bench_win_back": ("BaselineWinBack", WinBack),
    "bench_sales_handover": ("BaselineSalesHandover", SalesHandover),
}
"""Journey name -> (workflow type, workflow class) of its hand-written twin."""


async def start_baseline(
    client: Client, task_queue: str, run: RunStart, *, rpc_timeout: timedelta | None = None
) -> object:
    """Start the hand-written twin of ``run.plan`` as :func:`kairos.runtime.temporal.start_journey`
    starts the interpreter: the same workflow id, policies and search attributes, no plan in the
    input.

    The dispatcher's starter (:class:`kairos.store.dispatch.JourneyStarter`) on the baseline
    side.
    """
    workflow_type, _ = BASELINE_WORKFLOWS[run.plan.name]
    return await start_run(
        client,
        task_queue,
        run,
        workflow_type,
        BaselineInput(
            customer_id=run.customer_id, run_no=run.run_no, profile=run.profile, trigger=run.trigger
        ),
        search_attributes=run.search_attributes(VERSION),
        summary=f"{run.plan.name} (hand-written) run {run.run_no} for customer "
        f"{run.customer_id}, {run.why()}",
        rpc_timeout=rpc_timeout,
    )


# --- the plain anchor -----------------------------------------------------------------------

PLAIN_WORKFLOW = "PlainTwoSends"
PLAIN_VERSION = "plain"
PLAIN_PAUSE_SECONDS = 1
# What the plain anchor sends, whatever the journey: a personalised email with the layout
# (the welcome, which reads the customer only, so it renders for every trigger).
PLAIN_TEMPLATE = "welcome/welcome"


class PlainInput(BaseModel):
    """Whom to write to, which run it is, and what (twice)."""

    customer_id: str
    journey: str
    run_no: int
    channel: Channel
    template: str
    category: Category
    trigger: Event | None = None


@workflow.defn(name=PLAIN_WORKFLOW)
class PlainTwoSends:
    """The least a Temporal workflow that sends can be: deliver, a 1 s timer, deliver.

    The same ``deliver`` activity (the store's send transaction, the render, the outbox) as
    both other sides, and nothing else: no profile, no conditions, no search attribute, no
    bookkeeping of its end. The store's signals (a goal) are accepted and ignored.
    """

    @workflow.signal(name=SIGNAL_EVENT)
    def event(self, signal: RunSignal) -> None:
        del signal

    @workflow.run
    async def run(self, input: PlainInput) -> JourneyResult:
        trigger = input.trigger
        event: dict[str, Any] = {}
        if trigger is not None:
            stamp = trigger.timestamp.isoformat() if trigger.timestamp else None
            event = {**trigger.properties, "name": trigger.name, "id": trigger.id}
            event["timestamp"] = stamp
        context = {"event": event, "journey": {"name": input.journey}}
        messages = []
        for index in (1, 2):
            if index == 2:
                await workflow.sleep(PLAIN_PAUSE_SECONDS, summary="pause")
            step = f"plain_{index}"
            messages.append(
                await workflow.execute_activity(
                    "deliver",
                    DeliverRequest(
                        key=f"{input.journey}:{input.customer_id}:{input.run_no}:{step}:1",
                        customer_id=input.customer_id,
                        journey=input.journey,
                        journey_version=PLAIN_VERSION,
                        run_no=input.run_no,
                        step=step,
                        channel=input.channel,
                        template=input.template,
                        category=input.category,
                        context=context,
                    ),
                    result_type=SendOutcome,
                    start_to_close_timeout=timedelta(minutes=1),
                    retry_policy=SEND_RETRY,
                )
            )
        return JourneyResult(outcome="completed", converted=False, messages=messages)


async def start_plain(
    client: Client, task_queue: str, run: RunStart, *, rpc_timeout: timedelta | None = None
) -> object:
    """The dispatcher's starter on the plain side: whatever the journey, the same email twice
    with a second between them, under the journey's name and category (the profile and
    timezone are not read)."""
    return await start_run(
        client,
        task_queue,
        run,
        PLAIN_WORKFLOW,
        PlainInput(
            customer_id=run.customer_id, journey=run.plan.name, run_no=run.run_no,
            channel=Channel.email, template=PLAIN_TEMPLATE, category=run.plan.category,
            trigger=run.trigger,
        ),
        rpc_timeout=rpc_timeout,
    )  # fmt: skip
