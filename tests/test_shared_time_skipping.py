"""The time-skipping server the tests share stays able to skip time, whatever a test leaves."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import Client

from kairos.runtime.codec import StaticKeys
from tests.conftest import SharedTimeSkipping, lend

pytestmark = pytest.mark.slow


async def _leave_a_run(client: Client, delay: timedelta) -> None:
    # A run of a workflow no worker has, on a queue nobody polls: when it is due, its task
    # waits for a worker for good, and the server stops skipping time.
    await client.start_workflow(
        "Nobody", id="left-behind", task_queue="nobody-polls", start_delay=delay
    )


async def test_a_run_left_behind_is_ended_and_time_still_skips_for_the_next_test() -> None:
    shared = SharedTimeSkipping()
    await shared.start()
    try:
        async with lend(shared, StaticKeys(), "first") as env:
            await _leave_a_run(env.client, timedelta(days=2))
        async with lend(shared, StaticKeys(), "second") as env:
            before = await env.get_current_time()
            # Past the run's start, which would lock time: the sleep would then take 3 days.
            await asyncio.wait_for(env.sleep(timedelta(days=3)), 15)
            assert await env.get_current_time() - before >= timedelta(days=3)
            assert await shared.skips_time()
        assert shared.restarts == 0
    finally:
        await shared.close()


async def test_a_server_that_cannot_skip_time_is_replaced_with_a_warning() -> None:
    shared = SharedTimeSkipping()
    shared.PATIENCE_SECONDS = 2.0
    await shared.start()
    try:
        assert shared.env is not None
        # In another namespace than any lent one, so ``lend`` cannot end it: as if a test's
        # run had escaped.
        config = shared.env.client.config()
        config["namespace"] = "elsewhere"
        await _leave_a_run(Client(**config), timedelta(0))
        assert not await shared.skips_time()
        with pytest.warns(UserWarning, match="time was locked .* when stuck ended"):
            async with lend(shared, StaticKeys(), "stuck"):
                pass
        assert shared.restarts == 1
        assert await shared.skips_time()
    finally:
        await shared.close()
