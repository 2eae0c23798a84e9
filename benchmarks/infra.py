"""Processes a benchmark run starts and watches: the dev server, a database of its own on the
shared PostgreSQL, worker processes, py-spy, and a sampler of their CPU and memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from temporalio.client import Client

from benchmarks.project import REPO
from kairos.store.database import Database, with_database
from kairos.tools.dev import dev_server_args, temporal_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def dev_server() -> AsyncIterator[tuple[subprocess.Popen[bytes], Client]]:
    """A fresh headless dev server, in-memory SQLite, and a client connected to it."""
    port = free_port()
    server = subprocess.Popen(
        [str(temporal_binary()), *dev_server_args(None, port, None)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        client = await _connect(f"127.0.0.1:{port}", server)
        yield server, client
    finally:
        _stop(server)


async def _connect(address: str, server: subprocess.Popen[bytes]) -> Client:
    for _ in range(300):
        if server.poll() is not None:
            raise RuntimeError(f"the dev server exited with code {server.returncode}")
        with contextlib.suppress(Exception):
            # A connection only: what sends or reads payloads wraps it with the store's keys
            # (kairos.runtime.temporal.with_keys).
            return await Client.connect(address)
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the dev server did not answer on {address} within 30s")


def _stop(process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    """End a process started in its own session (and its children), politely first."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.asynccontextmanager
async def database(admin_url: str, name: str) -> AsyncIterator[str]:
    """A fresh database ``name`` with the current schema on the server of ``admin_url``; its
    URL. Dropped afterwards."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = with_database(admin_url, name)
        async with await Database.open(url, check_schema=False) as db:
            await db.upgrade()
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def transactions(admin_url: str, name: str, *, seconds: float = 60) -> int:
    """Transactions committed in database ``name`` so far (``pg_stat_database.xact_commit``).

    Called when nobody uses the database: a backend reports its counts when it exits (or, busy,
    about once a second), so this waits until every connection to it has closed, then until
    the count stops moving.
    """
    deadline = asyncio.get_running_loop().time() + seconds
    last = -1
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        while True:
            cursor = await conn.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = %s) AS open,"
                " (SELECT xact_commit FROM pg_stat_database WHERE datname = %s) AS commits",
                (name, name),
            )
            row = await cursor.fetchone()
            assert row is not None
            open_connections, commits = int(row[0]), int(row[1] or 0)
            if open_connections == 0 and commits == last:
                return commits
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"database {name} still has {open_connections} connections")
            last = commits if open_connections == 0 else -1
            await asyncio.sleep(0.2)


def postmaster_pid(admin_url: str) -> int:
    """The PostgreSQL server's main process (the parent of every connection's backend)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        # While connected: the backend process exits with its connection.
        parent: int = psutil.Process(int(row[0])).ppid()
    return parent


@dataclass
class Workers:
    """Worker processes of one side, started against one server."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            _stop(process, seconds=30)


SOURCES = ("kairos", "workflows", "activities", "benchmarks", "worker.py")


def snapshot(target: Path) -> Path:
    """Copy the code the workers run to ``target``, and return it.

    The workflow sandbox re-reads workflow modules from disk for every new workflow run, so a
    worker running from the working tree would pick up edits made during a benchmark run (and
    mix them with what it imported at start). Workers run from this copy instead.
    """
    ignore = shutil.ignore_patterns("__pycache__", "results", "*.pyc")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


async def start_workers(
    side: str,
    count: int,
    *,
    address: str,
    task_queue: str,
    home: Path,
    outbox: Path,
    database_url: str,
    log: Path,
    source: Path,
) -> Workers:
    """Start ``count`` worker processes running the code in ``source``; wait until each polls."""
    workers = Workers()
    command = [sys.executable, "-m", "benchmarks.worker", "--side", side, "--address",
               address, "--task-queue", task_queue, "--home", str(home), "--outbox",
               str(outbox), "--database-url", database_url]  # fmt: skip
    try:
        for index in range(count):
            stderr = (log.parent / f"{log.name}-{index}.log").open("wb")
            env = worker_environment(log.parent, source)
            process = subprocess.Popen(
                command, cwd=source, env=env, stdout=subprocess.PIPE, stderr=stderr,
                start_new_session=True,
            )  # fmt: skip
            workers.processes.append(process)
            await _ready(process, log.parent / f"{log.name}-{index}.log")
    except BaseException:
        workers.stop()
        raise
    return workers


def worker_environment(scratch: Path, source: Path) -> dict[str, str]:
    """The environment of a worker process: this one's, with bytecode caching on.

    ``source`` comes first on the import path. The workflow sandbox re-imports the workflow
    modules for every new workflow run; with
    PYTHONDONTWRITEBYTECODE set (as in many container images) and no ``.pyc`` shipped, each of
    those imports compiles the module from source. Deployments should ship bytecode, so the
    benchmark caches it (outside the source tree, under ``scratch``).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
    env["PYTHONPATH"] = str(source)
    return env


async def _ready(process: subprocess.Popen[bytes], log: Path) -> None:
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    if line.strip() != b"ready":
        process.wait(timeout=30)
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"a benchmark worker failed to start:\n{tail}")


def py_spy() -> Path | None:
    """The py-spy binary next to this Python or on PATH, if installed."""
    candidate = Path(sys.executable).parent / "py-spy"
    if candidate.exists():
        return candidate
    found = shutil.which("py-spy")
    return Path(found) if found else None


def start_profilers(pids: list[int], out: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """Attach py-spy to each process, sampling every thread (collapsed stacks)."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    started = []
    for pid in pids:
        path = out.parent / f"{out.name}-{pid}.folded"
        command = [str(binary), "record", "--pid", str(pid), "--rate", "100", "--nonblocking",
                   "--format", "raw", "--output", str(path)]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append((process, path))
    return started


def stop_profilers(profilers: list[tuple[subprocess.Popen[bytes], Path]]) -> list[Path]:
    """Stop py-spy (it writes its output on SIGINT); the files it wrote."""
    for process, _ in profilers:
        process.send_signal(signal.SIGINT)
    for process, _ in profilers:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [path for _, path in profilers if path.exists()]


@dataclass
class Usage:
    """CPU seconds and peak resident memory of a group of processes over a window."""

    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0


class Sampler:
    """Samples the CPU time and memory of processes (and their children) twice a second."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self.start_cpu = {name: self._cpu(procs) for name, procs in self.groups.items()}
        self.peak = dict.fromkeys(self.groups, 0.0)
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    def usage(self) -> dict[str, Usage]:
        """CPU seconds since the sampler was made, and the peak memory seen, per group."""
        self._sample()
        return {
            name: Usage(
                cpu_seconds=round(self._cpu(procs) - self.start_cpu[name], 2),
                peak_rss_mb=round(self.peak[name], 1),
            )
            for name, procs in self.groups.items()
        }

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(0.5)

    def _sample(self) -> None:
        for name, procs in self.groups.items():
            rss = 0.0
            for proc in _with_children(procs):
                with contextlib.suppress(psutil.Error):
                    rss += proc.memory_info().rss / 2**20
            self.peak[name] = max(self.peak[name], rss)

    @staticmethod
    def _cpu(procs: list[psutil.Process]) -> float:
        """CPU time of ``procs``, their live descendants, and the children they have reaped
        (PostgreSQL's backends come and go with connections; their time stays counted)."""
        total = 0.0
        for proc in _with_children(procs):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
                total += times.children_user + times.children_system
        return total


def _with_children(procs: list[psutil.Process]) -> list[psutil.Process]:
    found = list(procs)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            found.extend(proc.children(recursive=True))
    return found
