"""Kill things while journeys run, then count what was lost or sent twice.

    .venv/bin/python -m benchmarks.faults --customers 200 --kills 4

A throwaway PostgreSQL and a Temporal dev server (with its SQLite file, so it can be restarted)
run the benchmark journeys (waits of seconds) for N customers on two worker processes. While
they run, a worker is SIGKILLed every few seconds and restarted, and once the Temporal server
itself is SIGKILLed and restarted. At the end every run must have ended and every message that
the journeys decided to send must be in the outbox exactly once.

It prints one JSON object: runs ended per outcome, messages by status, the message keys sent
more than once (0 expected: the outbox is idempotent by key, and the send transaction never
repeats a confirmed key), messages whose outcome nobody saw (``unconfirmed``, counted: a worker
died between the provider call and its confirmation; the outbox keeps one message per key, so
the send protocol asks it again at once), messages left ``unknown`` (0 expected with the
outbox), and lost messages (decided but never sent: 0 expected).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.project import make_home
from kairos.runtime.client import Kairos
from kairos.runtime.config import load_settings
from kairos.store.database import Database, with_database
from kairos.store.embedded import temporary_server
from kairos.tools.dev import dev_server_args, temporal_binary

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Stack:
    """The processes under test: a Temporal dev server and worker processes."""

    def __init__(self, root: Path, env: dict[str, str], port: int) -> None:
        self.root = root
        self.env = env
        self.port = port
        self.server: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def start_server(self) -> None:
        args = dev_server_args(self.root / "temporal.db", self.port, None)
        self.server = subprocess.Popen(
            [str(temporal_binary()), *args],
            stdout=(self.root / "temporal.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("the Temporal dev server did not start")

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()

    def start_worker(self) -> None:
        log = (self.root / f"worker-{len(self.workers)}.log").open("ab")
        self.workers.append(
            subprocess.Popen(
                [sys.executable, str(REPO / "worker.py")],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def kill_a_worker(self) -> None:
        alive = [w for w in self.workers if w.poll() is None]
        victim = random.choice(alive)
        victim.send_signal(signal.SIGKILL)
        victim.wait()

    def stop(self) -> None:
        for process in [*self.workers, self.server]:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


async def environment(root: Path, pg: str, port: int) -> dict[str, str]:
    """A fresh database on ``pg`` with the schema, the benchmark project under ``root``, and
    the environment that points Kairos processes at them and at Temporal on ``port`` (no
    quiet hours, no caps: every message the journeys decide is sent)."""
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("CREATE DATABASE faults")
    url = with_database(pg, "faults")
    async with await Database.open(url, check_schema=False) as database:
        await database.upgrade()
    home = make_home(root / "home")
    return {
        **os.environ,
        "KAIROS_HOME": str(home),
        "KAIROS_DATABASE_URL": url,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "KAIROS_QUIET_HOURS": "off",
        "KAIROS_CAP_EMAIL": "off",
        "KAIROS_CAP_SMS": "off",
        "KAIROS_TASK_QUEUE": "faults",
        "KAIROS_LOG_LEVEL": "WARNING",
    }


async def run(customers: int, kills: int, seconds: float) -> dict[str, Any]:
    random.seed(7)
    with tempfile.TemporaryDirectory() as tmp, temporary_server(Path(tempfile.gettempdir())) as pg:
        root = Path(tmp)
        port = free_port()
        env = await environment(root, pg, port)
        env["KAIROS_OUTBOX"] = str(root / "outbox")
        stack = Stack(root, env, port)
        stack.start_server()
        stack.start_worker()
        stack.start_worker()
        try:
            settings = load_settings(env, dotenv=False)
            kairos = await Kairos.connect(settings)
            async with kairos:
                chaos = asyncio.create_task(_chaos(stack, kills, seconds))
                now = datetime.now(UTC).isoformat()
                for n in range(customers):
                    customer = f"f{n}"
                    signup = {"email": f"{customer}@example.com", "signed_up_at": now,
                              "marketing_opt_in": True}  # fmt: skip
                    await kairos.emit(customer, "signed_up", signup, event_id=f"{customer}-up")
                    cart = {"cart_total": 20.0, "currency": "EUR"}
                    await kairos.emit(customer, "cart_updated", cart, event_id=f"{customer}-c")
                await chaos
                result = await _settle(kairos, customers)
        finally:
            stack.stop()
        result["outbox_duplicates"] = _outbox_duplicates(root / "outbox")
        return result


async def _chaos(stack: Stack, kills: int, seconds: float) -> None:
    pause = seconds / (kills + 2)
    for n in range(kills):
        await asyncio.sleep(pause)
        stack.kill_a_worker()
        if n == kills // 2:
            stack.kill_server()
            await asyncio.sleep(1)
            stack.start_server()
        stack.start_worker()


async def ended_runs(database: Database, runs: int, timeout: float = 600) -> dict[str, int]:
    """Wait until ``runs`` runs have started and every run has ended (or time is up); the runs
    by outcome (``open`` for those still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await database.fetch_one(
            "SELECT count(*) FILTER (WHERE ended_at IS NULL) AS open, count(*) AS runs FROM runs"
        )
        assert row is not None
        if row["runs"] >= runs and row["open"] == 0:
            break
        await asyncio.sleep(1)
    outcomes = await database.fetch_all("SELECT outcome, count(*) AS n FROM runs GROUP BY 1")
    return {r["outcome"] or "open": r["n"] for r in outcomes}


async def _settle(kairos: Kairos, customers: int) -> dict[str, Any]:
    """Wait until every run has ended (or time is up), then count."""
    database = kairos.store.database
    runs = await ended_runs(database, 2 * customers)
    statuses = await database.fetch_all("SELECT status, count(*) AS n FROM messages GROUP BY 1")
    unconfirmed = await database.fetch_one(
        "SELECT coalesce(sum(unconfirmed), 0) AS n FROM messages"
    )
    pending = await database.fetch_one("SELECT count(*) AS n FROM dispatches")
    return {
        "customers": customers,
        "runs": runs,
        "messages": {r["status"]: r["n"] for r in statuses},
        "unconfirmed": int(unconfirmed["n"]) if unconfirmed else 0,
        "dispatches_left": int(pending["n"]) if pending else 0,
        # Unknown outcomes are counted apart: the ledger says so, nothing is silently lost.
        "unknown": sum(r["n"] for r in statuses if r["status"] == "unknown"),
        "lost": sum(r["n"] for r in statuses if r["status"] not in ("sent", "blocked", "unknown")),
    }


def _outbox_duplicates(outbox: Path) -> int:
    index = outbox / "index.jsonl"
    if not index.exists():
        return 0
    keys = Counter(json.loads(line)["key"] for line in index.read_text().splitlines())
    return sum(1 for count in keys.values() if count > 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument(
        "--kills", type=int, default=4, help="worker SIGKILLs (one also kills Temporal)"
    )
    parser.add_argument("--seconds", type=float, default=40, help="spread the kills over this long")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.customers, args.kills, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
