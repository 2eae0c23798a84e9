"""The product engineer's door: validation before Temporal, and support operations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.client import (
    CustomerNotFound,
    InvalidCustomerId,
    InvalidEvent,
    InvalidProfile,
    JourneyAlreadyRunning,
    Kairos,
    UnknownJourney,
)
from kairos.compiler import Project
from kairos.config import Settings
from kairos.runtime import SA_CUSTOMER, SA_JOURNEY, SA_STEP, journey_workflow_id
from tests.conftest import running_worker
from tests.helpers import eventually, started, timezone_at


async def test_bad_input_is_rejected_at_the_door_and_never_queued(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    kairos = Kairos(ts_env.client, settings, project)
    with pytest.raises(InvalidEvent, match="unknown event 'signed_upp'"):
        await kairos.emit("c1", "signed_upp", {})
    with pytest.raises(InvalidEvent, match="'cart_total' must be a number, not 'lots'"):
        await kairos.emit("c1", "cart_updated", {"cart_total": "lots"})
    with pytest.raises(InvalidEvent, match="missing required property 'cart_total'"):
        await kairos.emit("c1", "cart_updated", {})
    with pytest.raises(InvalidProfile, match=r"E\.164"):
        await kairos.identify("c1", {"phone": "040 123"})
    with pytest.raises(InvalidCustomerId, match="customer id is required"):
        await kairos.emit("  ", "cart_updated", {"cart_total": 1})
    with pytest.raises(UnknownJourney, match="no journey named 'welcom'"):
        await kairos.start("welcom", "c1")
    with pytest.raises(CustomerNotFound):
        await kairos.customer("c1")  # nothing above reached Temporal


async def test_support_finds_cancels_and_forgets_a_customer(
    dev_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    kairos = Kairos(dev_env.client, settings, project)
    async with running_worker(dev_env.client, settings, project):
        # The dev server runs on the real clock: make it midday for Sue, outside quiet hours.
        now = datetime.now(UTC)
        signup = {"email": "sue@example.com", "signed_up_at": now.isoformat(),
                  "timezone": timezone_at(now, 12)}  # fmt: skip
        await kairos.emit("sue", "signed_up", signup)
        await kairos.emit("sue", "cart_updated", {"cart_total": 12.5, "currency": "EUR"})
        welcome = await started(dev_env.client, journey_workflow_id("welcome", "sue"))
        await started(dev_env.client, journey_workflow_id("cart_abandonment", "sue"))

        async def both_listed() -> list[str] | None:
            runs = await kairos.runs(customer_id="sue", status="running")
            names = sorted(r.journey for r in runs)
            return names if names == ["cart_abandonment", "welcome"] else None

        assert await eventually(both_listed)

        async def waiting_for_setup() -> Any:
            described = await welcome.describe()
            step = described.typed_search_attributes.get(SA_STEP)
            return described if step == "wait_for_setup" else None

        described = await eventually(waiting_for_setup, attempts=400)
        assert described.typed_search_attributes.get(SA_CUSTOMER) == "sue"
        assert described.typed_search_attributes.get(SA_JOURNEY) == "welcome"
        with pytest.raises(JourneyAlreadyRunning):
            await kairos.start("welcome", "sue")

        await kairos.cancel("cart_abandonment", "sue")
        await kairos.forget("sue")

        async def none_running() -> bool:
            return not await kairos.runs(customer_id="sue", status="running")

        assert await eventually(none_running, attempts=400)
        view = await kairos.customer("sue")
    assert view.profile == {"id": "sue", "stage": None, "consent": view.consent.model_dump()}
