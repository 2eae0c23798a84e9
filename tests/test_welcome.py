"""The welcome journey, end to end on a time-skipping Temporal: weeks pass in seconds."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from kairos.store.facade import Store
from tests.conftest import make_kairos, running_worker
from tests.helpers import finish, outbox, schedule, started, timezone_at


async def test_a_new_customer_gets_welcome_tips_and_offer(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    profile = {
        "email": "ada@example.com",
        "first_name": "Ada",
        "locale": "en",
        "timezone": timezone_at(now, 12),
        "signed_up_at": now.isoformat(),
        "marketing_opt_in": True,
    }
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        await kairos.emit("ada", "signed_up", profile, event_id="signup-ada")
        handle = await started(
            ts_env.client, journey_workflow_id("welcome", "ada", 1), JourneyResult
        )
        result = await finish(ts_env, handle)

    assert result.outcome == "no_first_order"
    sent = outbox(settings.outbox_dir)
    assert [m["step"] for m in sent] == ["welcome", "onboarding_tips", "first_order_offer"]
    assert all(m["channel"] == "email" and m["to"] == "ada@example.com" for m in sent)
    first = message_from_bytes(
        (settings.outbox_dir / sent[0]["file"]).read_bytes(), policy=policy.default
    )
    assert "Ada" in first.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    # The sender is the business (customer.yaml `brand:`) at KAIROS_FROM_EMAIL.
    assert first["From"] == f"Lumo Coffee <{settings.from_email}>"
    assert first["List-Unsubscribe"]


async def test_a_customer_who_finishes_setup_gets_no_tips(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, tmp_path: Path
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        await kairos.emit(
            "bo",
            "signed_up",
            {"email": "bo@example.com", "first_name": "Bo", "timezone": timezone_at(now, 12),
             "signed_up_at": now.isoformat(), "marketing_opt_in": True},
        )  # fmt: skip
        handle = await started(
            ts_env.client, journey_workflow_id("welcome", "bo", 1), JourneyResult
        )
        # In the journey's own time, so the welcome has gone out before either arrives.
        order = {"order_id": "o-1", "total": 30.0, "currency": "EUR", "placed_at": now.isoformat()}
        await schedule(ts_env.client, settings.task_queue, "bo", [
            (timedelta(hours=1), "onboarding_completed", {"onboarded": True}),
            (timedelta(days=3), "order_placed", order),
        ])  # fmt: skip
        result = await finish(ts_env, handle)

    assert result.outcome == "converted"
    assert [m["step"] for m in outbox(settings.outbox_dir)] == ["welcome"]
