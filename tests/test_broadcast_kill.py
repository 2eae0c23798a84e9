"""A scheduled broadcast whose worker process is killed (SIGKILL) mid-group: once a worker runs
again, every member of the group is entered exactly once. Real dev server, real PostgreSQL, the
first worker a ``kairos worker`` process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time

import pytest
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    WorkflowExecutionStatus,
)
from temporalio.testing import WorkflowEnvironment

from kairos.language.project import Project
from kairos.runtime.config import Settings
from kairos.runtime.contract import JOURNEY_WORKFLOW, journey_workflow_id
from kairos.runtime.schedules import BROADCAST_WORKFLOW, DEFAULT_ZONE, GroupResult, schedule_id
from kairos.store.broadcasts import BATCH, BroadcastStore, MemberStatus, event_id
from kairos.store.facade import Store
from kairos.tools.broadcast import create_schedules, plan_schedule
from tests.commands import KAIROS, command_env
from tests.conftest import running_worker
from tests.helpers import eventually
from tests.test_broadcast import SEGMENT, add_regulars, scalar

MEMBERS = 3 * BATCH


@contextlib.asynccontextmanager
async def worker_process(
    client: Client, settings: Settings
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``kairos worker`` on the test's store and task queue, in a process of its own."""
    env = command_env(
        KAIROS_DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=client.service_client.config.target_host,
        KAIROS_TASK_QUEUE=settings.task_queue,
        KAIROS_OUTBOX=settings.outbox_dir,
    )
    process = await asyncio.create_subprocess_exec(
        str(KAIROS), "worker", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.timeout(600)  # a worker process to start, a heartbeat to time out, a busy machine
async def test_a_group_whose_worker_is_killed_mid_way_enters_everyone_once_on_the_next_worker(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, project: Project
) -> None:
    # Customer ids of this test's own: the dev server is shared with the suite's other
    # broadcast tests, whose flash-sale workflows for m-000001... may still be running, and a
    # start under a running workflow's id is taken as already made.
    await add_regulars(store, settings, MEMBERS, prefix=f"kill{uuid.uuid4().hex[:8]}")
    client = dev_env.client
    planned = await plan_schedule(
        BroadcastStore(store),
        project.plans["flash_sale"],
        project.segments[SEGMENT],
        datetime.now(UTC),
        at=time(10, 0),
        day=None,
        zone=DEFAULT_ZONE,
        broadcast_id="killed-worker",
    )
    await create_schedules(client, settings.task_queue, planned)
    schedule = client.get_schedule_handle(schedule_id(planned.broadcast, DEFAULT_ZONE))
    broadcasts = BroadcastStore(store)

    async with worker_process(client, settings) as worker:
        await schedule.trigger()  # the moment comes: the group's workflow starts

        async def some_entered() -> bool:
            if worker.returncode is not None:
                raise AssertionError(f"the worker exited with {worker.returncode}")
            return (await broadcasts.counts(planned.broadcast))[MemberStatus.enrolled] > 0

        await eventually(some_entered, attempts=1200)  # the worker takes seconds to start
        worker.kill()  # SIGKILL: no drain, no goodbye to Temporal
        await worker.wait()
    counts = await broadcasts.counts(planned.broadcast)
    before = counts[MemberStatus.enrolled]
    assert 0 < before < MEMBERS and counts[MemberStatus.pending] == MEMBERS - before

    # A worker runs again: the attempt the kill ended times out on its heartbeat and is retried.
    description = await schedule.describe()
    [action] = description.info.recent_actions
    assert isinstance(action.action, ScheduleActionExecutionStartWorkflow)
    workflow_id = action.action.workflow_id
    async with running_worker(client, settings, store):
        handle = client.get_workflow_handle(workflow_id, result_type=GroupResult)
        # A 30 s heartbeat timeout, then 300 starts and journeys: at a load of 16 on two
        # cores that took over 90 s once.
        result = await asyncio.wait_for(handle.result(), timeout=300)
        history = await handle.fetch_history()
    assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    # The attempt that finished entered the rest (an attempt between, timed out on a machine
    # too busy to heartbeat in time, may have entered some of them).
    assert (result.added, result.refused) == (0, 0) and result.enrolled <= MEMBERS - before
    started = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
    assert started[-1].activity_task_started_event_attributes.attempt >= 2

    assert await broadcasts.counts(planned.broadcast) == {
        MemberStatus.pending: 0,
        MemberStatus.enrolled: MEMBERS,
        MemberStatus.refused: 0,
    }
    # Exactly once in the store: one start event, one entry and one run per member ...
    start_event = event_id(planned.broadcast)
    assert await scalar(store, "SELECT count(*) FROM events WHERE id = %s", start_event) == MEMBERS
    assert await scalar(store, "SELECT count(*) FROM runs WHERE journey = 'flash_sale'") == MEMBERS
    assert await scalar(store, "SELECT max(entries) FROM journey_entries") == 1
    assert await scalar(store, "SELECT count(*) FROM dispatches") == 0
    # ... and in Temporal: one journey workflow each (described one by one: the dev server's
    # visibility, shared with the rest of the suite, can lag a count by minutes), one broadcast.
    query = f"TaskQueue = '{settings.task_queue}'"
    rows = await store.database.fetch_all("SELECT customer_id, run_no FROM runs")
    assert len(rows) == MEMBERS
    for row in rows:
        workflow_id = journey_workflow_id("flash_sale", row["customer_id"], row["run_no"])
        found = await client.get_workflow_handle(workflow_id).describe()
        assert (found.workflow_type, found.task_queue) == (JOURNEY_WORKFLOW, settings.task_queue)

    async def one_group() -> bool:
        groups = await client.count_workflows(f"{query} AND WorkflowType = '{BROADCAST_WORKFLOW}'")
        assert groups.count <= 1
        return groups.count == 1

    await eventually(one_group, attempts=1200)
