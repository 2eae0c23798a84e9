"""Small helpers shared by the runtime tests."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from kairos.runtime.contract import Event
from workflows.schedule import EventSchedule, EventScheduleWorkflow, ScheduledEvent

T = TypeVar("T")


def timezone_at(now: datetime, local_hour: int) -> str:
    """An IANA zone (fixed offset, no DST) whose clock shows about ``local_hour`` at ``now``.

    The time-skipping server starts at the real time of day, so tests pick the customer's
    timezone to make "now" the local time they need, rather than depend on when CI runs.
    """
    offset = (local_hour - now.hour + 12) % 24 - 12  # -12..+11
    # Etc/GMT names have the sign inverted: Etc/GMT-3 is UTC+3.
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def outbox(path: Path) -> list[dict[str, Any]]:
    """Every message the outbox received, oldest first."""
    index = path / "index.jsonl"
    if not index.exists():
        return []
    return [json.loads(line) for line in index.read_text(encoding="utf-8").splitlines()]


async def eventually(check: Callable[[], Awaitable[T | None]], *, attempts: int = 200) -> T:
    """Poll ``check`` until it returns something truthy (a bounded number of times)."""
    for _ in range(attempts):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


async def started(
    client: Client, workflow_id: str, result_type: type | None = None
) -> WorkflowHandle[Any, Any]:
    """The handle of a workflow once it exists (started asynchronously by routing)."""

    async def check() -> WorkflowHandle[Any, Any] | None:
        try:
            described = await client.get_workflow_handle(workflow_id).describe()
        except RPCError:
            return None
        # Pinning the run id matters on the time-skipping server: its history long-poll can
        # return empty while time jumps, and only a handle with a run id polls again.
        return client.get_workflow_handle(
            workflow_id, run_id=described.run_id, result_type=result_type
        )

    # Routing starts the run asynchronously; allow for a loaded machine.
    return await eventually(check, attempts=600)


async def finish(env: WorkflowEnvironment, handle: WorkflowHandle[Any, T]) -> T:
    """Await a run's result with time skipping unlocked, so its timers fire at once.

    The SDK only unlocks time for handles its own ``start_workflow`` returned; journeys are
    started by the routing activity, so tests unlock explicitly.
    """
    unlocked = getattr(env, "time_skipping_unlocked", None)
    if unlocked is None:
        return await handle.result()
    async with unlocked():
        return await handle.result()


async def schedule(
    client: Client,
    task_queue: str,
    customer_id: str,
    events: Sequence[tuple[timedelta, str, dict[str, Any]]],
) -> None:
    """Deliver ``events`` to a customer at their offsets from now, on the server's clock."""
    plan = EventSchedule(
        customer_id=customer_id,
        events=[
            ScheduledEvent(
                after_seconds=delay.total_seconds(),
                event=Event(id=str(uuid.uuid4()), name=name, properties=properties),
            )
            for delay, name, properties in events
        ],
    )
    await client.start_workflow(
        EventScheduleWorkflow.run, plan, id=f"schedule:{customer_id}:{uuid.uuid4()}",
        task_queue=task_queue,
    )  # fmt: skip


async def run_journey(
    env: WorkflowEnvironment,
    settings: Any,
    store: Any,
    journey: str,
    customer: str,
    *,
    profile: dict[str, Any] | None = None,
    consent: dict[str, bool] | None = None,
    unsubscribe: Sequence[str] = (),
    events: Sequence[tuple[str, dict[str, Any]]] = (),
    later: Sequence[tuple[timedelta, str, dict[str, Any]]] = (),
    run_no: int = 1,
) -> Any:
    """Identify a customer (with marketing and SMS consent unless ``consent`` says otherwise),
    opt them out of ``unsubscribe``, emit ``events``, schedule ``later`` ones, and run
    ``journey`` to its end; returns its JourneyResult."""
    from kairos.runtime.contract import JourneyResult, journey_workflow_id
    from tests.conftest import make_kairos, running_worker

    kairos = make_kairos(env.client, settings, store)
    granted = {"marketing": True, "sms": True} if consent is None else consent
    async with running_worker(env.client, settings, store):
        if profile is not None or granted:
            await kairos.identify(customer, profile or {}, consent=granted, source="test")
        for topic in unsubscribe:
            await kairos.unsubscribe(customer, topic)
        for name, properties in events:
            await kairos.emit(customer, name, properties)
        handle = await started(
            env.client, journey_workflow_id(journey, customer, run_no), JourneyResult
        )
        await schedule(env.client, settings.task_queue, customer, later)
        return await finish(env, handle)


_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """A Prometheus endpoint's samples: (name, labels) to value; the SDK's ``service_name``
    label, the same on every sample, left out."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = frozenset(
            (k, v) for k, v in _LABEL.findall(match.group(2) or "") if k != "service_name"
        )
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples
