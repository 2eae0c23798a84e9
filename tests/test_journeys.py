"""The other journeys and the policies every send goes through, on time-skipping Temporal."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from kairos.client import Kairos
from kairos.compiler import Project
from kairos.config import Settings
from kairos.plan import Channel, JourneyPlan, SendStep, WaitStep
from kairos.runtime import CustomerInput, CustomerView, JourneyResult, journey_workflow_id
from tests.conftest import running_worker
from tests.helpers import (
    eventually,
    finish,
    outbox,
    run_journey,
    schedule,
    started,
    timezone_at,
)


def person(now: datetime, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": f"{name}@example.com",
        "first_name": name.capitalize(),
        "locale": "en",
        "timezone": timezone_at(now, 12),
        **extra,
    }


def sent_steps(settings: Settings) -> list[str]:
    return [m["step"] for m in outbox(settings.outbox_dir)]


async def test_a_lead_who_engages_is_handed_to_sales(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    kairos = Kairos(ts_env.client, settings, project)
    async with running_worker(ts_env.client, settings, project):
        await kairos.emit("lea", "lead_captured", person(now, "lea", interest="espresso"))
        handle = await started(ts_env.client, journey_workflow_id("nurture", "lea"), JourneyResult)
        await schedule(ts_env.client, settings.task_queue, "lea", [
            (timedelta(hours=5), "webinar_attended", {"webinar_id": "w1"}),
            (timedelta(hours=30), "pricing_viewed", {"plan": "home"}),
        ])  # fmt: skip
        result = await finish(ts_env, handle)
        view = await kairos.customer("lea")
    assert result.outcome == "sales_ready"
    assert sent_steps(settings) == ["send_email_nurture_espresso_1"]
    assert view.stage == "purchase" and view.profile["lead_score"] == 50
    actions = (settings.outbox_dir / "actions.jsonl").read_text().splitlines()
    assert [json.loads(a)["action"] for a in actions] == ["notify_sales"]


async def test_a_quiet_lead_gets_the_series_and_is_not_ready(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    result = await run_journey(
        ts_env,
        settings,
        project,
        "nurture",
        "quiet",
        events=[("lead_captured", person(now, "quiet", interest="office"))],
    )
    assert result.outcome == "not_ready"
    assert sent_steps(settings) == [
        "send_email_nurture_office_1", "send_email_nurture_office_2", "lesson_3",
    ]  # fmt: skip


async def test_a_quiet_customer_is_won_back_with_a_coupon_then_marked_lapsed(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    kairos = Kairos(ts_env.client, settings, project)
    order = {"order_id": "o-1", "total": 30.0, "currency": "EUR", "placed_at": now.isoformat()}
    async with running_worker(ts_env.client, settings, project):
        await kairos.identify("wyn", person(now, "wyn"))
        await kairos.emit("wyn", "order_placed", order)
        handle = await started(ts_env.client, journey_workflow_id("win_back", "wyn"), JourneyResult)
        result = await finish(ts_env, handle)
        view = await kairos.customer("wyn")
    assert result.outcome == "lapsed" and view.stage == "lapsed"
    assert sent_steps(settings) == ["we_miss_you", "win_back_reminder"]
    first_send = next(r for r in result.records if r.step == "we_miss_you")
    assert first_send.at - now >= timedelta(days=60)
    coupon = json.loads((settings.outbox_dir / "actions.jsonl").read_text().splitlines()[0])
    eml = (settings.outbox_dir / outbox(settings.outbox_dir)[0]["file"]).read_text()
    assert coupon["result"]["code"] in eml


async def test_a_customer_who_unsubscribed_from_marketing_gets_no_win_back(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    kairos = Kairos(ts_env.client, settings, project)
    order = {"order_id": "o-2", "total": 30.0, "currency": "EUR", "placed_at": now.isoformat()}
    async with running_worker(ts_env.client, settings, project):
        await kairos.identify("nope", person(now, "nope"))
        await kairos.unsubscribe("nope", "marketing")
        await kairos.emit("nope", "order_placed", order)
        handle = await started(
            ts_env.client, journey_workflow_id("win_back", "nope"), JourneyResult
        )
        result = await finish(ts_env, handle)
        view = await kairos.customer("nope")
    assert sent_steps(settings) == []
    assert [m.status for m in result.messages] == ["blocked", "blocked"]
    assert {e.reason for e in view.ledger} == {"unsubscribed from marketing"}


async def test_a_referrer_is_rewarded_thanked_and_invited_to_share_again(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    result = await run_journey(
        ts_env,
        settings,
        project,
        "referral_reward",
        "ref",
        profile=person(now, "ref", phone="+358401234567"),
        events=[("referral_converted", {"friend_first_name": "Kim"})],
    )
    assert result.outcome == "completed"
    assert sent_steps(settings) == ["thanks_email", "thanks_sms", "share_again"]


async def test_a_transactional_thank_you_ignores_a_marketing_opt_out(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    await run_journey(
        ts_env,
        settings,
        project,
        "referral_reward",
        "opt",
        profile=person(now, "opt"),
        unsubscribe=["marketing"],
        events=[("referral_converted", {"friend_first_name": "Kim"})],
    )
    assert sent_steps(settings) == ["thanks_email"]


def burst_plan(project: Project) -> JourneyPlan:
    """Four marketing emails an hour apart: the fourth breaks a 3-per-week cap."""
    steps: dict[str, Any] = {}
    for n in range(1, 5):
        steps[f"mail_{n}"] = SendStep(
            id=f"mail_{n}", channel=Channel.email, template="welcome/welcome",
            next=f"pause_{n}" if n < 4 else None,
        )  # fmt: skip
        if n < 4:
            steps[f"pause_{n}"] = WaitStep(
                id=f"pause_{n}", duration_seconds=3600, next=f"mail_{n + 1}"
            )
    welcome = project.plans["welcome"]
    return JourneyPlan(
        name="burst", locales=welcome.locales, start="mail_1", steps=steps
    ).with_version()


async def test_the_fourth_marketing_email_in_a_week_is_capped(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    burst = dataclasses.replace(project, plans={"burst": burst_plan(project)})
    kairos = Kairos(ts_env.client, settings, burst)
    async with running_worker(ts_env.client, settings, burst):
        await kairos.start("burst", "capped", person(now, "capped"))
        handle = await started(ts_env.client, journey_workflow_id("burst", "capped"), JourneyResult)
        result = await finish(ts_env, handle)
    assert [m.status for m in result.messages] == ["sent", "sent", "sent", "blocked"]
    assert result.messages[3].reason == "frequency cap: 3 marketing email per 1w reached"
    assert sent_steps(settings) == ["mail_1", "mail_2", "mail_3"]


async def test_the_customer_entity_continues_as_new_with_its_state(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    kairos = Kairos(ts_env.client, settings, project)
    async with running_worker(ts_env.client, settings, project):
        handle = await ts_env.client.start_workflow(
            "Customer", CustomerInput(customer_id="long", max_history=20),
            id="customer:long", task_queue=settings.task_queue,
        )  # fmt: skip
        first_run = handle.first_execution_run_id
        # The name is set first; the events after it push the history past its bound.
        await kairos.identify("long", {"first_name": "Lon"})
        for n in range(12):
            await kairos.emit("long", "content_viewed", {"content_id": f"c{n}"}, event_id=f"e{n}")

        async def continued() -> str | None:
            described = await ts_env.client.get_workflow_handle("customer:long").describe()
            return described.run_id if described.run_id != first_run else None

        await eventually(continued, attempts=600)

        async def renamed() -> CustomerView | None:
            try:
                view = await kairos.customer("long")
            except RPCError:  # a query can land while a run hands over to the next
                return None
            return view if view.profile.get("first_name") == "Lon" else None

        after = await eventually(renamed, attempts=600)
    # A later run answers with the profile the first run built.
    assert after.profile["first_name"] == "Lon"
