"""The report's rollups (migration 10) kept at write time equal what the rows say.

The customers are driven through the store's own calls (tests/test_report_store.py's story:
restarts, a holdout, revenue, conversions inside and after the window) plus what only a trigger
can catch: a restart re-marked ``converted`` by the run's own end, a customer's locale changed
afterwards, messages and the provider's feedback written by SQL, clocks moved by SQL, a run
deleted. Then the rollups and parts are compared with a computation from scratch (the
back-fill, run on the same rows inside a transaction that is rolled back), and the report read
from the rollups with the report read by the exact scan of every entry.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import pytest_asyncio

import kairos.reporting.queries
from benchmarks.analytics import _ROWS
from kairos.language.project import Project
from kairos.reporting.queries import Span, on_bucket_edge, percentiles
from kairos.reporting.report import build_report
from kairos.runtime.config import Settings
from kairos.runtime.contract import Event, RunEnd
from kairos.store.database import Connection, Database, migrations
from kairos.store.facade import Store
from tests.test_report_store import JOURNEY, ORDER, WEEK_2, Customers, drive, offer

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def offer_store(settings: Settings, project: Project) -> AsyncIterator[Store]:
    """The store with tests/test_report_store.py's offer journey."""
    opened = await Store.open(settings, dataclasses.replace(project, plans={JOURNEY: offer()}))
    yield opened
    await opened.close()


_ROLLUPS = {
    "report_entry_days": ("journey, day, held_out, outcome, last_step, locale, currency,"
                          " to_convert", "entries, restarts, unrecorded, total"),
    "report_step_days": ("journey, day, step, kind, took, to_convert",
                         "reached, deferred, held_out"),
    "report_message_days": ("journey, day, step, channel, status",
                            "messages, delivered, opened, clicked"),
    "report_stage_days": ("stage, day", "customers"),
}  # fmt: skip
_PARTS = ("report_entry_parts", "report_step_parts", "report_message_parts", "report_stage_parts")


async def rollups(conn: Connection) -> dict[str, Counter[tuple[Any, ...]]]:
    """Each rollup summed by its key (the appended differences folded; a key whose sums are
    all zero left out), and every part row."""
    found: dict[str, Counter[tuple[Any, ...]]] = {}
    for table, (keys, values) in _ROLLUPS.items():
        sums = [f"sum({v})" for v in values.split(", ")]
        cursor = await conn.execute(
            f"SELECT {keys}, {', '.join(sums)} FROM {table} GROUP BY {keys}"
            f" HAVING {' OR '.join(f'coalesce({s}, 0) <> 0' for s in sums)}"
        )
        found[table] = Counter(tuple(row.values()) for row in await cursor.fetchall())
    for table in _PARTS:
        cursor = await conn.execute(f"SELECT * FROM {table}")
        found[table] = Counter(tuple(row.values()) for row in await cursor.fetchall())
    return found


class _Rollback(Exception):
    pass


async def kept_and_from_scratch(
    database: Database,
) -> tuple[dict[str, Counter[tuple[Any, ...]]], dict[str, Counter[tuple[Any, ...]]]]:
    """The rollups as the writers kept them, and as the back-fill computes them from the rows
    (in a transaction rolled back, so the kept ones stay)."""
    async with database.transaction() as conn:
        await conn.execute("SELECT kairos_report_compact()")
        kept = await rollups(conn)
    scratch: dict[str, Counter[tuple[Any, ...]]] = {}
    try:
        async with database.transaction() as conn:
            tables = ", ".join([*_ROLLUPS, *_PARTS])
            await conn.execute(f"TRUNCATE {tables}")
            await conn.execute(
                "SELECT kairos_report_refresh(array_agg(customer_id), array_agg(journey), false)"
                " FROM journey_entries"
            )
            await conn.execute(
                "SELECT kairos_report_refresh_stages(array_agg(id), false) FROM customers"
            )
            scratch.update(await rollups(conn))
            raise _Rollback
    except _Rollback:
        pass
    return kept, scratch


def _same(report_json: dict[str, Any]) -> Any:
    """What the rollups count: the journeys (the lifecycle is read as before, at now())."""
    return report_json["journeys"]


async def reports_agree(store: Store, since: datetime | None) -> dict[str, Any]:
    """The report from the rollups (and parts of a partial first day) is the exact scan's."""
    plans = {JOURNEY: offer()}
    rolled = await build_report(store.database, None, "q", plans, since=since)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kairos.reporting.queries, "on_bucket_edge", lambda window: False)
        exact = await build_report(store.database, None, "q", plans, since=since)
    assert _same(rolled.to_json()) == _same(exact.to_json())
    return rolled.to_json()


async def more_story(store: Store, customers: Customers) -> None:
    """What only a trigger sees: a re-marked restart, a new locale, messages and feedback
    written by SQL, a deleted run."""
    # Viewed twice: the store ends run 1 `restarted`, then run 1 says it converted (its goal was
    # the same event): two entries, run 1 converted within the window, run 2 running.
    customer, first = await customers.enter(WEEK_2 + timedelta(hours=2))
    await customers.view(customer, WEEK_2 + timedelta(hours=3))
    goal = f"order-{customer}-1"
    await store.accept(
        customer,
        Event(id=goal, name="order_placed", properties={"total": 20, "currency": "EUR"},
              timestamp=WEEK_2 + timedelta(hours=3)),
    )  # fmt: skip
    await store.end_run(
        RunEnd(customer_id=customer, journey=JOURNEY, run_no=first, outcome="converted",
               goal_event=goal, records=[], variant="a", held_out=False)
    )  # fmt: skip
    async with store.database.transaction() as conn:
        await conn.execute(
            "UPDATE runs SET ended_at = %s WHERE customer_id = %s AND run_no = 1",
            (WEEK_2 + timedelta(hours=3), customer),
        )
        # A customer of the story now speaks Finnish; another's run is deleted.
        await conn.execute(
            "UPDATE customers SET profile = profile || '{\"locale\": \"fi\"}' WHERE id = 'c0001'"
        )
        await conn.execute("DELETE FROM runs WHERE customer_id = 'c0002'")
        # Messages the ledger decided for ten entries, then SendGrid's feedback on some.
        await conn.execute(
            "INSERT INTO messages (key, customer_id, journey, run_no, step, channel, category,"
            " priority, status, due_at, decided_at)"
            " SELECT 'k-' || customer_id, customer_id, journey, run_no, 'send_a', 'email',"
            " 'marketing', 50, 'sending', started_at, started_at FROM runs"
            " WHERE customer_id BETWEEN 'c0010' AND 'c0019' AND run_no = 1"
        )
        await conn.execute("UPDATE messages SET status = 'sent', sent_at = now()")
        await conn.execute(
            "UPDATE messages SET delivered_at = now(), opened_at = now()"
            " WHERE customer_id < 'c0015'"
        )


async def test_the_rollups_equal_the_rows_from_scratch_and_the_exact_report(
    offer_store: Store,
) -> None:
    customers = Customers(offer_store)
    await drive(customers)
    await more_story(offer_store, customers)
    kept, scratch = await kept_and_from_scratch(offer_store.database)
    assert kept == scratch
    assert sum(kept["report_entry_parts"].values()) == 244 - 1 + 2  # one deleted, two re-marked
    report = await reports_agree(offer_store, since=None)
    (journey,) = report["journeys"]
    assert journey["messages"]["sent"] == 10 and journey["by_channel"]["email"]["opened"] == 5
    assert journey["by_locale"]["fi"]["ended"] == 1
    # A window that begins mid-day: whole days from the rollups, the first day's rest exactly.
    partial = await reports_agree(offer_store, since=WEEK_2 + timedelta(hours=2, minutes=30))
    # The story's entries after 02:30 of WEEK_2 (even n, n % 5 hours in), the three running and
    # run 2 above.
    later = sum(1 for n in range(80) if n % 2 == 0 and n % 5 > 2)
    assert partial["journeys"][0]["entered"] == 3 * later + 3 + 1
    for since in (WEEK_2 - timedelta(days=1), WEEK_2 + timedelta(hours=1)):
        await reports_agree(offer_store, since=since)


async def test_the_migration_back_fills_the_rollups_for_existing_rows(empty_database: str) -> None:
    database = await Database.open(empty_database, check_schema=False)
    async with database, database.transaction() as conn:
        await conn.execute(
            "CREATE TABLE kairos_migrations (version integer PRIMARY KEY, name text NOT"
            " NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in migrations():
            if migration.version < 10:
                await conn.execute(migration.path.read_text())
                await conn.execute(
                    "INSERT INTO kairos_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
    # Rows written before migration 10: 40 customers, each in two journeys once (the
    # benchmark's generator): 2 of 40 still running, every fifth converted by a 10+i%50 order.
    with psycopg.connect(empty_database, autocommit=True) as conn:
        params = {"customers": 40, "journeys": ["bench_a", "bench_b"]}
        for statement in _ROWS.split(";\n\n"):
            conn.execute(statement, params)
    async with await Database.open(empty_database, check_schema=False) as database:
        assert [m.version for m in await database.upgrade()] == [10]
        report = await build_report(database, None, "q", {}, since=None)
        kept, scratch = await kept_and_from_scratch(database)
    assert kept == scratch
    journeys = {j.journey: j for j in report.journeys}
    assert set(journeys) == {"bench_a", "bench_b"}
    ended = [i for i in range(1, 41) if i % 20]
    won = [i for i in ended if i % 5 == 1]
    for journey in journeys.values():
        assert (journey.entered, journey.active) == (40, 2)
        assert journey.outcomes["converted"] == journey.converted == len(won)
        treated_revenue = sum(10 + i % 50 for i in won if i % 10 != 3)
        assert journey.revenue == {"EUR": Decimal(treated_revenue)}
        assert journey.messages["sent"] == sum(1 for i in range(1, 41) if i % 10 != 3)


async def test_concurrent_writers_lose_no_counts(offer_store: Store) -> None:
    customers = Customers(offer_store)
    entered = WEEK_2 + timedelta(hours=1)
    runs = [await customers.enter(entered) for _ in range(24)]
    async with offer_store.database.transaction() as conn:
        await conn.execute(
            "INSERT INTO messages (key, customer_id, journey, run_no, step, channel, category,"
            " priority, status, due_at, decided_at) SELECT 'k-' || customer_id, customer_id,"
            " journey, run_no, 'send_a', 'email', 'marketing', 50, 'sent', started_at,"
            " started_at FROM runs"
        )

    async def end(customer: str, run_no: int, n: int) -> None:
        await customers.end(customer, run_no, variant="a" if n % 2 else "holdout",
                            at=entered + timedelta(hours=n % 3), outcome="converted",
                            order=ORDER)  # fmt: skip

    async def feedback(customer: str) -> None:
        async with offer_store.database.transaction() as conn:
            await conn.execute(
                "UPDATE messages SET delivered_at = now() WHERE customer_id = %s", (customer,)
            )

    async def compact() -> None:
        async with offer_store.database.transaction() as conn:
            await conn.execute("SELECT kairos_report_compact()")

    # Every run ends at once, each beside SendGrid's feedback on its own message (the same
    # customer and journey from two transactions) and beside compactions: all on the same
    # day's rollup rows.
    await asyncio.gather(
        *(end(c, r, n) for n, (c, r) in enumerate(runs)),
        *(feedback(c) for c, _ in runs),
        *(compact() for _ in range(4)),
    )
    kept, scratch = await kept_and_from_scratch(offer_store.database)
    assert kept == scratch
    report = await build_report(offer_store.database, None, "q", {JOURNEY: offer()}, since=None)
    (journey,) = report.journeys
    assert (journey.entered, journey.active, journey.outcomes["converted"]) == (24, 0, 24)
    assert journey.by_channel["email"]["delivered"] == 24
    assert journey.revenue == {"EUR": ORDER * 12}


def test_the_rollups_answer_windows_on_bucket_edges_and_scan_for_the_others() -> None:
    assert all(on_bucket_edge(w) for w in (None, 60, 1800, 3600, 48 * 3600, 7 * 86400, 86400 * 365))
    assert not any(on_bucket_edge(w) for w in (90, 3660, 73 * 3600 + 1, 86400 * 366, 86400 + 60))
    since = datetime(2026, 11, 9, 13, 30, tzinfo=UTC)
    assert Span.of(since, {"a": 7 * 86400}) == Span(
        "2026-11-10", since.isoformat(), "2026-11-10T00:00:00+00:00", exact=False
    )
    assert Span.of(None, {"a": None}).day_from == "-infinity"
    assert Span.of(since, {"a": 7 * 86400, "b": 90}) == Span(
        "infinity", since.isoformat(), "infinity", exact=True
    )


def test_percentiles_are_percentile_disc_of_the_counted_values() -> None:
    assert percentiles({}, (0.5,)) == {}
    found = percentiles({3600.0: 5, 86400.0: 4, 7200.0: 1}, (0.5, 0.9))
    assert found == {0.5: timedelta(hours=1), 0.9: timedelta(days=1)}
    assert percentiles({60.0: 1}, (0.5, 0.9)) == {
        0.5: timedelta(minutes=1),
        0.9: timedelta(minutes=1),
    }
