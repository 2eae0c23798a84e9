"""One engine measurement: a side (Kairos, the hand-written baseline or the plain anchor),
N customers, W worker processes, on a fresh dev server and a fresh database of the shared
PostgreSQL server. Drives the workload through the client (``Kairos.emit``), waits until every
journey has ended, then reads throughput, latency, CPU and memory, billable actions from real
histories and the transactions PostgreSQL committed."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from temporalio.client import Client

from benchmarks import infra
from benchmarks.baseline import BASELINE_WORKFLOWS, PLAIN_WORKFLOW
from benchmarks.project import make_home
from benchmarks.worker import STARTERS, bench_settings
from benchmarks.workload import IMMEDIATE, Customer, customers, engagement, order, utcnow
from kairos.language.project import Project, load_project
from kairos.reporting.costs import HistoryCount, count_histories
from kairos.runtime.client import Kairos
from kairos.runtime.config import Settings
from kairos.runtime.contract import journey_workflow_id
from kairos.runtime.temporal import with_keys
from kairos.store.database import StoreUnavailable
from kairos.store.facade import Store
from kairos.worker import dispatcher

# Events in flight at once from the load generator (product code calling emit).
EMIT_CONCURRENCY = 32
STORE_ATTEMPTS = 5  # tries of a load-generator call whose pool had no connection in time
# At most this many customers' histories are read to count actions (every k-th customer).
HISTORY_SAMPLE = 500
JOURNEY_TYPES = {
    "kairos": ("Journey",),
    "baseline": tuple(workflow_type for workflow_type, _ in BASELINE_WORKFLOWS.values()),
    "plain": (PLAIN_WORKFLOW,),
}


@dataclass(frozen=True)
class Phase:
    """What to measure: which side, how many customers, how many worker processes."""

    side: str
    customers: int
    workers: int
    profile_to: Path | None = None


@dataclass
class Progress:
    """What the load generator and the outbox watcher have seen so far."""

    triggered: dict[str, float] = field(default_factory=dict)
    first_message: dict[str, float] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    orders_sent: int = 0
    emitted: bool = False
    offset: int = 0
    store_retries: int = 0  # calls the load generator made again (see _again)


async def measure(phase: Phase, timeout: float, postgres: str) -> dict[str, Any]:
    """Run one phase on a fresh dev server and a fresh database on ``postgres`` (the admin URL
    of the PostgreSQL server both sides share); return its figures."""
    with tempfile.TemporaryDirectory(prefix="kairos-bench-") as tmp:
        root = Path(tmp)
        home = make_home(root / "home", templates="copy")
        source = infra.snapshot(root / "src")
        project = load_project(home)
        name = f"bench_{phase.side}_{uuid.uuid4().hex[:8]}"
        async with infra.database(postgres, name) as url, infra.dev_server() as (server, client):
            pids = {"server": [server.pid], "postgres": [infra.postmaster_pid(postgres)]}
            database = RunDatabase(postgres, name, url)
            return await _run(phase, client, pids, project, root, source, database, timeout)


@dataclass(frozen=True)
class RunDatabase:
    """The run's database: the server's admin URL, the database's name and URL."""

    admin: str
    name: str
    url: str


async def _run(
    phase: Phase,
    client: Client,
    pids: dict[str, list[int]],
    project: Project,
    root: Path,
    source: Path,
    database: RunDatabase,
    timeout: float,
) -> dict[str, Any]:
    queue = f"bench-{phase.side}-{uuid.uuid4().hex[:8]}"
    address = client.service_client.config.target_host
    outbox = root / "outbox"
    settings = bench_settings(root / "home", address, queue, outbox, database.url)
    before = await infra.transactions(database.admin, database.name)
    workers = await infra.start_workers(
        phase.side, phase.workers, address=address, task_queue=queue, home=root / "home",
        outbox=outbox, database_url=database.url, log=root / "worker", source=source,
    )  # fmt: skip
    profilers = []
    try:
        if phase.profile_to is not None:
            profilers = infra.start_profilers(workers.pids, phase.profile_to)
        groups = {"workers": workers.pids, **pids}
        with infra.Sampler(groups) as sampler:
            drive = await _drive(phase, client, settings, project, outbox, timeout)
            usage = sampler.usage()
        profiles = infra.stop_profilers(profilers) if profilers else []
        profilers = []
    finally:
        if profilers:
            infra.stop_profilers(profilers)
        workers.stop()
    committed = await infra.transactions(database.admin, database.name) - before
    figures = await _figures(phase, client, drive, usage, committed)
    figures["profiles"] = [str(p) for p in profiles]
    return figures


@dataclass
class Drive:
    """What one run of the workload produced."""

    people: list[Customer]
    progress: Progress
    started: float
    ended: float
    complete: bool
    runs: list[dict[str, Any]]


async def _drive(
    phase: Phase, client: Client, settings: Settings, project: Project, outbox: Path, timeout: float
) -> Drive:
    people = customers(phase.customers)
    store = await Store.open(settings, project)
    client = with_keys(client, store.keys)
    start = STARTERS[phase.side]
    kairos = Kairos(store, dispatcher(store, client, settings.task_queue, start=start), settings)
    progress = Progress()
    converters = {c.id for c in people if c.converts}
    # Every entry, win-back for each converter and a sales handover for each engaged lead
    # (but on the plain side, whose runs set no stage, no lead is ever in consideration, so
    # none is sales-ready).
    handovers = sum(c.engages for c in people) if phase.side != "plain" else 0
    expected = len(people) + len(converters) + handovers
    started = time.time()
    watch = asyncio.create_task(_watch(outbox, progress, kairos, converters))
    try:
        await _emit_all(kairos, people, progress)
        complete = await _until_done(client, phase.side, progress, expected, converters, timeout)
        outcomes = await _outcomes(store)
    finally:
        watch.cancel()
        await store.close()
    _read_outbox(outbox, progress)
    runs = await _runs(client, phase.side, outcomes)
    ended = max((r["closed"] for r in runs if r["closed"]), default=time.time())
    return Drive(people, progress, started, ended, complete, runs)


async def _emit_all(kairos: Kairos, people: list[Customer], progress: Progress) -> None:
    limit = asyncio.Semaphore(EMIT_CONCURRENCY)

    async def enter(customer: Customer) -> None:
        async with limit:
            if customer.identified_first:
                await _again(
                    progress,
                    lambda: kairos.identify(
                        customer.id, customer.profile, consent=customer.consent, source="benchmark"
                    ),
                )
            name, properties = customer.trigger(utcnow())
            progress.triggered[customer.id] = time.time()
            event_id = f"{customer.id}:{name}"
            await _again(
                progress, lambda: kairos.emit(customer.id, name, properties, event_id=event_id)
            )
            if customer.engages:
                number = int(customer.id.removeprefix("c-"))
                for event, data in engagement(number):
                    await _again(progress, partial(_emit, kairos, customer.id, event, data))

    await asyncio.gather(*(enter(c) for c in people))
    progress.emitted = True


async def _emit(kairos: Kairos, customer_id: str, event: str, data: dict[str, Any]) -> None:
    await kairos.emit(customer_id, event, data, event_id=f"{customer_id}:{event}")


async def _again(progress: Progress, call: Callable[[], Awaitable[object]]) -> None:
    """``call``, made again when the load generator's pool had no connection for it in time.

    On a machine shared with other work, the burst can wait more than the pool's 10 s for a
    connection, which once ended a whole ``make bench``. Both calls are idempotent (the event
    has its id; identify sets the same profile and consent), so making one again changes no
    figure; how many were made again is recorded (``load_generator_store_retries``).
    """
    for attempt in range(STORE_ATTEMPTS):
        try:
            await call()
            return
        except StoreUnavailable:
            if attempt == STORE_ATTEMPTS - 1:
                raise
            progress.store_retries += 1
            await asyncio.sleep(1 + attempt)


async def _watch(outbox: Path, progress: Progress, kairos: Kairos, converters: set[str]) -> None:
    """Follow the outbox; a converting customer orders once their first message is out."""
    pending: set[asyncio.Task[None]] = set()
    while True:
        for customer_id in _read_outbox(outbox, progress):
            if customer_id in converters:
                task = asyncio.create_task(_order(kairos, customer_id, progress))
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.sleep(0.1)


async def _order(kairos: Kairos, customer_id: str, progress: Progress) -> None:
    number = int(customer_id.removeprefix("c-"))
    properties = order(number, utcnow())
    event_id = f"{customer_id}:order"
    await _again(
        progress, lambda: kairos.emit(customer_id, "order_placed", properties, event_id=event_id)
    )
    progress.orders_sent += 1


def _read_outbox(outbox: Path, progress: Progress) -> list[str]:
    """New lines of the outbox index; the customers whose first message they are."""
    index = outbox / "index.jsonl"
    if not index.exists():
        return []
    with index.open("rb") as fh:
        fh.seek(progress.offset)
        chunk = fh.read()
    complete = chunk[: chunk.rfind(b"\n") + 1]
    progress.offset += len(complete)
    firsts = []
    for line in complete.decode("utf-8").splitlines():
        entry = json.loads(line)
        progress.messages.append(entry)
        customer_id = entry["customer_id"]
        if customer_id not in progress.first_message:
            at = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
            progress.first_message[customer_id] = at
            firsts.append(customer_id)
    return firsts


async def _until_done(
    client: Client,
    side: str,
    progress: Progress,
    expected: int,
    converters: set[str],
    timeout: float,
) -> bool:
    """Wait until every expected journey has ended; False when ``timeout`` passes first."""
    kinds = ", ".join(f"'{t}'" for t in JOURNEY_TYPES[side])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        if not progress.emitted or progress.orders_sent < len(converters):
            continue
        running = await client.count_workflows(
            f"WorkflowType IN ({kinds}) AND ExecutionStatus = 'Running'"
        )
        closed = await client.count_workflows(
            f"WorkflowType IN ({kinds}) AND ExecutionStatus != 'Running'"
        )
        if running.count == 0 and closed.count >= expected:
            return True
    return False


async def _outcomes(store: Store) -> dict[str, str]:
    """How each run ended, as its workflow id and the outcome the store recorded (runs tell
    the store, not a search attribute; the plain anchor tells no one)."""
    rows = await store.database.fetch_all(
        "SELECT journey, customer_id, run_no, outcome FROM runs WHERE ended_at IS NOT NULL"
    )
    return {
        journey_workflow_id(r["journey"], r["customer_id"], r["run_no"]): r["outcome"] or ""
        for r in rows
    }


async def _runs(client: Client, side: str, outcomes: dict[str, str]) -> list[dict[str, Any]]:
    kinds = ", ".join(f"'{t}'" for t in JOURNEY_TYPES[side])
    runs = []
    async for execution in client.list_workflows(f"WorkflowType IN ({kinds})"):
        runs.append(
            {
                "id": execution.id,
                "status": execution.status.name if execution.status else "",
                "outcome": outcomes.get(execution.id, ""),
                "started": execution.start_time.timestamp(),
                "closed": execution.close_time.timestamp() if execution.close_time else None,
            }
        )
    return runs


async def _figures(
    phase: Phase,
    client: Client,
    drive: Drive,
    usage: dict[str, infra.Usage],
    transactions: int,
) -> dict[str, Any]:
    wall = drive.ended - drive.started
    messages = len(drive.progress.messages)
    completed = sum(1 for r in drive.runs if r["status"] == "COMPLETED")
    sample = _sample(drive.people)
    journeys = await _history(client, sample, drive.runs)
    sampled_messages = sum(1 for m in drive.progress.messages if m["customer_id"] in sample)
    workers, server, postgres = usage["workers"], usage["server"], usage["postgres"]
    return {
        "side": phase.side,
        "customers": phase.customers,
        "workers": phase.workers,
        "complete": drive.complete,
        "load_generator_store_retries": drive.progress.store_retries,
        "wall_seconds": round(wall, 2),
        "journeys": len(drive.runs),
        "journeys_completed": completed,
        "journeys_not_completed": _not_completed(drive.runs),
        "outcomes": dict(sorted(Counter(r["outcome"] for r in drive.runs).items())),
        "messages": messages,
        "messages_by_channel": dict(Counter(m["channel"] for m in drive.progress.messages)),
        "journeys_per_second": round(completed / wall, 2),
        "messages_per_second": round(messages / wall, 2),
        "first_message_latency": _latency(drive),
        "worker_cpu_seconds": workers.cpu_seconds,
        "worker_cpu_ms_per_message": round(1000 * workers.cpu_seconds / max(messages, 1), 2),
        "worker_peak_rss_mb": workers.peak_rss_mb,
        "server_cpu_seconds": server.cpu_seconds,
        "server_peak_rss_mb": server.peak_rss_mb,
        # Not PostgreSQL's memory: summing its processes' RSS counts shared buffers many times.
        "postgres_cpu_seconds": postgres.cpu_seconds,
        "postgres_transactions": transactions,
        "postgres_transactions_per_message": round(transactions / max(messages, 1), 2),
        "history": _per_message(journeys, len(sample), sampled_messages),
    }  # fmt: skip


def _not_completed(runs: list[dict[str, Any]]) -> dict[str, int]:
    statuses = Counter(r["status"] for r in runs if r["status"] != "COMPLETED")
    return dict(sorted(statuses.items()))


def _sample(people: list[Customer]) -> set[str]:
    """Every k-th block of five customers, so each journey is equally represented."""
    blocks = max(1, len(people) // 5)
    stride = max(1, blocks * 5 // HISTORY_SAMPLE)
    return {c.id for i, c in enumerate(people) if (i // 5) % stride == 0}


async def _history(client: Client, sample: set[str], runs: list[dict[str, Any]]) -> HistoryCount:
    """Every journey run of the sampled customers (``journey:<name>:<customer>:<run>``)."""
    journey_ids = [r["id"] for r in runs if r["id"].rsplit(":", 2)[1] in sample]
    return await count_histories(client, journey_ids)


def _per_message(journeys: HistoryCount, customers: int, messages: int) -> dict[str, Any]:
    per = max(messages, 1)
    return {
        "sampled_customers": customers,
        "sampled_messages": messages,
        "sampled_runs": journeys.runs,
        "actions_per_message": round(journeys.total_actions / per, 3),
        "events_per_message": round(journeys.events / per, 3),
        "actions_by_kind_per_message": {
            kind: round(count / per, 3) for kind, count in sorted(journeys.actions.items())
        },
        "history_bytes_per_message": round(journeys.bytes / per),
        "history_bytes_by_event_per_message": {
            kind: round(size / per)
            for kind, size in sorted(journeys.bytes_by_event.items(), key=lambda kv: -kv[1])
        },
    }


def _latency(drive: Drive) -> dict[str, Any]:
    """Seconds from the trigger event to the customer's first message, for journeys whose
    first message is due at once."""
    delays = sorted(
        drive.progress.first_message[c.id] - drive.progress.triggered[c.id]
        for c in drive.people
        if c.journey in IMMEDIATE and c.id in drive.progress.first_message
    )
    if not delays:
        return {"count": 0}
    return {
        "count": len(delays),
        "p50": round(statistics.median(delays), 3),
        "p99": round(_percentile(delays, 0.99), 3),
        "max": round(delays[-1], 3),
    }


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
