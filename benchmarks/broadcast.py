"""``python -m benchmarks --only broadcast``: how fast a broadcast enters a segment's members.

A fresh database on the embedded PostgreSQL and a fresh dev server; N customers in the shipped
``sms_subscribers_retention`` segment (written by PostgreSQL itself, each with a data key); then
``kairos broadcast flash_sale --segment sms_subscribers_retention`` as the command runs it
(:class:`kairos.tools.broadcast.BroadcastRun`, no rate limit), timed. Counted beside the time, since
this machine's load moves it: the store's transactions (``pg_stat_database``) and statements
(every one this process sent), the Temporal starts made, and the CPU seconds of this process,
the dev server and PostgreSQL, each per member.

    python -m benchmarks.broadcast --members 2000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from benchmarks import infra
from benchmarks.project import BENCH_DIR
from benchmarks.report import machine
from kairos.language.project import load_project
from kairos.runtime import crypto
from kairos.runtime.client import Kairos
from kairos.runtime.config import Settings, load_settings
from kairos.runtime.crypto import MasterKeys
from kairos.runtime.temporal import register_search_attributes, with_keys
from kairos.store.broadcasts import BroadcastStore
from kairos.store.embedded import temporary_server
from kairos.store.facade import Store
from kairos.tools.broadcast import DEFAULT_CONCURRENCY, BroadcastRun
from kairos.worker import dispatcher

ROOT = Path(__file__).resolve().parent.parent
JOURNEY = "flash_sale"
SEGMENT = "sms_subscribers_retention"
# Members: retention, SMS and marketing consent, a phone, two orders; and a few who are not.
_MEMBERS = """
INSERT INTO customers (id, profile, stage)
SELECT 'm-' || lpad(i::text, 7, '0'),
       jsonb_build_object('phone', '+35840' || lpad(i::text, 7, '0'), 'locale', 'fi',
                          'timezone', 'Europe/Helsinki'),
       CASE WHEN i <= %(n)s THEN 'retention' ELSE 'consideration' END
FROM generate_series(1, %(n)s + 10) i;
INSERT INTO consent (customer_id, topic, granted, source, changed_at)
SELECT c.id, t, true, 'benchmark', now() FROM customers c, unnest(ARRAY['sms', 'marketing']) t;
INSERT INTO events (customer_id, id, name, properties, occurred_at, routed_at)
SELECT c.id, 'o' || k, 'order_placed', '{}', now(), now() FROM customers c,
       generate_series(1, 2) k
"""


async def add_members(url: str, settings: Settings, members: int) -> None:
    """``members`` customers in the segment and ten who are not, each with their data key."""
    master = MasterKeys(settings.master_key, settings.master_key_previous)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for statement in _MEMBERS.split(";\n"):
            await conn.execute(statement, {"n": members})
        await give_keys(conn, master)


async def give_keys(conn: psycopg.AsyncConnection[Any], master: MasterKeys) -> None:
    """A data key for every customer written without one (in bulk, by SQL)."""
    cursor = await conn.execute(
        "SELECT id FROM customers c WHERE NOT EXISTS"
        " (SELECT 1 FROM data_keys k WHERE k.customer_id = c.id)"
    )
    keys = []
    for row in await cursor.fetchall():
        key_id = crypto.new_key_id()
        master_id, wrapped = master.wrap(key_id, crypto.new_data_key())
        customer_id = row["id"] if isinstance(row, dict) else row[0]  # either row factory
        keys.append((key_id, customer_id, wrapped, master_id))
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO data_keys (id, customer_id, wrapped, master_key_id)"
            " VALUES (%s, %s, %s, %s)",
            keys,
        )


@contextmanager
def counting_statements() -> Iterator[list[int]]:
    """Counts every statement this process sends to PostgreSQL (one executemany row each)."""
    sent = [0]
    execute, executemany = psycopg.AsyncCursor.execute, psycopg.AsyncCursor.executemany

    async def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent[0] += 1
        return await execute(self, query, *args, **kwargs)

    async def counted_many(self: Any, query: Any, rows: Any, *args: Any, **kwargs: Any) -> Any:
        rows = list(rows)
        sent[0] += len(rows)
        return await executemany(self, query, rows, *args, **kwargs)

    psycopg.AsyncCursor.execute = counted  # type: ignore[method-assign]
    psycopg.AsyncCursor.executemany = counted_many  # type: ignore[method-assign,assignment]
    try:
        yield sent
    finally:
        psycopg.AsyncCursor.execute = execute  # type: ignore[method-assign]
        psycopg.AsyncCursor.executemany = executemany  # type: ignore[method-assign]


async def measure(admin_url: str, members: int, concurrency: int) -> dict[str, Any]:
    """Broadcast flash_sale to ``members`` members on a fresh database and dev server."""
    name = f"bench_broadcast_{members}_{os.getpid()}"
    project = load_project(ROOT)
    async with infra.database(admin_url, name) as url, infra.dev_server() as (server, client):
        await register_search_attributes(client)
        base = load_settings({"KAIROS_HOME": str(ROOT)}, dotenv=False)
        settings = dataclasses.replace(
            base,
            database_url=url,
            task_queue="bench-broadcast",
            outbox_dir=Path(tempfile.gettempdir()) / f"{name}-outbox",
        )
        await add_members(url, settings, members)
        async with await Store.open(settings, project) as store:
            plan, segment = project.plans[JOURNEY], project.segments[SEGMENT]
            begun = await BroadcastStore(store).begin("bench", plan, segment, datetime.now(UTC))
        # Opening and closing the store costs a few transactions of its own: measured alone,
        # then taken off the broadcast's.
        before_open = await infra.transactions(admin_url, name)
        async with await Store.open(settings, project):
            pass
        before = await infra.transactions(admin_url, name)
        # This process alone: the dev server and PostgreSQL are its children.
        this = psutil.Process()
        sampler = infra.Sampler(
            {"temporal": [server.pid], "postgres": [infra.postmaster_pid(admin_url)]}
        )
        own = _cpu(this)
        load = os.getloadavg()[0]
        # Not entered (sampling memory costs CPU in this process): CPU is read at the end.
        with counting_statements() as statements:
            async with await Store.open(settings, project) as store:
                kairos = Kairos(
                    store, dispatcher(store, with_keys(client, store.keys), settings.task_queue),
                    settings,
                )  # fmt: skip
                run = BroadcastRun(kairos, plan, segment, rate=1_000_000, concurrency=concurrency)
                started = time.perf_counter()
                finished = await run.run(begun)
                seconds = time.perf_counter() - started
                usage = sampler.usage()
                own = _cpu(this) - own
                counts = await BroadcastStore(store).counts(begun.id)
        load = max(load, os.getloadavg()[0])
        transactions = (await infra.transactions(admin_url, name)) - before
        transactions -= before - before_open
        started_workflows = await _workflows(client, settings.task_queue, members)
    cpu = {"broadcast": own} | {group: figures.cpu_seconds for group, figures in usage.items()}
    return {
        "members": members,
        "concurrency": concurrency,
        "finished": finished,
        "statuses": {status.value: n for status, n in counts.items()},
        "workflows_started": started_workflows,
        "seconds": round(seconds, 2),
        "members_per_second": round(members / seconds, 1),
        # The machine's 1-minute load average, the higher of before and after: on 2 cores
        # shared with other work the time says as much about the load as about Kairos.
        "load_average": round(load, 1),
        "transactions": transactions,
        "transactions_per_member": round(transactions / members, 3),
        "statements": statements[0],
        "statements_per_member": round(statements[0] / members, 2),
        # CPU the load does not move: what each process spent per member, in milliseconds.
        "cpu_ms_per_member": {g: round(1000 * s / members, 2) for g, s in cpu.items()},
    }


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def _workflows(client: Any, task_queue: str, expected: int) -> int:
    """The journey runs the dev server has on the task queue (its count catches up quickly)."""
    found = 0
    for _ in range(100):
        found = (await client.count_workflows(f"TaskQueue = '{task_queue}'")).count
        if found >= expected:
            break
        await asyncio.sleep(0.2)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.broadcast",
        description="How fast a broadcast enters a segment's members into a journey.",
    )
    parser.add_argument("--members", type=int, default=2000, help="members (default 2,000)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"journey starts in flight at once (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="where to write the result")
    args = parser.parse_args(argv)
    if args.members < 1 or args.concurrency < 1:
        print("--members and --concurrency must be at least 1", file=sys.stderr)
        return 2
    with temporary_server(Path(tempfile.gettempdir())) as postgres:
        figures = asyncio.run(measure(postgres, args.members, args.concurrency))
    result = {"machine": machine(), "broadcast": figures}
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = args.json or BENCH_DIR / "results" / f"{stamp}-broadcast-n{args.members}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
