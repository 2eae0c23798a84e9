"""The journey workflow's routing on its own: the repository's cart abandonment journey on
time-skipping Temporal with stub activities, without PostgreSQL, providers or templates.

Each stub answers what the real send activity would decide (sent, deferred to the morning,
rerouted to the other channel), so a routing mistake fails here on its step and count instead
of as an integration test's timeout.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from kairos.language.plan import Channel
from kairos.language.project import Project
from kairos.messages.models import SendOutcome, SendStatus
from kairos.runtime.contract import (
    UNSETTLED_SENDS,
    DeliverRequest,
    Event,
    FailedSend,
    JourneyInput,
    JourneyResult,
    ProfileSnapshot,
    RunEnd,
    RunProblems,
    journey_workflow_id,
    send_record,
)
from kairos.runtime.delivery import send_queue
from workflows.journey import (
    DELIVER_ACTIVITY,
    END_RUN_ACTIVITY,
    FAILED_SEND_ACTIVITY,
    MAX_DEFERRALS,
    NOTE_PROBLEMS_ACTIVITY,
    JourneyWorkflow,
)

Answer = Callable[[DeliverRequest, datetime], SendOutcome]


def sent(request: DeliverRequest, now: datetime) -> SendOutcome:
    return SendOutcome(key=request.key, channel=request.channel, status="sent")


class Stubs:
    """The activities a journey calls, noting what it asked for; ``answer`` decides sends."""

    def __init__(self, answer: Answer = sent) -> None:
        self.answer = answer
        self.sends: list[tuple[str, Channel]] = []
        self.send_times: list[datetime] = []
        self.ends: list[RunEnd] = []
        self.failed: list[FailedSend] = []
        self.problems: list[RunProblems] = []

    @activity.defn(name=DELIVER_ACTIVITY)
    async def deliver(self, request: DeliverRequest) -> SendOutcome:
        now = activity.info().current_attempt_scheduled_time
        self.sends.append((request.step, request.channel))
        self.send_times.append(now)
        outcome = self.answer(request, now)
        if request.end is not None and outcome.status not in UNSETTLED_SENDS:
            # Like the real activity: the run's last send records its end, with its own record.
            self.ends.append(request.end.after(send_record(request.step, outcome, now)))
        return outcome

    @activity.defn(name=END_RUN_ACTIVITY)
    async def end_run(self, end: RunEnd) -> None:
        self.ends.append(end)

    @activity.defn(name=FAILED_SEND_ACTIVITY)
    async def record_failed_send(self, failed: FailedSend) -> None:
        self.failed.append(failed)

    @activity.defn(name=NOTE_PROBLEMS_ACTIVITY)
    async def note_problems(self, problems: RunProblems) -> None:
        self.problems.append(problems)


@asynccontextmanager
async def workers(env: WorkflowEnvironment, stubs: Stubs, queue: str) -> AsyncIterator[None]:
    client = env.client
    common: list[Callable[..., Any]] = [stubs.end_run, stubs.record_failed_send]
    journeys = Worker(
        client,
        task_queue=queue,
        workflows=[JourneyWorkflow],
        activities=[*common, stubs.note_problems],
    )
    senders = [
        Worker(client, task_queue=send_queue(queue, channel), activities=[stubs.deliver])
        for channel in Channel
    ]
    async with journeys, senders[0], senders[1]:
        yield


async def abandon(
    env: WorkflowEnvironment, project: Project, stubs: Stubs, **profile: Any
) -> JourneyResult:
    """Run cart abandonment for a shopper who never orders, to its end."""
    queue = f"routing-{uuid.uuid4()}"
    plan = project.plans["cart_abandonment"]
    values = {"email": "ada@example.com", "locale": "en", "cart_total": 25.0, **profile}
    start = JourneyInput(
        plan=plan,
        customer_id="c-1",
        run_no=1,
        profile=ProfileSnapshot(version=1, values=values),
        trigger=Event(id="e-1", name="cart_updated", properties={"cart_total": 25.0}),
    )
    async with workers(env, stubs, queue):
        result: JourneyResult = await env.client.execute_workflow(
            JourneyWorkflow.run,
            start,
            id=journey_workflow_id(plan.name, "c-1", 1),
            task_queue=queue,
        )
    return result


SMS_CONSENT = {"phone": "+358401234567", "consent": {"marketing": True, "sms": True}}


async def test_a_shopper_with_sms_consent_gets_the_reminder_then_the_last_chance_sms(
    bare_ts_env: WorkflowEnvironment, project: Project
) -> None:
    stubs = Stubs()
    result = await abandon(bare_ts_env, project, stubs, **SMS_CONSENT)

    assert stubs.sends == [("first_reminder", Channel.email), ("last_chance_sms", Channel.sms)]
    assert [m.status for m in result.messages] == ["sent", "sent"]
    assert [end.outcome for end in stubs.ends] == [result.outcome]
    # The end its last send recorded carries every step the run recorded, in the same order.
    assert [(r.step, r.kind) for r in stubs.ends[0].records] == [
        (r.step, r.kind) for r in result.records
    ]
    assert stubs.failed == [] and stubs.problems == []


async def test_without_sms_consent_the_last_chance_goes_by_email(
    bare_ts_env: WorkflowEnvironment, project: Project
) -> None:
    stubs = Stubs()
    await abandon(bare_ts_env, project, stubs, phone="+358401234567", consent={"sms": False})

    assert stubs.sends == [("first_reminder", Channel.email), ("last_chance_email", Channel.email)]


async def test_an_emptied_cart_sends_nothing(
    bare_ts_env: WorkflowEnvironment, project: Project
) -> None:
    stubs = Stubs()
    result = await abandon(bare_ts_env, project, stubs, cart_total=0)

    assert stubs.sends == []
    assert result.outcome == "cart_emptied"
    assert [end.outcome for end in stubs.ends] == ["cart_emptied"]


async def test_a_rerouted_send_goes_again_on_the_channel_policy_picked(
    bare_ts_env: WorkflowEnvironment, project: Project
) -> None:
    def sms_cannot(request: DeliverRequest, now: datetime) -> SendOutcome:
        if request.channel is Channel.sms:
            return SendOutcome(key=request.key, channel=Channel.email, status=SendStatus.rerouted)
        return sent(request, now)

    stubs = Stubs(sms_cannot)
    result = await abandon(bare_ts_env, project, stubs, **SMS_CONSENT)

    # The same step, once on each channel's queue: the fallback is not a new message.
    assert stubs.sends == [
        ("first_reminder", Channel.email),
        ("last_chance_sms", Channel.sms),
        ("last_chance_sms", Channel.email),
    ]
    assert [(m.channel, m.status) for m in result.messages] == [
        (Channel.email, "sent"),
        (Channel.email, "sent"),
    ]


async def test_a_deferred_send_is_asked_again_when_it_may_go(
    bare_ts_env: WorkflowEnvironment, project: Project
) -> None:
    morning: list[datetime] = []

    def quiet_once(request: DeliverRequest, now: datetime) -> SendOutcome:
        if request.step == "first_reminder" and not morning:
            morning.append(now + timedelta(hours=9))
            return SendOutcome(
                key=request.key, channel=request.channel, status="deferred",
                reason="quiet hours", defer_until=morning[0],
            )  # fmt: skip
        return sent(request, now)

    stubs = Stubs(quiet_once)
    result = await abandon(bare_ts_env, project, stubs)

    assert stubs.sends[:2] == [("first_reminder", Channel.email)] * 2
    assert stubs.send_times[1] >= morning[0]
    assert [m.status for m in result.messages] == ["sent", "sent"]


async def test_a_send_deferred_again_and_again_is_given_up_as_blocked(
    bare_ts_env: WorkflowEnvironment, project: Project
) -> None:
    def always_later(request: DeliverRequest, now: datetime) -> SendOutcome:
        return SendOutcome(
            key=request.key, channel=request.channel, status="deferred",
            reason="frequency cap", defer_until=now + timedelta(hours=1),
        )  # fmt: skip

    stubs = Stubs(always_later)
    result = await abandon(bare_ts_env, project, stubs)

    reminders = [s for s in stubs.sends if s[0] == "first_reminder"]
    assert len(reminders) == MAX_DEFERRALS + 1
    assert result.messages[0].status == "blocked"
    assert result.messages[0].reason == "deferred too often"
