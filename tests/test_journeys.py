"""The other journeys and the policies every send goes through, on time-skipping Temporal."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

from temporalio.testing import WorkflowEnvironment

from kairos.language.plan import Channel, JourneyPlan, SendStep, WaitStep
from kairos.language.project import Project
from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyInput, JourneyResult, journey_workflow_id
from kairos.store.facade import Store
from tests.conftest import make_kairos, project_store, running_worker
from tests.helpers import (
    finish,
    outbox,
    run_journey,
    schedule,
    started,
    timezone_at,
)

MARKETING = {"marketing": True}


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
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        lead = person(now, "lea", interest="espresso", marketing_opt_in=True)
        await kairos.emit("lea", "lead_captured", lead)
        handle = await started(
            ts_env.client, journey_workflow_id("nurture", "lea", 1), JourneyResult
        )
        # The form +10, a live tasting +25, the prices +15: 50, sales-ready on day two.
        await schedule(ts_env.client, settings.task_queue, "lea", [
            (timedelta(hours=5), "webinar_attended", {"webinar_id": "w1"}),
            (timedelta(hours=30), "pricing_viewed", {"plan": "home"}),
        ])  # fmt: skip
        result = await finish(ts_env, handle)
        handover = await finish(
            ts_env,
            await started(
                ts_env.client, journey_workflow_id("sales_handover", "lea", 1), JourneyResult
            ),
        )
        view = await kairos.customer("lea")
    # Sales had them from day two; the series noticed at its next lesson and sent no more.
    assert (handover.outcome, result.outcome) == ("sales_ready", "handed_to_sales")
    assert sent_steps(settings) == ["send_email_nurture_espresso_1"]
    assert view.stage == "purchase" and view.profile["lead_score"] == 50
    assert [(c.topic, c.granted, c.source) for c in view.consent_history] == [
        ("marketing", True, "event lead_captured")
    ]
    actions = (settings.outbox_dir / "actions.jsonl").read_text().splitlines()
    assert [json.loads(a)["action"] for a in actions] == ["notify_sales"]


async def test_a_quiet_lead_gets_the_series_and_is_not_ready(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    result = await run_journey(
        ts_env,
        settings,
        store,
        "nurture",
        "quiet",
        events=[("lead_captured", person(now, "quiet", interest="office"))],
    )
    assert result.outcome == "not_ready"
    assert sent_steps(settings) == [
        "send_email_nurture_office_1", "send_email_nurture_office_2", "lesson_3",
    ]  # fmt: skip


async def test_a_quiet_customer_is_won_back_with_a_coupon_then_marked_lapsed(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    order = {"order_id": "o-1", "total": 30.0, "currency": "EUR", "placed_at": now.isoformat()}
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("wyn", person(now, "wyn"), consent=MARKETING)
        await kairos.emit("wyn", "order_placed", order)
        handle = await started(
            ts_env.client, journey_workflow_id("win_back", "wyn", 1), JourneyResult
        )
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
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    order = {"order_id": "o-2", "total": 30.0, "currency": "EUR", "placed_at": now.isoformat()}
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("nope", person(now, "nope"), consent=MARKETING)
        await kairos.unsubscribe("nope", "marketing")
        await kairos.emit("nope", "order_placed", order)
        handle = await started(
            ts_env.client, journey_workflow_id("win_back", "nope", 1), JourneyResult
        )
        result = await finish(ts_env, handle)
        view = await kairos.customer("nope")
    assert sent_steps(settings) == []
    assert [m.status for m in result.messages] == ["blocked", "blocked"]
    assert {m.reason for m in view.messages} == {"marketing consent withdrawn (api)"}


async def test_a_referrer_is_rewarded_thanked_and_invited_to_share_again(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    result = await run_journey(
        ts_env,
        settings,
        store,
        "referral_reward",
        "ref",
        profile=person(now, "ref", phone="+358401234567"),
        events=[("referral_converted", {"friend_first_name": "Kim"})],
    )
    assert result.outcome == "completed"
    assert sent_steps(settings) == ["thanks_email", "thanks_sms", "share_again"]


async def test_a_transactional_thank_you_ignores_a_marketing_opt_out(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    await run_journey(
        ts_env,
        settings,
        store,
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


async def test_the_fourth_marketing_email_in_a_week_waits_for_a_free_slot(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    burst = dataclasses.replace(project, plans={"burst": burst_plan(project)})
    async with project_store(settings, burst) as store:
        kairos = make_kairos(ts_env.client, settings, store)
        async with running_worker(ts_env.client, settings, store):
            await kairos.identify("capped", person(now, "capped"), consent=MARKETING)
            await kairos.start("burst", "capped")
            handle = await started(
                ts_env.client, journey_workflow_id("burst", "capped", 1), JourneyResult
            )
            result = await finish(ts_env, handle)
    assert [m.status for m in result.messages] == ["sent", "sent", "sent", "sent"]
    deferrals = [r.outcome for r in result.records if r.outcome.startswith("deferred")]
    # The third takes the last slot after holding it to the end of its minute; the fourth
    # waits until the first has left the week's window, then holds that last slot in turn.
    last_slot = "deferred: frequency cap: last slot of 3 marketing email per 1w"
    assert [d.split(";")[0] for d in deferrals] == [
        last_slot,
        "deferred: frequency cap: 3 marketing email per 1w reached",
        last_slot,
    ]
    sends = [r for r in result.records if r.kind == "send" and "sent" in r.outcome]
    assert sends[3].at - sends[0].at >= timedelta(days=7)
    assert sent_steps(settings) == ["mail_1", "mail_2", "mail_3", "mail_4"]


async def test_a_long_run_continues_as_new_with_its_place_and_messages(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    plan = store.project.plans["welcome"]
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("long", person(now, "long"), consent=MARKETING)
        handle = await ts_env.client.start_workflow(
            "Journey",
            JourneyInput(plan=plan, customer_id="long", run_no=1, max_history=25,
                         timezone_attribute="timezone"),
            id=journey_workflow_id("welcome", "long", 1), task_queue=settings.task_queue,
            result_type=JourneyResult,
        )  # fmt: skip
        # A handle the SDK's own start returned unlocks time skipping by itself.
        result = await handle.result()
        described = await handle.describe()
    assert described.run_id != handle.first_execution_run_id  # it continued as new
    assert result.outcome == "no_first_order"
    assert [m.status for m in result.messages] == ["sent", "sent", "sent"]
    assert next(r.step for r in result.records if r.kind == "send") == "welcome"
