"""The customer store's promises, each on real PostgreSQL and real Temporal.

An accepted event is routed exactly once even when the process that accepted it dies; entry
rules hold under concurrency; a run never takes its own trigger as its goal; a bad event is
refused at the door and blocks nothing; one customer's 10,000th event costs what the first did;
increments are never lost; the last cap slot goes to the higher priority; runs keep hearing
their events after their journey's YAML is deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from kairos.language.plan import Channel, EventTrigger, JourneyPlan, SendStep, WaitStep
from kairos.language.project import Project
from kairos.runtime.client import InvalidEvent
from kairos.runtime.config import FrequencyCap, Settings
from kairos.runtime.contract import Event, JourneyResult, ProfileChange, journey_workflow_id
from kairos.runtime.temporal import RunStart, start_journey
from kairos.store.dispatch import DONE_SQL, Dispatcher
from kairos.store.facade import Store
from kairos.store.ingest import Ingest
from kairos.worker import dispatcher
from tests.conftest import ROOT, make_kairos, project_store, running_worker
from tests.helpers import finish, schedule, started, timezone_at

CART = {"cart_total": 20.0, "currency": "EUR"}


def order(now: datetime, n: int) -> dict[str, Any]:
    return {"order_id": f"o-{n}", "total": 9.0, "currency": "EUR", "placed_at": now.isoformat()}


async def workflow_exists(env: WorkflowEnvironment, workflow_id: str) -> bool:
    try:
        await env.client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return True


async def pending(store: Store) -> int:
    row = await store.database.fetch_one("SELECT count(*) AS n FROM dispatches")
    return int(row["n"]) if row else 0


# --- an accepted event is never lost, and routed once ----------------------------------------


async def test_an_event_is_routed_exactly_once_when_the_accepting_process_dies(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    # Another process accepts a cart and is killed right after the commit, before any
    # Temporal call.
    script = textwrap.dedent(
        f"""
        import asyncio, dataclasses, os
        from kairos.language.project import load_project
        from kairos.runtime.config import load_settings
        from kairos.runtime.contract import Event
        from kairos.store.facade import Store

        async def main():
            settings = dataclasses.replace(
                load_settings({{"KAIROS_HOME": {str(ROOT)!r}}}, dotenv=False),
                database_url={settings.database_url!r},
            )
            store = await Store.open(settings, load_project(settings.home))
            cart = Event(id="cart-1", name="cart_updated", properties={CART!r})
            accepted = await store.accept("crash", cart)
            print(accepted.dispatches, flush=True)
            os._exit(137)

        asyncio.run(main())
        """
    )
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert (crashed.returncode, crashed.stdout.strip()) == (137, b"1"), crashed.stderr
    assert await pending(store) == 1

    # A worker's sweeper makes the call; sweeping again finds nothing to do.
    sweeper = dispatcher(store, dev_env.client, settings.task_queue)
    assert await sweeper.sweep(older_than=timedelta(0)) == 1
    assert await sweeper.sweep(older_than=timedelta(0)) == 0
    assert await workflow_exists(dev_env, journey_workflow_id("cart_abandonment", "crash", 1))
    assert not await workflow_exists(dev_env, journey_workflow_id("cart_abandonment", "crash", 2))
    routed = await store.database.fetch_one(
        "SELECT routed_at FROM events WHERE customer_id = 'crash' AND id = 'cart-1'"
    )
    assert routed is not None and routed["routed_at"] is not None


async def test_a_start_made_again_after_a_crash_finds_the_run_it_started(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    accepted = await store.accept("again", Event(id="c1", name="cart_updated", properties=CART))
    plan = store.project.plans["cart_abandonment"]
    profile = accepted.customer.snapshot(())
    run = RunStart(plan, "again", 1, profile, None, "timezone")
    # The process made the call, then died before it could delete its dispatch row.
    await start_journey(dev_env.client, settings.task_queue, run)
    sweeper = dispatcher(store, dev_env.client, settings.task_queue)
    assert await sweeper.sweep(older_than=timedelta(0)) == 1
    assert await pending(store) == 0
    with pytest.raises(WorkflowAlreadyStartedError):
        await start_journey(dev_env.client, settings.task_queue, run)


async def test_a_dispatch_cancelled_midway_leaves_no_lock_behind(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    await store.accept("halt", Event(id="c1", name="cart_updated", properties=CART))
    made: list[str] = []

    async def start(client: Client, task_queue: str, run: RunStart, **kwargs: Any) -> None:
        made.append(run.customer_id)

    def waiting(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE '%DELETE FROM dispatches%' AND pid <> pg_backend_pid()"
        ).fetchone()
        return int(row[0]) if row else 0

    with (
        psycopg.connect(settings.database_url) as other,
        psycopg.connect(settings.database_url, autocommit=True) as watcher,
    ):
        # Another session holds the dispatch row, so the call stops inside a statement, and
        # the caller gives up there (a web request whose client went away).
        other.execute("SELECT id FROM dispatches FOR UPDATE")
        stuck = Dispatcher(store.database, dev_env.client, settings.task_queue, None, start=start)
        call = asyncio.create_task(stuck.run(["halt"]))
        for _ in range(600):
            if waiting(watcher):
                break
            await asyncio.sleep(0.05)
        assert made == ["halt"] and waiting(watcher) == 1
        # It gives up again and again, while the call tidies up too.
        while not call.done():
            call.cancel()
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await call
        other.rollback()

        def locks() -> int:
            row = watcher.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            ).fetchone()
            return int(row[0]) if row else 0

        # The call's connection was closed, not lent on: its session ends (once PostgreSQL
        # notices, after the blocked statement) and the customer's lock with it.
        for _ in range(600):
            if not locks():
                break
            await asyncio.sleep(0.05)
        assert locks() == 0
    # The blocked statement may have finished on the server before its session noticed it was
    # closed (the start was made, so either is right); what is left is made at once, without
    # waiting for the lock, as the sweeper does.
    left = await pending(store)
    sweeper = Dispatcher(store.database, dev_env.client, settings.task_queue, None, start=start)
    assert await sweeper.run(["halt"], wait=False) == left
    assert await pending(store) == 0


# --- entry rules --------------------------------------------------------------------------------


async def test_entry_once_holds_under_two_concurrent_identical_triggers(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    signup = {"email": "twice@example.com", "signed_up_at": datetime.now(UTC).isoformat()}
    first, second = await asyncio.gather(
        store.accept("twice", Event(id="s1", name="signed_up", properties=signup)),
        store.accept("twice", Event(id="s2", name="signed_up", properties=signup)),
    )
    assert sorted([first.started, second.started], key=len) == [{}, {"welcome": 1}]
    # The same sign-up again, much later (a retried call with a new id): still once.
    later = await store.accept("twice", Event(id="s3", name="signed_up", properties=signup))
    assert later.started == {}
    kairos = make_kairos(dev_env.client, settings, store)
    with pytest.raises(Exception, match="has been through welcome before"):
        await kairos.start("welcome", "twice")
    entries = await store.database.fetch_all("SELECT * FROM journey_entries")
    assert [(e["journey"], e["entries"]) for e in entries] == [("welcome", 1)]


async def test_after_exit_refuses_a_second_run_while_the_first_is_open(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    lead = {"email": "l@example.com", "interest": "filter"}
    first = await store.accept("lead", Event(id="l1", name="lead_captured", properties=lead))
    second = await store.accept("lead", Event(id="l2", name="lead_captured", properties=lead))
    assert (first.started, second.started) == ({"nurture": 1}, {})
    await store.database.fetch_one(
        "UPDATE runs SET ended_at = now(), outcome = 'completed' RETURNING 1"
    )
    await store.database.fetch_one("UPDATE journey_entries SET open_run = NULL RETURNING 1")
    third = await store.accept("lead", Event(id="l3", name="lead_captured", properties=lead))
    assert third.started == {"nurture": 2}


async def test_an_event_counts_as_routed_only_once_its_last_call_is_made(store: Store) -> None:
    # One signup that starts two journeys: two calls to make, and the event is routed after both.
    async with store.database.transaction() as conn:
        await conn.execute("INSERT INTO customers (id) VALUES ('two')")
        await conn.execute(
            "INSERT INTO events (customer_id, id, name, properties, occurred_at)"
            " VALUES ('two', 'e-1', 'signed_up', '{}', now())"
        )
        for journey in ("welcome", "nurture"):
            await conn.execute(
                "INSERT INTO dispatches (customer_id, event_id, kind, journey, run_no, payload)"
                " VALUES ('two', 'e-1', 'start', %s, 1, '{}')",
                (journey,),
            )
    calls = await store.database.fetch_all("SELECT id FROM dispatches ORDER BY id")

    async def routed() -> bool:
        row = await store.database.fetch_one(
            "SELECT routed_at FROM events WHERE customer_id = 'two' AND id = 'e-1'"
        )
        return row is not None and row["routed_at"] is not None

    for call, expected in zip(calls, (False, True), strict=True):
        async with store.database.transaction() as conn:
            await conn.execute(DONE_SQL, (call["id"], call["id"]))
        assert await routed() is expected
    assert await store.database.fetch_all("SELECT id FROM dispatches") == []


# --- a run's own trigger is never its goal ------------------------------------------------------


async def test_a_trigger_is_never_delivered_to_its_own_run_as_a_goal(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    profile = {"email": "w@example.com", "timezone": timezone_at(now, 12)}
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("wb", profile, consent={"marketing": True})
        # The first order starts win-back (60 days after it); it is not the run's own goal.
        await kairos.emit("wb", "order_placed", order(now, 1), event_id="order-1")
        first = await started(
            ts_env.client, journey_workflow_id("win_back", "wb", 1), JourneyResult
        )
        # A second order three days later converts that run and starts the clock again: the
        # new run is triggered by it and must not take it as its goal either.
        again = order(now + timedelta(days=3), 2)
        await schedule(ts_env.client, settings.task_queue, "wb",
                       [(timedelta(days=3), "order_placed", again)])  # fmt: skip
        converted: JourneyResult = await finish(ts_env, first)
        second = await started(
            ts_env.client, journey_workflow_id("win_back", "wb", 2), JourneyResult
        )
        lapsed: JourneyResult = await finish(ts_env, second)
    assert converted.outcome == "converted"
    assert lapsed.outcome == "lapsed"
    assert not any(r.outcome.startswith("goal") for r in lapsed.records)
    assert [m.status for m in lapsed.messages] == ["sent", "sent"]
    runs = await kairos.runs("wb", "win_back")
    assert [(r.run_no, r.outcome) for r in runs] == [(2, "lapsed"), (1, "converted")]


# --- bad input is refused at the door and blocks nothing ---------------------------------------


def broken_trigger_plan(project: Project) -> JourneyPlan:
    """A journey whose trigger condition raises for every cart (a float compared to text)."""
    return JourneyPlan(
        name="broken",
        trigger=EventTrigger(event="cart_updated", when="event.cart_total > 'x'"),
        start="mail",
        steps={"mail": SendStep(id="mail", channel=Channel.email, template="welcome/welcome")},
        locales=project.plans["welcome"].locales,
    ).with_version()


async def test_a_huge_or_otherwise_bad_event_is_refused_at_the_door_and_blocks_nothing(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, project: Project
) -> None:
    kairos = make_kairos(dev_env.client, settings, store)
    huge = {"email": "big@example.com", "first_name": "x" * 9_000, "notes": ["y" * 9_000] * 4}
    with pytest.raises(InvalidEvent, match=r"45,\d\d\d bytes; at most 32 KB"):
        await kairos.emit("big", "signed_up", huge)
    with pytest.raises(InvalidEvent, match="first_name is 1,000,000 characters; at most 10,000"):
        await kairos.emit("big", "signed_up", {**huge, "first_name": "x" * 1_000_000})
    with pytest.raises(InvalidEvent, match="NaN or Infinity"):
        await kairos.emit("big", "cart_updated", {"cart_total": float("nan"), "currency": "EUR"})
    with pytest.raises(InvalidEvent, match="cart_total"):
        await kairos.emit("big", "cart_updated", {"cart_total": "lots", "currency": "EUR"})
    assert await store.customer("big") is None  # nothing was recorded

    # A journey whose trigger condition cannot be evaluated: the event is still accepted,
    # the other journeys still start, and the customer's next events are routed as usual.
    broken = dataclasses.replace(
        project, plans={**project.plans, "broken": broken_trigger_plan(project)}
    )
    async with project_store(settings, broken) as door:
        bad_door = make_kairos(dev_env.client, settings, door)
        accepted = await bad_door.record("big", "cart_updated", CART)
        assert accepted.started == {"cart_abandonment": 1}
        assert accepted.problems and accepted.problems[0].startswith(
            "broken: trigger condition could not be evaluated"
        )
        order_placed = await bad_door.record("big", "order_placed", order(datetime.now(UTC), 1))
        assert order_placed.signalled == [("cart_abandonment", 1)]
        assert order_placed.started == {"win_back": 1}


# --- one customer's 10,000th event costs what the first did -----------------------------------


async def _rows_read(store: Store, customer: str, event: Event) -> int:
    """Accept one event and count the rows its transaction read, across every table.

    On a connection of its own: a backend keeps counting until it flushes its statistics, so a
    pooled connection's counters would include the transactions before this one.
    """
    ingest = Ingest(store.project.catalogue, store.project.plans, store.master)
    async with (
        await psycopg.AsyncConnection.connect(store.database.url, row_factory=dict_row) as conn,
        conn.transaction(),
    ):
        await ingest.accept(conn, customer, event)
        cursor = await conn.execute(
            "SELECT sum(pg_stat_get_xact_tuples_returned(c.oid)"
            " + pg_stat_get_xact_tuples_fetched(c.oid)) AS n"
            " FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace"
            " WHERE s.nspname = 'public'"
        )
        row = await cursor.fetchone()
    return int(row["n"]) if row and row["n"] is not None else 0


@pytest.mark.timeout(300)  # a minute alone; longer next to three other test workers
async def test_ten_thousand_events_to_one_customer_keep_working_at_steady_cost(
    store: Store,
) -> None:
    def viewed(n: int) -> Event:
        return Event(id=f"v{n}", name="content_viewed", properties={"content_id": f"c{n}"})

    async def analyze() -> None:
        # Both measurements with table statistics: without any, PostgreSQL plans the tiny new
        # tables (score_points) differently, and autovacuum analyzes them at its own moment.
        async with store.database.connection() as conn:
            await conn.execute("ANALYZE")

    await store.accept("reader", viewed(0))  # the first one creates the customer
    await analyze()
    second = await _rows_read(store, "reader", viewed(1))
    for n in range(2, 9_999):
        accepted = await store.accept("reader", viewed(n))
        assert not accepted.duplicate and accepted.dispatches == 0
    await analyze()
    last = await _rows_read(store, "reader", viewed(9_999))
    # The same rows read for the 10,000th event as for the second: nothing grows with history.
    assert last == second
    counted = await store.database.fetch_one(
        "SELECT count(*) AS n, count(routed_at) AS routed FROM events WHERE customer_id = 'reader'"
    )
    assert counted is not None and (counted["n"], counted["routed"]) == (10_000, 10_000)
    assert await pending(store) == 0  # nobody listens: not one Temporal call


# --- journeys' own profile changes ------------------------------------------------------------


async def test_set_increments_survive_concurrent_events(store: Store) -> None:
    def increment(n: int) -> ProfileChange:
        return ProfileChange(key=f"score:{n}", customer_id="hot", journey="nurture", run_no=1,
                             increment={"lead_score": 10}, reads=["lead_score"])  # fmt: skip

    def noise(n: int) -> Event:
        attributes = {"first_name": f"Name{n}", "company": f"C{n}"}
        return Event(id=f"i{n}", name="$identify", properties={"attributes": attributes})

    changes = [store.change_profile(increment(n)) for n in range(40)]
    events = [store.accept("hot", noise(n)) for n in range(40)]
    results = await asyncio.gather(*changes, *events)
    # A retried set step (the same key) is applied once.
    again = await asyncio.gather(*(store.change_profile(increment(n)) for n in range(10)))
    assert all(a.duplicate for a in again)
    record = await store.customer("hot")
    assert record is not None and record.profile["lead_score"] == 400
    # Every snapshot a set step read back is newer than the ones before it in store order.
    versions = sorted(r.customer.version for r in results)
    assert len(set(versions)) == len(versions)


# --- priority decides who gets the last slot of a cap ----------------------------------------


def timed_plan(name: str, priority: int, delay_seconds: int, project: Project) -> JourneyPlan:
    """Wait until 10:00 local time (plus a few seconds), then send one marketing email."""
    steps: dict[str, Any] = {
        "at_ten": WaitStep(id="at_ten", time_of_day="10:00", next="pause"),
        "pause": WaitStep(id="pause", duration_seconds=delay_seconds, next="mail"),
        "mail": SendStep(id="mail", channel=Channel.email, template="welcome/welcome"),
    }
    return JourneyPlan(
        name=name, priority=priority, start="at_ten", steps=steps,
        locales=project.plans["welcome"].locales,
    ).with_version()  # fmt: skip


@pytest.mark.parametrize("low_first", [True, False], ids=["low-due-first", "high-due-first"])
async def test_two_journeys_competing_for_one_cap_slot_resolve_by_priority(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project, low_first: bool
) -> None:
    now = await ts_env.get_current_time()
    low = timed_plan("low", 60, 5 if low_first else 30, project)
    high = timed_plan("high", 70, 30 if low_first else 5, project)
    contest = dataclasses.replace(project, plans={"low": low, "high": high})
    capped = dataclasses.replace(settings, caps={"email": FrequencyCap(1, 86400)})
    profile = {"email": "p@example.com", "timezone": timezone_at(now, 8)}
    async with project_store(capped, contest) as store:
        kairos = make_kairos(ts_env.client, capped, store)
        async with running_worker(ts_env.client, capped, store):
            await kairos.identify("prio", profile, consent={"marketing": True})
            await kairos.start("low", "prio")
            await kairos.start("high", "prio")
            results = {}
            for name in ("high", "low"):
                handle = await started(
                    ts_env.client, journey_workflow_id(name, "prio", 1), JourneyResult
                )
                results[name] = await finish(ts_env, handle)
    high_send, low_send = results["high"].messages[0], results["low"].messages[0]
    assert high_send.status == low_send.status == "sent"
    sent_at = {
        name: next(r.at for r in result.records if r.kind == "send" and "sent" in r.outcome)
        for name, result in results.items()
    }
    # The higher priority went out that morning; the lower waited a day for the cap to free.
    assert timedelta(days=1) <= sent_at["low"] - sent_at["high"] < timedelta(days=1, minutes=5)
    # Depending on which re-check ran first it lost the contest or found the cap full; either
    # way the record says the cap deferred it.
    deferred = [r.outcome for r in results["low"].records if r.outcome.startswith("deferred")]
    assert any("went to" in d or "reached" in d for d in deferred)


# --- runs keep hearing their events after their journey's YAML is gone -----------------------


async def test_deleting_a_journeys_yaml_does_not_deafen_its_runs_in_flight(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, project: Project
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    await kairos.identify("deaf", {"email": "d@example.com", "timezone": timezone_at(now, 12)},
                          consent={"marketing": True})  # fmt: skip
    await kairos.emit("deaf", "cart_updated", CART)
    # The cart journey's file is deleted: the front door and the worker now load a project
    # without it. The run started before keeps its pinned plan, and hears its goal.
    without = dataclasses.replace(
        project, plans={n: p for n, p in project.plans.items() if n != "cart_abandonment"}
    )
    async with project_store(settings, without) as door:
        after = make_kairos(ts_env.client, settings, door)
        async with running_worker(ts_env.client, settings, door):
            handle = await started(
                ts_env.client, journey_workflow_id("cart_abandonment", "deaf", 1), JourneyResult
            )
            accepted = await after.record("deaf", "order_placed", order(now, 1))
            assert accepted.signalled == [("cart_abandonment", 1)]
            result: JourneyResult = await finish(ts_env, handle)
    assert result.outcome == "converted"


# --- a cancelled run sends nothing more -------------------------------------------------------


async def test_a_run_cancelled_in_the_store_sends_nothing_more(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        await kairos.identify("stopped", {"email": "s@example.com",
                                          "timezone": timezone_at(now, 12)},
                              consent={"marketing": True})  # fmt: skip
        await kairos.emit("stopped", "cart_updated", CART)
        handle = await started(
            ts_env.client, journey_workflow_id("cart_abandonment", "stopped", 1), JourneyResult
        )
        # Support cancels; the workflow has not heard of it yet (or the cancel was lost).
        assert await store.cancel_run("stopped", "cart_abandonment") is not None
        result: JourneyResult = await finish(ts_env, handle)
    assert [m.status for m in result.messages] == ["cancelled", "cancelled"]
    record = await store.customer("stopped")
    assert record is not None
    assert [(m.status, m.reason) for m in record.messages] == [("cancelled", "run cancelled")] * 2
    assert [r.outcome for r in record.runs] == ["cancelled"]
    assert not (settings.outbox_dir / "index.jsonl").exists()
