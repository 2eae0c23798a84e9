"""``python -m benchmarks --only report``: how long ``kairos report`` takes over many entries.

Synthetic rows, written by PostgreSQL itself (``generate_series``) into a fresh database of the
embedded server: customers with a locale and a stage, two journeys each entered by every
customer once (so ``entries`` runs), a split (a, b, 10% holdout), the step records each ended
run writes with its end, a sent message per messaged run that SendGrid said was delivered (every
third opened), an order for every fifth run that converted it, 5% still running, a
stage change per customer. The rows are written with the triggers off (as if they predated
migration 10), then the report's rollups are back-filled as the migration does it, timed. Then
the report is built as ``kairos report --since all`` and ``--since 30d`` build it (no Temporal:
nothing is asked of it), timed, and its queries counted; and what the rollups add to a write is
measured: single-row message and run-end updates, each its own transaction, with the triggers
on and off.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from benchmarks import infra
from kairos.language.plan import Stage
from kairos.reporting.report import build_report
from kairos.store.database import Database

JOURNEYS = ("bench_a", "bench_b")

_ROWS = """
INSERT INTO customers (id, profile, stage, created_at)
SELECT 'c' || i, jsonb_build_object('locale', (ARRAY['en', 'fi', 'de', 'hu'])[1 + i %% 4]),
       (ARRAY['awareness', 'consideration', 'purchase', 'retention'])[1 + i %% 4],
       now() - (i %% 90) * interval '1 day'
FROM generate_series(1, %(customers)s) AS i;

INSERT INTO plans (journey, version, plan, listens, reads)
SELECT j, 'v1', '{}'::jsonb, '{order_placed}', '{}' FROM unnest(%(journeys)s::text[]) AS j;

CREATE TEMP TABLE bench_runs AS
SELECT 'c' || i AS customer_id, j AS journey, i, n,
       now() - ((i + n * 3) %% 28) * interval '1 day' - (i %% 24) * interval '1 hour' AS started_at,
       i %% 20 = 0 AS open, i %% 5 = 1 AS converted,
       CASE WHEN i %% 10 = 3 THEN 'holdout' WHEN i %% 2 = 0 THEN 'a' ELSE 'b' END AS variant
FROM generate_series(1, %(customers)s) AS i,
     unnest(%(journeys)s::text[]) WITH ORDINALITY AS t (j, n);

INSERT INTO journey_entries (customer_id, journey, entries, open_run, first_at, last_at)
SELECT customer_id, journey, 1, CASE WHEN open THEN 1 END, started_at, started_at FROM bench_runs;

INSERT INTO runs (customer_id, journey, run_no, plan_version, started_at, ended_at, outcome,
                  goal_event, last_step, variant, held_out, steps_recorded)
SELECT customer_id, journey, 1, 'v1', started_at,
       CASE WHEN NOT open THEN started_at + (1 + i %% 72) * interval '1 hour' END,
       CASE WHEN open THEN NULL WHEN converted THEN 'converted' ELSE 'no_order' END,
       CASE WHEN converted AND NOT open THEN 'order-' || i || '-' || n END,
       CASE WHEN NOT open THEN 'wait' END, CASE WHEN NOT open THEN variant END,
       NOT open AND variant = 'holdout', NOT open
FROM bench_runs;

INSERT INTO run_steps (customer_id, journey, run_no, step, kind, held_out, outcome, first_at)
SELECT customer_id, journey, 1, step, kind, held, outcome, started_at
FROM bench_runs, LATERAL (VALUES
    ('offer_split', 'split', 0, 'variant ' || variant),
    (CASE WHEN variant = 'holdout' THEN 'wait' ELSE 'send_' || variant END, 'send',
     (variant = 'holdout')::int, 'email sent'),
    ('wait_end', 'exit', 0, CASE WHEN converted THEN 'goal order_placed' ELSE 'no_order' END)
) AS s (step, kind, held, outcome)
WHERE NOT open;

INSERT INTO messages (key, customer_id, journey, run_no, step, channel, category, priority,
                      status, due_at, decided_at, sent_at, delivered_at, opened_at)
SELECT journey || ':' || customer_id || ':1:send_' || variant || ':1', customer_id, journey, 1,
       'send_' || variant, 'email', 'marketing', 50, 'sent', started_at, started_at, started_at,
       started_at, CASE WHEN i %% 3 = 0 THEN started_at END
FROM bench_runs WHERE variant <> 'holdout';

INSERT INTO events (customer_id, id, name, properties, occurred_at)
SELECT customer_id, 'order-' || i || '-' || n, 'order_placed',
       jsonb_build_object('total', 10 + i %% 50, 'currency', 'EUR'), started_at
FROM bench_runs WHERE converted AND NOT open;

INSERT INTO stage_changes (customer_id, from_stage, to_stage, journey, run_no, at)
SELECT id, NULL, stage, 'bench_a', 1, created_at FROM customers;

DROP TABLE bench_runs;
ANALYZE
"""


async def measure(admin_url: str, entries: int) -> dict[str, Any]:
    """Generate ``entries`` synthetic entries in a fresh database; time one report over them."""
    customers = max(1, entries // len(JOURNEYS))
    async with infra.database(admin_url, f"bench_report_{entries}") as url:
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            params = {"customers": customers, "journeys": list(JOURNEYS)}
            conn.execute("SET session_replication_role = replica")  # no trigger fires
            for statement in _ROWS.split(";\n\n"):
                conn.execute(statement, params)
            conn.execute("SET session_replication_role = DEFAULT")
            sizes = {
                table: _count(conn, table)
                for table in ("runs", "run_steps", "messages", "events", "customers")
            }
            generated = time.perf_counter() - started
            started = time.perf_counter()
            conn.execute(_BACK_FILL)
            conn.execute("SELECT kairos_report_compact()")
            conn.execute("ANALYZE")
            back_filled = time.perf_counter() - started
            sizes.update(
                {table: _count(conn, table) for table in ("report_entry_days", "report_step_days",
                                                          "report_message_days",
                                                          "report_stage_days")}
            )  # fmt: skip
        queries: list[tuple[str, float]] = []
        async with await Database.open(url) as database:
            original = psycopg.AsyncCursor.execute

            async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    return await original(self, query, *args, **kwargs)
                finally:
                    took = round(time.perf_counter() - began, 2)
                    queries.append((" ".join(str(query).split())[:60], took))

            psycopg.AsyncCursor.execute = counted  # type: ignore[method-assign]
            try:
                load = os.getloadavg()[0]
                sampler = infra.Sampler({"postgres": [infra.postmaster_pid(admin_url)]})
                with sampler:
                    started = time.perf_counter()
                    report = await build_report(database, None, "bench", {}, since=None)
                    seconds = time.perf_counter() - started
                    cpu = sampler.usage()["postgres"].cpu_seconds
                first_report = len(queries)
                since = datetime.now(UTC) - timedelta(days=30)
                started = time.perf_counter()
                month = await build_report(database, None, "bench", {}, since=since)
                month_seconds = time.perf_counter() - started
                load = max(load, os.getloadavg()[0])
            finally:
                psycopg.AsyncCursor.execute = original  # type: ignore[method-assign]
        writes = _write_cost(url)
    entered = sum(j.entered for j in report.journeys)
    return {
        "entries": entered,
        "rows": sizes,
        "generate_seconds": round(generated, 1),
        "back_fill_seconds": round(back_filled, 1),
        "report_seconds": round(seconds, 2),
        # --since 30d: whole days from the rollups, the first day's rest read from the parts.
        "report_30d_seconds": round(month_seconds, 2),
        "report_30d_entries": sum(j.entered for j in month.journeys),
        # The machine's 1-minute load average, the higher of before and after: on 2 cores
        # shared with other work the time says as much about the load as about the report.
        "load_average": round(load, 1),
        # What PostgreSQL spent on it: the load does not move this one. Its queries run on one
        # core each, so on an idle machine the report takes about this long.
        "postgres_cpu_seconds": cpu,
        "report_queries": first_report,
        "query_seconds": queries[:first_report],
        "write_cost": writes,
        "temporal_actions": 0,
        "converted": sum(j.converted for j in report.journeys),
        "stages": {s.value: report.stages[s.value] for s in Stage if report.stages[s.value]},
    }


# Migration 10's back-fill: every customer's journeys as their rows say, then folded.
_BACK_FILL = """
SELECT kairos_report_refresh(array_agg(customer_id), array_agg(journey), false)
FROM journey_entries;
SELECT kairos_report_refresh_stages(array_agg(id), false) FROM customers
"""
# Writes timed one transaction each, with the triggers on and off.
_WRITES = 300


def _write_cost(url: str) -> dict[str, Any]:
    """Milliseconds per write that the rollups add: a message's status (``sent`` again, and
    SendGrid's ``opened``) and a run's end, each a single-row UPDATE in its own transaction,
    on rows of the generated data; once with the triggers and once without
    (``session_replication_role = replica``). The client sends the same statements either
    way: the triggers add no round trip, only server time (one refresh per statement: four
    statements inside PostgreSQL)."""
    found: dict[str, Any] = {"writes": _WRITES, "client_statements_added": 0}
    with psycopg.connect(url, autocommit=True) as conn:
        keys = [
            r[0]
            for r in conn.execute(
                "SELECT key FROM messages ORDER BY key LIMIT %s", (_WRITES,)
            ).fetchall()
        ]
        runs = conn.execute(
            "SELECT customer_id, journey FROM runs WHERE ended_at IS NULL ORDER BY customer_id"
            " LIMIT %s", (2 * _WRITES,)).fetchall()  # fmt: skip
        half = len(runs) // 2
        for label, role, batch in (("with_rollups", "DEFAULT", runs[:half]),
                                   ("without", "replica", runs[half:])):  # fmt: skip
            conn.execute(f"SET session_replication_role = {role}")
            started = time.perf_counter()
            for key in keys:
                conn.execute("UPDATE messages SET opened_at = coalesce(opened_at, now()),"
                             " status = 'sent' WHERE key = %s", (key,))  # fmt: skip
            message = time.perf_counter() - started
            started = time.perf_counter()
            for customer_id, journey in batch:
                conn.execute(
                    "UPDATE runs SET ended_at = now(), outcome = 'no_order'"
                    " WHERE customer_id = %s AND journey = %s AND ended_at IS NULL",
                    (customer_id, journey),
                )
            ended = time.perf_counter() - started
            found[label] = {
                "message_update_ms": round(1000 * message / len(keys), 2),
                "run_end_ms": round(1000 * ended / max(1, len(batch)), 2),
            }
        conn.execute("SET session_replication_role = DEFAULT")
    return found


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0
