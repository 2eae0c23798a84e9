"""The product engineer's door: validation before anything is recorded, events that survive a
Temporal outage, and the support operations on the customer store."""

from __future__ import annotations

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from kairos.runtime.client import (
    CustomerNotFound,
    InvalidCustomerId,
    InvalidEvent,
    InvalidProfile,
    JourneyAlreadyRunning,
    NoRunningJourney,
    UnknownJourney,
)
from kairos.runtime.codec import data_converter
from kairos.runtime.config import Settings
from kairos.runtime.contract import SA_CUSTOMER, SA_JOURNEY, journey_workflow_id
from kairos.store.facade import Store
from kairos.worker import dispatcher
from tests.commands import temporal_fixture  # noqa: F401 (the temporal fixture)
from tests.conftest import make_kairos, running_worker
from tests.helpers import eventually, started, timezone_at


async def offline_client(store: Store) -> Client:
    """A client whose Temporal is unreachable: every call fails as in an outage."""
    converter = data_converter(store.keys)
    return await Client.connect("127.0.0.1:1", data_converter=converter, lazy=True)


async def test_bad_input_is_refused_at_the_door_and_nothing_is_recorded(
    settings: Settings, store: Store
) -> None:
    kairos = make_kairos(await offline_client(store), settings, store)
    with pytest.raises(InvalidEvent, match="unknown event 'signed_upp'"):
        await kairos.emit("c1", "signed_upp", {})
    with pytest.raises(InvalidEvent, match="'cart_total' must be a number, not 'lots'"):
        await kairos.emit("c1", "cart_updated", {"cart_total": "lots"})
    with pytest.raises(InvalidEvent, match="missing required property 'cart_total'"):
        await kairos.emit("c1", "cart_updated", {})
    with pytest.raises(InvalidProfile, match=r"E\.164"):
        await kairos.identify("c1", {"phone": "040 123"})
    with pytest.raises(InvalidProfile, match="consent: 'newsletter' must be one of"):
        await kairos.identify("c1", {}, consent={"newsletter": True})
    with pytest.raises(InvalidCustomerId, match="customer id is required"):
        await kairos.emit("  ", "cart_updated", {"cart_total": 1})
    with pytest.raises(UnknownJourney, match=r"no journey named 'welcom' \(journeys: cart_"):
        await kairos.start("welcom", "c1")
    with pytest.raises(CustomerNotFound):
        await kairos.unsubscribe("c1", "sms")
    with pytest.raises(CustomerNotFound):
        await kairos.customer("c1")
    assert await store.database.fetch_all("SELECT id FROM customers") == []


async def test_an_event_accepted_while_temporal_is_down_starts_its_journey_later(
    temporal: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    offline = make_kairos(await offline_client(store), settings, store)
    signup = {"email": "ola@example.com", "marketing_opt_in": True}
    accepted = await offline.record("ola", "signed_up", signup, event_id="signup-ola")

    assert (accepted.started, accepted.pending) == ({"welcome": 1}, 1)
    sweeper = dispatcher(store, temporal.client, settings.task_queue)

    async def swept() -> int:
        return await sweeper.sweep()

    assert await eventually(swept, attempts=400) == 1
    handle = await started(temporal.client, journey_workflow_id("welcome", "ola", 1))
    described = await handle.describe()
    assert described.typed_search_attributes.get(SA_CUSTOMER) == "ola"
    again = await offline.record("ola", "signed_up", signup, event_id="signup-ola")
    assert again.duplicate and not again.started


async def test_support_finds_cancels_and_forgets_a_customer(
    temporal: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    kairos = make_kairos(temporal.client, settings, store)
    async with running_worker(temporal.client, settings, store):
        now = await temporal.get_current_time()
        # The dev server runs on the real clock: make it midday for Sue, outside quiet hours.
        signup = {"email": "sue@example.com", "timezone": timezone_at(now, 12),
                  "marketing_opt_in": True}  # fmt: skip
        await kairos.emit("sue", "signed_up", signup)
        await kairos.emit("sue", "cart_updated", {"cart_total": 12.5, "currency": "EUR"})
        welcome = await started(temporal.client, journey_workflow_id("welcome", "sue", 1))
        cart = await started(temporal.client, journey_workflow_id("cart_abandonment", "sue", 1))

        async def considering() -> bool:
            record = await store.customer("sue")
            return record is not None and record.stage == "consideration"

        assert await eventually(considering, attempts=1200)  # welcome's set step has run
        running = await kairos.runs(customer_id="sue", running=True)
        assert sorted((r.journey, r.run_no, r.status) for r in running) == [
            ("cart_abandonment", 1, "running"),
            ("welcome", 1, "running"),
        ]
        assert (await welcome.describe()).typed_search_attributes.get(SA_JOURNEY) == "welcome"
        with pytest.raises(JourneyAlreadyRunning, match=r"sue has been through welcome before"):
            await kairos.start("welcome", "sue")

        cancelled = await kairos.cancel("cart_abandonment", "sue")
        assert (cancelled.run_no, cancelled.status) == (1, "cancelled")
        with pytest.raises(NoRunningJourney):
            await kairos.cancel("cart_abandonment", "sue")

        events = await store.database.fetch_all("SELECT name FROM events WHERE customer_id = 'sue'")
        # Her two events, welcome's set step, and the start that was refused.
        assert sorted(e["name"] for e in events) == ["$set", "$start", "cart_updated", "signed_up"]
        forgotten = await kairos.forget("sue")
        assert [r.workflow_id for r in forgotten.open_runs] == ["journey:welcome:sue:1"]
        assert (forgotten.removed["events"], forgotten.removed["runs"]) == (4, 2)

        # Forgotten: terminated, as no worker can read her history any more; the cancelled cart
        # too, unless the worker had finished cancelling it before.
        assert (await welcome.describe()).status is WorkflowExecutionStatus.TERMINATED
        assert (await cart.describe()).status in (
            WorkflowExecutionStatus.CANCELED,
            WorkflowExecutionStatus.TERMINATED,
        )
    with pytest.raises(CustomerNotFound):
        await kairos.customer("sue")
    assert await kairos.runs(customer_id="sue") == []
