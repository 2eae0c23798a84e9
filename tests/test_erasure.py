"""Forgetting a customer erases them: rows, data key, outbox messages and runs; only the
suppression of an address that had opted out survives, without the customer id."""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from kairos.runtime.outbox_files import INDEX_FILE
from kairos.store.facade import Store
from kairos.store.runs import runs_of
from tests.conftest import make_kairos, running_worker
from tests.helpers import eventually, finish, outbox, started, timezone_at

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("opted_out", [True, False])
async def test_unsubscribe_forget_and_sign_up_again_stays_opted_out(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, opted_out: bool
) -> None:
    now = await ts_env.get_current_time()
    signup = {
        "email": "ann@example.com",
        "first_name": "Ann",
        "timezone": timezone_at(now, 12),
        "signed_up_at": now.isoformat(),
        "marketing_opt_in": True,
    }
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        await kairos.emit("c-ann", "signed_up", signup, event_id="signup-1")
        await kairos.emit("c-bo", "signed_up", {**signup, "email": "bo@example.com"})
        first = await started(ts_env.client, journey_workflow_id("welcome", "c-ann", 1))

        async def welcomed() -> bool:
            return {m["customer_id"] for m in outbox(settings.outbox_dir)} == {"c-ann", "c-bo"}

        assert await eventually(welcomed, attempts=1200)
        if opted_out:
            await kairos.unsubscribe("c-ann", "marketing", source="unsubscribe link")

        forgotten = await kairos.forget("c-ann")
        # Her welcome was sent; the rest of her run was waiting: ended without a worker.
        assert forgotten.outbox_messages == 1
        assert forgotten.removed["data_keys"] == 1
        assert [r.workflow_id for r in forgotten.open_runs] == ["journey:welcome:c-ann:1"]
        assert (await first.describe()).status is WorkflowExecutionStatus.TERMINATED
        assert forgotten.suppressed == (["email (marketing)"] if opted_out else [])

        left = outbox(settings.outbox_dir)
        assert [m["customer_id"] for m in left] == ["c-bo"]
        files = {p.relative_to(settings.outbox_dir).as_posix()
                 for p in (settings.outbox_dir / "email").iterdir()}  # fmt: skip
        assert files == {left[0]["file"]}
        index = (settings.outbox_dir / INDEX_FILE).read_text()
        assert "ann@example.com" not in index and "c-ann" not in index
        assert len(list((settings.outbox_dir / ".keys").iterdir())) == 1

        # She signs up again with the same address, ticking the box again, and leaves a cart.
        await kairos.emit("c-ann", "signed_up", signup, event_id="signup-2")
        await kairos.emit("c-ann", "cart_updated", {"cart_total": 20.0, "currency": "EUR"})
        cart = await started(
            ts_env.client, journey_workflow_id("cart_abandonment", "c-ann", 1), JourneyResult
        )
        await finish(ts_env, cart)
        # Her new welcome is a run of its own: her erased first run keeps its workflow id in
        # Temporal, so the numbering carries on past it instead of colliding with it.
        again = await started(ts_env.client, journey_workflow_id("welcome", "c-ann", 2))
        assert (await again.describe()).status is not WorkflowExecutionStatus.TERMINATED
        assert [
            r.run_no for r in await runs_of(store.database, customer_id="c-ann", journey="welcome")
        ] == [2]

    record = await store.customer("c-ann")
    assert record is not None and record.consent.marketing  # her new sign-up's consent
    sent = [m["step"] for m in outbox(settings.outbox_dir) if m["customer_id"] == "c-ann"]
    decided = [(m.journey, m.status) for m in record.messages]
    if opted_out:
        # The suppression of her address outlived her erasure: nothing is sent to it.
        assert sent == []
        assert decided and all(status == "blocked" for _, status in decided)
        assert all("suppressed" in m.reason for m in record.messages)
    else:
        # Welcomed again (a new person to the store under the same id) and reminded of the cart.
        assert {journey for journey, _ in decided} == {"welcome", "cart_abandonment"}
        assert all(status == "sent" for _, status in decided)
    rows = await store.database.fetch_all("SELECT channel, scope, reason FROM suppressions")
    assert [(r["channel"], r["scope"]) for r in rows] == (
        [("email", "marketing")] if opted_out else []
    )
    assert "c-ann" not in json.dumps([dict(r) for r in rows])
    retired = await store.database.fetch_all("SELECT journey, last_run FROM retired_runs")
    assert [(r["journey"], r["last_run"]) for r in retired] == [("welcome", 1)]
