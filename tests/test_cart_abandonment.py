"""Cart abandonment, path by path: reminder within the hour, last chance the next day."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.testing import WorkflowEnvironment

from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from kairos.store.facade import Store
from tests.conftest import make_kairos, running_worker
from tests.helpers import finish, outbox, run_journey, schedule, started, timezone_at

JOURNEY = "cart_abandonment"


def shopper(now: datetime, *, phone: bool, local_hour: int = 12) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "email": "sam@example.com",
        "first_name": "Sam",
        "locale": "en",
        "timezone": timezone_at(now, local_hour),
    }
    if phone:
        profile["phone"] = "+358401234567"
    return profile


def cart(total: float) -> dict[str, Any]:
    return {"cart_total": total, "currency": "EUR", "cart_url": "https://lumo.example/cart"}


def order(now: datetime) -> dict[str, Any]:
    return {"order_id": "o-1", "total": 42.0, "currency": "EUR", "placed_at": now.isoformat()}


async def run_cart(
    env: WorkflowEnvironment,
    settings: Settings,
    store: Store,
    customer: str,
    profile: dict[str, Any],
    *,
    after_start: list[tuple[timedelta, str, dict[str, Any]]] = (),  # type: ignore[assignment]
) -> JourneyResult:
    """Identify, put something in the cart, emit ``after_start`` events, run to the end."""
    result: JourneyResult = await run_journey(
        env,
        settings,
        store,
        JOURNEY,
        customer,
        profile=profile,
        events=[("cart_updated", cart(59.9))],
        later=after_start,
    )
    return result


def steps_sent(settings: Settings) -> list[tuple[str, str]]:
    return [(m["step"], m["channel"]) for m in outbox(settings.outbox_dir)]


async def test_a_shopper_who_orders_within_the_hour_gets_nothing(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    result = await run_cart(
        ts_env, settings, store, "quick", shopper(now, phone=True),
        after_start=[(timedelta(minutes=20), "order_placed", order(now))],
    )  # fmt: skip
    assert result.outcome == "converted" and result.converted
    assert steps_sent(settings) == []


async def test_one_who_does_not_order_gets_a_reminder_then_an_sms(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    result = await run_cart(ts_env, settings, store, "slow-sms", shopper(now, phone=True))
    assert result.outcome == "completed"
    assert steps_sent(settings) == [("first_reminder", "email"), ("last_chance_sms", "sms")]
    sent_at = [m.key for m in result.messages]
    assert len(sent_at) == 2


async def test_without_a_phone_the_last_chance_comes_by_email(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    await run_cart(ts_env, settings, store, "slow-email", shopper(now, phone=False))
    assert steps_sent(settings) == [("first_reminder", "email"), ("last_chance_email", "email")]


async def test_without_sms_consent_the_last_chance_comes_by_email(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("no-sms", shopper(now, phone=True), consent={"marketing": True})
        await kairos.emit("no-sms", "cart_updated", cart(20.0))
        handle = await started(
            ts_env.client, journey_workflow_id(JOURNEY, "no-sms", 1), JourneyResult
        )
        await finish(ts_env, handle)
    assert steps_sent(settings) == [("first_reminder", "email"), ("last_chance_email", "email")]


async def test_an_order_after_the_reminder_stops_the_last_chance(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    result = await run_cart(
        ts_env, settings, store, "after-reminder", shopper(now, phone=True),
        after_start=[(timedelta(hours=3), "order_placed", order(now))],
    )  # fmt: skip
    assert result.converted
    assert steps_sent(settings) == [("first_reminder", "email")]


async def test_a_second_cart_restarts_the_clock(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("restart", shopper(now, phone=False), consent={"marketing": True})
        await kairos.emit("restart", "cart_updated", cart(59.9))
        first = await started(
            ts_env.client, journey_workflow_id(JOURNEY, "restart", 1), JourneyResult
        )
        await schedule(
            ts_env.client, settings.task_queue, "restart",
            [(timedelta(minutes=40), "cart_updated", cart(80.0))],
        )  # fmt: skip
        replaced: JourneyResult = await finish(ts_env, first)
        second = await started(
            ts_env.client, journey_workflow_id(JOURNEY, "restart", 2), JourneyResult
        )
        result: JourneyResult = await finish(ts_env, second)
    # The first run was replaced before its hour was up; the second sends both messages.
    assert replaced.outcome == "restarted" and replaced.messages == []
    assert result.outcome == "completed"
    assert steps_sent(settings) == [("first_reminder", "email"), ("last_chance_email", "email")]


async def test_an_emptied_cart_ends_the_journey_without_a_message(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    result = await run_cart(
        ts_env, settings, store, "emptied", shopper(now, phone=False),
        after_start=[(timedelta(minutes=10), "cart_updated", cart(0.0))],
    )  # fmt: skip
    assert result.outcome == "cart_emptied"
    assert steps_sent(settings) == []


async def test_the_same_event_delivered_twice_starts_one_journey(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("twice", shopper(now, phone=False), consent={"marketing": True})
        await kairos.emit("twice", "cart_updated", cart(10.0), event_id="cart-1")
        await kairos.emit("twice", "cart_updated", cart(10.0), event_id="cart-1")
        handle = await started(
            ts_env.client, journey_workflow_id(JOURNEY, "twice", 1), JourneyResult
        )
        result = await finish(ts_env, handle)
    assert len([r for r in result.records if r.kind == "wait"]) == 1
    assert [s for s, _ in steps_sent(settings)] == ["first_reminder", "last_chance_email"]


async def test_a_reminder_due_at_3am_goes_out_when_quiet_hours_end(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    # Local time is 02:xx now: the reminder falls due at 03:xx, inside 21:00-08:00.
    result = await run_cart(
        ts_env, settings, store, "night-owl", shopper(now, phone=False, local_hour=2)
    )
    deferred = [r for r in result.records if r.outcome.startswith("deferred")]
    assert deferred and "quiet hours" in deferred[0].outcome
    first = result.messages[0]
    assert first.status == "sent"
    reminder = outbox(settings.outbox_dir)[0]
    sent = datetime.fromisoformat(reminder["time"].replace("Z", "+00:00"))
    assert reminder["step"] == "first_reminder"
    # Written by the outbox at real time; the journey's own record carries virtual time.
    assert sent.tzinfo is not None
    send_record = [r for r in result.records if r.step == "first_reminder" and "sent" in r.outcome]
    local = send_record[0].at.astimezone(
        ZoneInfo(shopper(now, phone=False, local_hour=2)["timezone"])
    )
    assert (local.hour, local.minute) == (8, 0)
