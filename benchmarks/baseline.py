"""The benchmark journeys written by hand as plain Temporal workflows: the baseline.

Each workflow does what its YAML twin in benchmarks/journeys does, step for step, the way one
would write it directly against the Temporal SDK: sends are the same ``deliver`` activity (so the
same customer entity decides policy with ``reserve_send``), actions the same ``run_action``
activity, ``set`` steps the same ``update_profile`` signal to the entity. They are started by
the same routing (:class:`BaselineRouting` differs only in the workflow type it starts), keep
the same workflow ids, answer the same ``event`` and ``trigger`` signals, and give support the
same search attributes (customer, journey, current step while waiting, outcome). What they do
not do is interpret a plan: conditions are Python, the step order is code. The difference in
cost between the two is therefore the cost of interpreting YAML.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar, NoReturn

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from kairos import policy
    from kairos.messages import SendOutcome
    from kairos.plan import Category, Channel, SplitVariant
    from kairos.runtime import (
        SA_OUTCOME,
        SA_STEP,
        SIGNAL_EVENT,
        SIGNAL_PROFILE,
        SIGNAL_TRIGGER,
        ActionRequest,
        DeliverRequest,
        Event,
        JourneyResult,
        ProfileChange,
        RoutedEvent,
        customer_workflow_id,
    )
    from workflows.journey import ACTION_RETRY, SEND_RETRY

VERSION = "hand-written"
CONVERTED = "converted"


class BaselineInput(BaseModel):
    """Whom the journey is for, the profile the entity knew when it started, and why."""

    customer_id: str
    profile: dict[str, Any] = {}
    trigger: Event | None = None


class _Interrupted(Exception):
    """A goal event (exit_on) or a new trigger (entry restart) arrived: the steps stop."""


class BaselineJourney:
    """What every hand-written journey shares: signals, and one helper per kind of step."""

    NAME: ClassVar[str]
    CATEGORY: ClassVar[Category] = Category.marketing
    PRIORITY: ClassVar[int] = 50
    EXIT_ON: ClassVar[frozenset[str]] = frozenset()
    RESTARTS: ClassVar[bool] = False

    @workflow.init
    def __init__(self, input: BaselineInput) -> None:
        self.customer_id = input.customer_id
        self.profile = dict(input.profile)
        self.trigger = input.trigger
        self.run_key = input.trigger.id if input.trigger else ""
        self.vars: dict[str, Any] = {}
        self.inbox: list[Event] = []
        self.goal: Event | None = None
        self.restart: Event | None = None
        self.messages: list[SendOutcome] = []
        self.held_out = False

    @workflow.signal(name=SIGNAL_EVENT)
    def event(self, routed: RoutedEvent) -> None:
        self.profile.update(routed.profile)
        if routed.event.name in self.EXIT_ON:
            self.goal = routed.event
        else:
            self.inbox.append(routed.event)

    @workflow.signal(name=SIGNAL_TRIGGER)
    def retrigger(self, routed: RoutedEvent) -> None:
        if self.RESTARTS and (self.trigger is None or routed.event.id != self.trigger.id):
            self.profile.update(routed.profile)
            self.restart = routed.event

    async def execute(self, steps: Callable[[], Awaitable[str]]) -> JourneyResult:
        """Run ``steps`` (which return the outcome), ending early on a goal or a restart."""
        if not self.run_key:
            self.run_key = workflow.info().run_id
        try:
            outcome = await steps()
        except _Interrupted:
            outcome = CONVERTED
        if self.restart is not None:
            self._continue_with(self.restart)
        workflow.upsert_search_attributes([SA_STEP.value_unset(), SA_OUTCOME.value_set(outcome)])
        return JourneyResult(
            outcome=outcome, converted=outcome == CONVERTED, messages=self.messages
        )

    # --- one helper per kind of step ------------------------------------------------------

    async def send(self, step: str, channel: Channel, template: str) -> SendOutcome:
        key = f"{self.NAME}:{self.customer_id}:{self.run_key}:{step}:1"
        if self.held_out:
            outcome = SendOutcome(key=key, channel=channel, status="held_out", reason="holdout")
        else:
            outcome = await workflow.execute_activity(
                "deliver",
                DeliverRequest(
                    key=key,
                    customer_id=self.customer_id,
                    journey=self.NAME,
                    journey_version=VERSION,
                    step=step,
                    channel=channel,
                    template=template,
                    category=self.CATEGORY,
                    priority=self.PRIORITY,
                    context=self._context(),
                ),
                result_type=SendOutcome,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=SEND_RETRY,
                summary=f"send {channel.value} {template}",
            )
        self.messages.append(outcome)
        self._check_goal()
        return outcome

    async def sleep(self, step: str, seconds: float) -> None:
        await self.sleep_until(step, workflow.now() + timedelta(seconds=seconds))

    async def sleep_until(self, step: str, until: datetime) -> None:
        await self._pause(step, until, lambda: False)

    async def wait_for(self, step: str, events: frozenset[str], seconds: float) -> Event | None:
        """The first of ``events`` to arrive within ``seconds``, or None on timeout."""
        self.inbox.clear()
        until = workflow.now() + timedelta(seconds=seconds)
        await self._pause(step, until, lambda: any(e.name in events for e in self.inbox))
        return next((e for e in self.inbox if e.name in events), None)

    async def set_profile(self, change: ProfileChange) -> None:
        self.profile.update(change.attributes)
        for name, amount in change.increment.items():
            current = self.profile.get(name)
            self.profile[name] = (current if isinstance(current, int | float) else 0) + amount
        if change.stage:
            self.profile["stage"] = change.stage
        customer = workflow.get_external_workflow_handle(customer_workflow_id(self.customer_id))
        await customer.signal(SIGNAL_PROFILE, change)

    async def action(self, step: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await workflow.execute_activity(
            "run_action",
            ActionRequest(
                key=f"{self.NAME}:{self.customer_id}:{self.run_key}:{step}:1",
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

    async def _pause(self, step: str, until: datetime, done: Any) -> None:
        remaining = until - workflow.now()
        if remaining > timedelta(0):
            workflow.upsert_search_attributes([SA_STEP.value_set(step)])
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(
                    lambda: self.goal is not None or self.restart is not None or done(),
                    timeout=remaining,
                    timeout_summary=step,
                )
        self._check_goal()

    def _check_goal(self) -> None:
        if self.goal is not None or self.restart is not None:
            raise _Interrupted

    def _context(self) -> dict[str, Any]:
        trigger = self.trigger
        event: dict[str, Any] = {}
        if trigger is not None:
            stamp = trigger.timestamp.isoformat() if trigger.timestamp else None
            event = {**trigger.properties, "name": trigger.name, "id": trigger.id}
            event["timestamp"] = stamp
        return {"event": event, "journey": {**self.vars, "name": self.NAME}}

    def _continue_with(self, trigger: Event) -> NoReturn:
        workflow.continue_as_new(
            BaselineInput(customer_id=self.customer_id, profile=self.profile, trigger=trigger)
        )


@workflow.defn(name="BaselineWelcome")
class Welcome(BaselineJourney):
    NAME = "bench_welcome"
    PRIORITY = 60
    EXIT_ON = frozenset({"order_placed"})

    @workflow.run
    async def run(self, input: BaselineInput) -> JourneyResult:
        return await self.execute(self.journey)

    async def journey(self) -> str:
        stage = self.profile.get("stage")
        if not stage or stage == "awareness":
            await self.set_profile(ProfileChange(stage="consideration"))
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
    RESTARTS = True

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
            await self.send("last_chance_sms", Channel.sms, "cart_abandonment/last_chance")
        else:
            await self.send("last_chance_email", Channel.email, "cart_abandonment/last_chance")
        return "completed"


NURTURE_EVENTS = frozenset({"content_viewed", "pricing_viewed", "webinar_attended"})
NURTURE_POINTS = {"content_viewed": 10.0, "pricing_viewed": 15.0, "webinar_attended": 25.0}


@workflow.defn(name="BaselineNurture")
class Nurture(BaselineJourney):
    NAME = "bench_nurture"
    EXIT_ON = frozenset({"order_placed"})

    @workflow.run
    async def run(self, input: BaselineInput) -> JourneyResult:
        return await self.execute(self.journey)

    async def journey(self) -> str:
        await self.set_profile(ProfileChange(stage="consideration", increment={"lead_score": 10}))
        interest = self.profile.get("interest")
        track = interest if interest in ("espresso", "office") else "filter"
        for lesson, listen in ((1, "listen_1"), (2, "listen_2")):
            step = f"send_email_nurture_{track}_{lesson}"
            await self.send(step, Channel.email, f"nurture/{track}_{lesson}")
            if await self.listen(listen):
                return await self.hand_to_sales()
        await self.send("lesson_3", Channel.email, "nurture/live_tasting")
        if await self.listen("listen_3"):
            return await self.hand_to_sales()
        return "not_ready"

    async def listen(self, step: str) -> bool:
        """Score engagement until a quiet window; True once the lead is sales-ready."""
        while (event := await self.wait_for(step, NURTURE_EVENTS, 2)) is not None:
            increment = {"lead_score": NURTURE_POINTS[event.name]}
            await self.set_profile(ProfileChange(increment=increment))
            if (self.profile.get("lead_score") or 0) >= 50:
                return True
        return False

    async def hand_to_sales(self) -> str:
        name = self.profile.get("first_name") or "(no name)"
        company = self.profile.get("company") or "no company given"
        interest = self.profile.get("interest") or "unknown"
        note = (
            f"Sales-ready lead {name} ({company}), interest {interest}, "
            f"lead score {self.profile.get('lead_score')}."
        )
        self.vars["sales"] = await self.action("hand_to_sales", "notify_sales", {"note": note})
        await self.set_profile(ProfileChange(stage="purchase"))
        return "sales_ready"


@workflow.defn(name="BaselineReferralReward")
class ReferralReward(BaselineJourney):
    NAME = "bench_referral_reward"
    CATEGORY = Category.transactional
    RESTARTS = True

    @workflow.run
    async def run(self, input: BaselineInput) -> JourneyResult:
        return await self.execute(self.journey)

    async def journey(self) -> str:
        await self.set_profile(ProfileChange(stage="advocacy"))
        args = {"amount": 10, "currency": "EUR"}
        self.vars["reward"] = await self.action("grant_reward", "grant_referral_reward", args)
        await self.send("thanks_email", Channel.email, "referral_reward/thanks")
        consent = self.profile.get("consent") or {}
        if self.profile.get("phone") and consent.get("sms"):
            await self.send("thanks_sms", Channel.sms, "referral_reward/thanks")
        await self.sleep("wait_2s", 2)
        await self.sleep("wait_1s", 1)
        if consent.get("marketing"):
            await self.send("share_again", Channel.email, "referral_reward/share_again")
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
    RESTARTS = True

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
        await self.set_profile(ProfileChange(stage="lapsed"))
        return "lapsed"


BASELINE_WORKFLOWS: dict[str, tuple[str, type[BaselineJourney]]] = {
    "bench_welcome": ("BaselineWelcome", Welcome),
    "bench_cart_abandonment": ("BaselineCartAbandonment", CartAbandonment),
    "bench_nurture": ("BaselineNurture", Nurture),
    "bench_referral_reward": ("BaselineReferralReward", ReferralReward),
    "bench_win_back": ("BaselineWinBack", WinBack),
}
"""Journey name -> (workflow type, workflow class) of its hand-written twin."""
