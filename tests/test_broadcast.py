"""Broadcasts on real PostgreSQL and Temporal: a segment's members enter a journey exactly once,
however often the broadcast is stopped and run again."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from benchmarks.broadcast import give_keys
from kairos.language.project import Project
from kairos.runtime.client import Kairos
from kairos.runtime.config import Settings
from kairos.runtime.crypto import MasterKeys
from kairos.store.broadcasts import BroadcastStore, MemberStatus, event_id, reach
from kairos.store.facade import Store
from kairos.tools.broadcast import BroadcastError, BroadcastRun
from tests.commands import command_env, documented, run, temporal_fixture  # noqa: F401
from tests.conftest import make_kairos, project_store, running_worker
from tests.helpers import eventually

SEGMENT = "sms_subscribers_retention"


async def add_regulars(store: Store, settings: Settings, count: int, prefix: str = "m") -> None:
    """``count`` customers in the segment (retention, SMS and marketing consent, a phone, two
    orders) and a few who are not, written in bulk, each with their data key."""
    async with store.database.transaction() as conn:
        await conn.execute(
            "INSERT INTO customers (id, profile, stage)"
            " SELECT %s || '-' || lpad(i::text, 6, '0'),"
            "  jsonb_build_object('phone', '+35840' || lpad(i::text, 7, '0'), 'locale', 'fi',"
            "   'timezone', 'Europe/Helsinki'),"
            "  CASE WHEN i <= %s THEN 'retention' ELSE 'consideration' END"
            " FROM generate_series(1, %s + 25) i",
            (prefix, count, count),
        )
        await conn.execute(
            "INSERT INTO consent (customer_id, topic, granted, source, changed_at)"
            " SELECT c.id, t, true, 'test', now() FROM customers c,"
            " unnest(ARRAY['sms', 'marketing']) t"
        )
        await conn.execute(
            "INSERT INTO events (customer_id, id, name, properties, occurred_at)"
            " SELECT c.id, 'o' || k, 'order_placed', '{}', now() FROM customers c,"
            " generate_series(1, 2) k"
        )
        await give_keys(conn, MasterKeys(settings.master_key, settings.master_key_previous))


def broadcast_of(kairos: Kairos, project: Project) -> BroadcastRun:
    plan = project.plans["flash_sale"]
    return BroadcastRun(kairos, plan, project.segments[SEGMENT], rate=100_000)


async def scalar(store: Store, query: str, *params: object) -> int:
    row = await store.database.fetch_one(query, params or None)
    assert row is not None
    return int(next(iter(row.values())))


@pytest.mark.timeout(600)
async def test_ten_thousand_members_enter_once_across_a_broadcast_stopped_halfway(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, project: Project
) -> None:
    members = 10_000
    await add_regulars(store, settings, members)
    # Already on a flash sale: entry after_exit keeps them out of this one.
    await make_kairos(dev_env.client, settings, store).start("flash_sale", "m-000007")

    # The first process: stopped (Ctrl-C) once half the members are in; its connections go.
    async with project_store(settings, project) as first_store:
        first = broadcast_of(make_kairos(dev_env.client, settings, first_store), project)
        begun = await first.begin(None, datetime.now(UTC))
        assert begun.targeted == members
        halfway = asyncio.Event()
        first.on_member = lambda _: (
            halfway.set() if first.progress.enrolled >= members // 2 else None
        )
        running = asyncio.create_task(first.run(begun))
        await halfway.wait()
        running.cancel()  # whatever is in flight stops where it is
        with pytest.raises(asyncio.CancelledError):
            await running
    broadcasts = BroadcastStore(store)
    left = (await broadcasts.counts(begun.id))[MemberStatus.pending]
    assert 0 < left <= members - members // 2

    # The same command again: the unfinished broadcast is taken up, not begun anew.
    kairos = make_kairos(dev_env.client, settings, store)
    second = broadcast_of(kairos, project)
    resumed = await second.begin(None, datetime.now(UTC))
    assert resumed.id == begun.id
    assert await second.run(resumed) is True
    assert second.progress.enrolled + second.progress.refused == left

    counts = await broadcasts.counts(begun.id)
    assert counts == {
        MemberStatus.pending: 0,
        MemberStatus.enrolled: members - 1,
        MemberStatus.refused: 1,
    }
    refused = await store.database.fetch_one(
        "SELECT customer_id, reason FROM broadcast_members WHERE status = 'refused'"
    )
    assert refused == {
        "customer_id": "m-000007",
        "reason": "flash_sale is already running for m-000007 (entry: after_exit)",
    }
    # Exactly once in the store: one start event, one entry, one run per member.
    assert await scalar(store, "SELECT count(*) FROM events WHERE id = %s", event_id(begun.id)) == (
        members
    )
    assert await scalar(store, "SELECT count(*) FROM runs WHERE journey = 'flash_sale'") == members
    assert await scalar(store, "SELECT max(entries) FROM journey_entries") == 1
    # ... and in Temporal: every start made (none left in the outbox), one workflow each.
    assert await scalar(store, "SELECT count(*) FROM dispatches") == 0

    async def all_started() -> bool:
        found = await dev_env.client.count_workflows(f"TaskQueue = '{settings.task_queue}'")
        return found.count == members

    await eventually(all_started)

    # A third run has nothing left to do.
    third = broadcast_of(kairos, project)
    assert await third.run(await third.begin(begun.id, datetime.now(UTC))) is True
    assert (third.progress.enrolled, third.progress.refused) == (0, 0)


async def test_a_start_the_crash_left_in_the_outbox_is_made_by_the_next_run(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, project: Project
) -> None:
    await add_regulars(store, settings, 3, prefix="o")
    kairos = make_kairos(dev_env.client, settings, store)
    run = broadcast_of(kairos, project)
    begun = await run.begin("friday-sale", datetime.now(UTC))
    # The process died between the store's transaction and the Temporal call.
    status, accepted = await run.store.enter(begun.id, run.plan, "o-000002")
    assert status is MemberStatus.enrolled and accepted is not None
    assert await scalar(store, "SELECT count(*) FROM dispatches") == 1

    again = broadcast_of(kairos, project)
    assert await again.run(await again.begin("friday-sale", datetime.now(UTC))) is True
    assert again.progress.enrolled == 2  # the other two; o-000002 was entered before
    assert await scalar(store, "SELECT count(*) FROM dispatches") == 0
    handle = dev_env.client.get_workflow_handle("journey:flash_sale:o-000002:1")
    assert (await handle.describe()).task_queue == settings.task_queue

    # What `kairos report` shows of it: one text sent, one blocked, one converted.
    async with store.database.transaction() as conn:
        await conn.execute(
            "INSERT INTO messages (key, customer_id, journey, run_no, step, channel, category,"
            " priority, status, reason, due_at, decided_at, sent_at) VALUES"
            " ('k1', 'o-000001', 'flash_sale', 1, 'flash_sale', 'sms', 'marketing', 0, 'sent',"
            "  '', now(), now(), now()),"
            " ('k2', 'o-000002', 'flash_sale', 1, 'flash_sale', 'sms', 'marketing', 0,"
            "  'blocked', 'sms consent withdrawn', now(), now(), NULL)"
        )
        await conn.execute(
            "UPDATE runs SET ended_at = now(), outcome = 'converted' WHERE customer_id = 'o-000003'"
        )
    [found] = await reach(store.database, "flash_sale", None)
    assert (found.broadcast, found.targeted, found.entered, found.kept_out) == (
        "friday-sale",
        3,
        3,
        0,
    )
    assert (found.sent, found.blocked, found.converted) == (1, {"sms consent withdrawn": 1}, 1)
    assert await reach(store.database, "win_back", None) == []


async def test_an_id_names_one_journey_and_segment(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, project: Project
) -> None:
    kairos = make_kairos(dev_env.client, settings, store)
    await broadcast_of(kairos, project).begin("sale", datetime.now(UTC))
    other = BroadcastRun(kairos, project.plans["win_back"], project.segments[SEGMENT], rate=1_000)
    with pytest.raises(BroadcastError, match="broadcast 'sale' is of flash_sale to "):
        await other.begin("sale", datetime.now(UTC))


async def test_the_documented_broadcast_and_its_rerun(
    temporal: WorkflowEnvironment, settings: Settings, store: Store, tmp_path: Path
) -> None:
    await add_regulars(store, settings, 3, prefix="doc")
    env = command_env(
        KAIROS_DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=temporal.client.service_client.config.target_host,
        KAIROS_TASK_QUEUE=settings.task_queue,
        KAIROS_OUTBOX=settings.outbox_dir,
    )
    command = documented("kairos broadcast flash_sale --segment sms_subscribers_retention")
    refused = await run(command, env)  # no worker yet: nobody is entered
    assert refused.code == 1 and "no worker is polling task queue" in refused.err
    assert await scalar(store, "SELECT count(*) FROM broadcasts") == 0
    # By day or night: the texts go the moment the members enter (no quiet hours here).
    awake = dataclasses.replace(settings, quiet_hours=None)
    async with running_worker(temporal.client, awake, store):
        sent = await run(command, env)
        assert sent.code == 0, sent.output
        assert re.search(r"in the segment when it began\s*│\s*3 │", sent.out), sent.out
        assert re.search(r"entered the journey\s*│\s*3 │", sent.out), sent.out
        first = await store.database.fetch_one("SELECT id FROM broadcasts")
        assert first is not None
        again = await run(f"{command} --id {first['id']} --json", env)
        assert again.code == 0, again.output
        assert json.loads(again.out)["members"] == {"pending": 0, "enrolled": 3, "refused": 0}

        # The sale has no wait of its own: each text goes at once and the run ends, so the
        # next sale's broadcast enters everyone again (entry: after_exit).
        async def ended() -> bool:
            done = "SELECT count(*) FROM runs WHERE journey = 'flash_sale' AND ended_at IS NOT NULL"
            return await scalar(store, done) == 3

        await eventually(ended, attempts=600)
        texts = "SELECT count(*) FROM messages WHERE journey = 'flash_sale' AND status = 'sent'"
        assert await scalar(store, texts) == 3
        other = await run(f"{command} --id next-sale --json", env)
    assert other.code == 0, other.output
    summary = json.loads(other.out)
    assert summary["members"] == {"pending": 0, "enrolled": 3, "refused": 0}
    assert (summary["targeted"], summary["finished"]) == (3, True)
    simulated = await run(
        documented("kairos simulate flash_sale --customer tests/fixtures/simulate/fia.yaml"),
        command_env(KAIROS_OUTBOX=tmp_path),
    )
    assert simulated.code == 0, simulated.output
    assert "salamatarjous" in simulated.out
