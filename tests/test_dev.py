"""``make dev`` as a new user runs it: the whole local stack from the wheels, then the README's
trigger command, word for word, delivers the welcome email; Ctrl-C stops everything.

The stack runs from a copy of the project (its own ``.kairos/``) on free ports, so it never
touches a developer's own ``make dev``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kairos.runtime.config import load_settings
from kairos.store.database import latest_version
from kairos.tools.dev import TRIGGER_COMMAND, Ports, banner
from tests.commands import ROOT, command_env, documented, free_port, run
from tests.helpers import eventually, scrape

pytestmark = pytest.mark.slow  # every test here starts a process or a server

# What README.md tells a new user to type after `make dev`.
TRIGGER = documented(
    '.venv/bin/kairos emit c-42 signed_up --data \'{"email": "ada@example.com", '
    '"first_name": "Ada", "locale": "en", "timezone": "Europe/Helsinki", '
    '"marketing_opt_in": true}\''
)
BANNER_END = "Ctrl-C stops everything, PostgreSQL included."


@pytest.fixture
def home() -> Iterator[Path]:
    """A copy of the project, outside pytest's basetemp: the embedded PostgreSQL runs as another
    user (``pgserver``) when tests run as root, and every pytest session that starts makes
    ``/tmp/pytest-of-root`` private again, which would lock that user out of its data."""
    home = Path(tempfile.mkdtemp(prefix="kairos-dev-test-"))
    for part in ("journeys", "templates", "segments"):
        shutil.copytree(ROOT / part, home / part)
    yield home
    shutil.rmtree(home, ignore_errors=True)


async def _lines(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        into.append(line.decode(errors="replace").rstrip("\n"))


SENT_WELCOME = frozenset(
    {("journey", "welcome"), ("step", "welcome"), ("channel", "email"), ("status", "sent")}
)


@pytest.mark.timeout(240)
async def test_make_dev_then_the_readme_trigger_command_delivers_the_welcome_email(
    home: Path,
) -> None:
    ports = Ports(temporal=free_port(), ui=free_port(), web=free_port())
    metrics = f"127.0.0.1:{free_port()}"
    # Quiet hours off, as the README suggests for trying things out: night in Helsinki must
    # not hold the welcome email until 08:00 while CI waits.
    env = command_env(
        KAIROS_HOME=home,
        KAIROS_DEV_PORT=ports.temporal,
        KAIROS_DEV_UI_PORT=ports.ui,
        KAIROS_WEB_PORT=ports.web,
        KAIROS_QUIET_HOURS="off",
        KAIROS_METRICS=metrics,
    )
    # What `make dev` runs, once .venv is installed.
    dev = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kairos.tools.dev", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert dev.stdout is not None
    output: list[str] = []
    reader = asyncio.create_task(_lines(dev.stdout, output))
    try:

        async def up() -> bool:
            assert dev.returncode is None, "\n".join(output)
            return BANNER_END in "\n".join(output)

        assert await eventually(up, attempts=2400)  # up to two minutes on a loaded machine
        shown = "\n".join(output)
        assert f"PostgreSQL     {home / '.kairos' / 'postgres'}   (embedded;" in shown
        assert f"Temporal       localhost:{ports.temporal}   " in shown
        assert f"Web            http://127.0.0.1:{ports.web}   " in shown
        assert f"Metrics        http://{metrics}/metrics   " in shown
        assert TRIGGER in shown and TRIGGER == TRIGGER_COMMAND

        # The Temporal UI decrypts through the front door, which answers its origin.
        codec = f"http://127.0.0.1:{ports.web}/codec"
        async with httpx.AsyncClient(timeout=30) as http:
            ui_settings = await http.get(f"http://127.0.0.1:{ports.ui}/api/v1/settings")
            preflight = await http.options(
                f"{codec}/decode",
                headers={
                    "Origin": f"http://localhost:{ports.ui}",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-namespace",
                },
            )
        assert ui_settings.json()["Codec"]["Endpoint"] == codec, ui_settings.text
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == f"http://localhost:{ports.ui}"

        cli = command_env(KAIROS_HOME=home, TEMPORAL_ADDRESS=f"localhost:{ports.temporal}")
        emitted = await run(TRIGGER, cli)
        assert emitted.code == 0, emitted.output
        # README: "The first command answers what the event did: ..."
        assert "started welcome: run 1 (journey:welcome:c-42:1)" in emitted.out
        index = home / ".kairos" / "outbox" / "index.jsonl"

        async def welcomed() -> list[dict[str, str]]:
            lines = index.read_text().splitlines() if index.exists() else []
            return [json.loads(line) for line in lines]

        sent = await eventually(welcomed, attempts=1200)
        assert [(m["journey"], m["step"], m["to"]) for m in sent] == [
            ("welcome", "welcome", "ada@example.com")
        ]
        assert (home / ".kairos" / "outbox" / sent[0]["file"]).is_file()
        assert sent[0]["file"].startswith("email/")

        listed = await run(documented(".venv/bin/kairos outbox"), cli)
        assert listed.code == 0 and "Ada, welcome to Lumo Coffee" in listed.out, listed.output
        shown_customer = await run(documented(".venv/bin/kairos customer c-42"), cli)
        assert shown_customer.code == 0, shown_customer.output
        assert "journey:welcome:c-42:1" in shown_customer.out
        assert "source: event signed_up" in shown_customer.out
        # The worker's metrics count the welcome email, next to the Temporal SDK's own.
        scraped = scrape(f"http://{metrics}/metrics")
        assert scraped[("kairos_messages_total", SENT_WELCOME)] == 1
        assert any(name.startswith("temporal_") for name, _ in scraped)
    finally:
        if dev.returncode is None:
            dev.send_signal(signal.SIGINT)  # Ctrl-C
        await asyncio.wait_for(dev.wait(), 90)
        await reader
    assert dev.returncode == 0, "\n".join(output)
    assert output[-1] == "kairos dev: stopped."
    # PostgreSQL stopped with it: no server holds the data directory any more.
    assert not (home / ".kairos" / "postgres" / "postmaster.pid").exists()


def test_the_readme_shows_what_make_dev_prints() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## What you see after `make dev`\n\n```\n(.*?)```", readme, re.S)
    assert block is not None
    settings = load_settings({"KAIROS_HOME": "/path/to/kairos"}, dotenv=False)
    printed = banner(settings, Ports(), "http://127.0.0.1:8000", latest_version())
    for line in block.group(1).splitlines():
        assert line in printed.splitlines(), line
    assert f"\n    {TRIGGER}\n" in printed


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("variable", "what"),
    [("KAIROS_DEV_PORT", "Temporal"), ("KAIROS_DEV_UI_PORT", "the Temporal UI"),
     ("KAIROS_WEB_PORT", "the web front door")],
)  # fmt: skip
async def test_make_dev_names_the_setting_of_a_port_that_is_taken(
    home: Path, variable: str, what: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {"KAIROS_DEV_PORT": free_port(), "KAIROS_DEV_UI_PORT": free_port(),
                 "KAIROS_WEB_PORT": free_port(), variable: busy}  # fmt: skip
        env = command_env(KAIROS_HOME=home, **ports)
        ran = await run([sys.executable, "-m", "kairos.tools.dev"], env, program=True)
    assert ran.code == 1, ran.output
    assert ran.output.splitlines() == [
        f"kairos dev: port {busy} (for {what}) is taken; is another `make dev` running? "
        f"Stop it, or set {variable} to a free port"
    ]
