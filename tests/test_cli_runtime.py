"""The ``kairos`` commands support staff and operators type, run as real subprocesses against a
test's own PostgreSQL database and the Temporal dev server, with a worker in the test.

Mistakes are checked in-process (no services at all): each must be reported as one line before
anything is connected to.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from kairos.cli import app
from kairos.runtime.config import Settings
from kairos.store.database import latest_version, migrations, redact
from kairos.store.facade import Store
from kairos.store.runs import note_problems, runs_of
from tests.commands import (
    ROOT,
    command_env,
    free_port,
    kairos_in_process,
    run,
    temporal_fixture,  # noqa: F401 (the temporal fixture)
)
from tests.conftest import make_kairos, running_worker
from tests.helpers import eventually, outbox, timezone_at

WANT = latest_version()
# Every test here starts processes or servers; each `kairos` command is a Python start-up.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SIGNUP = {"email": "sue@example.com", "first_name": "Sue", "marketing_opt_in": True}


async def _sent(store: Store, customer: str) -> list[str]:
    rows = await store.database.fetch_all(
        "SELECT step FROM messages WHERE customer_id = %s AND status = 'sent'", (customer,)
    )
    return [r["step"] for r in rows]


async def _rows(store: Store, table: str, customer: str) -> int:
    row = await store.database.fetch_one(
        f"SELECT count(*) AS n FROM {table} WHERE customer_id = %s", (customer,)
    )
    return int(row["n"]) if row else 0


async def test_emit_identify_customer_and_runs_tell_support_what_happened(
    temporal: WorkflowEnvironment, settings: Settings, store: Store, cli_env: dict[str, str]
) -> None:
    now = await temporal.get_current_time()
    signup = json.dumps({**SIGNUP, "timezone": timezone_at(now, 12)})
    async with running_worker(temporal.client, settings, store):
        emitted = await run(["emit", "sue", "signed_up", "--data", signup, "--id", "s-1"], cli_env)
        assert emitted.code == 0, emitted.output
        assert emitted.out.splitlines() == [
            "accepted signed_up for sue (event id s-1)",
            "  started welcome: run 1 (journey:welcome:sue:1)",
        ]
        assert await eventually(lambda: _sent(store, "sue"), attempts=1200) == ["welcome"]

        again = await run(["emit", "sue", "signed_up", "--data", signup, "--id", "s-1"], cli_env)
        assert again.out.strip() == (
            "already accepted: event s-1 for sue was handled before; nothing changed"
        )
        identified = await run(
            ["identify", "sue", "--data", '{"phone": "+358401234567"}',
             "--consent", "sms=yes", "--source", "support call, ticket 4711"],
            cli_env,
        )  # fmt: skip
        assert identified.code == 0, identified.output
        assert identified.out.splitlines()[:2] == [
            "updated sue: phone",
            "  consent: sms granted (source: support call, ticket 4711)",
        ]

        # (Below 50: at 50 a lead in consideration is sales-ready, and sales_handover moves on.)
        scored = await run(["identify", "sue", "--data", '{"lead_score": 40.0}'], cli_env)
        assert scored.code == 0, scored.output
        # As a run records a condition it could not evaluate (and went on without).
        async with store.database.transaction() as conn:
            await note_problems(conn, "sue", "welcome", 1, ["step x: cannot evaluate `y`"])
        shown = await run(["customer", "sue"], cli_env)
        assert shown.code == 0, shown.output
        for expected in (
            "customer sue  stage: consideration",
            "source: event signed_up",
            "source: support call, ticket 4711",
            "journey:welcome:sue:1",
            "+358401234567",
            "\n  problem in welcome run 1: step x: cannot evaluate `y`\n",
        ):
            assert expected in shown.out, (expected, shown.out)
        assert re.search(r"\n lead_score +40 *\n", shown.out), shown.out  # not 40.0
        assert re.search(r"\n email +yes +default: email needs no consent", shown.out)
        assert re.search(r"\n sms +yes +since .* UTC, source: support call, ticket 4711", shown.out)
        assert re.search(r"welcome +welcome +email +sent +provider id outbox-", shown.out)

        data = json.loads((await run(["customer", "sue", "--json"], cli_env)).out)
        assert data["consent"]["marketing"]["granted"] is True
        assert [(c["topic"], c["granted"], c["source"]) for c in data["consent_history"]] == [
            ("marketing", True, "event signed_up"),
            ("sms", True, "support call, ticket 4711"),
        ]
        runs = [(r["journey"], r["run_no"], r["status"], r["workflow_id"]) for r in data["runs"]]
        assert runs == [("welcome", 1, "running", "journey:welcome:sue:1")]
        assert data["runs"][0]["problems"] == ["step x: cannot evaluate `y`"]
        # Where the run is now, from the run itself.
        assert data["runs"][0]["now"].startswith(
            "wait_for_setup: wait 2d for onboarding_completed (since "
        ), data["runs"][0]
        assert [(m["step"], m["status"]) for m in data["messages"]] == [("welcome", "sent")]

        listed = await run(["runs", "--journey", "welcome", "--running", "--json"], cli_env)
        assert [r["customer_id"] for r in json.loads(listed.out)] == ["sue"]
        table = await run(["runs", "--customer", "sue"], cli_env)
        assert "journey:welcome:sue:1" in table.out and "running" in table.out
        unknown = await run(["runs", "--journey", "welcom"], cli_env)
        assert unknown.code == 1
        assert unknown.err.strip() == (
            "error: no journey named 'welcom' (journeys: cart_abandonment, flash_sale, "
            "nurture, referral_reward, sales_handover, welcome, win_back)"
        )
    # No worker answers the run's query: its search attribute still names the step.
    data = json.loads((await run(["customer", "sue", "--json"], cli_env)).out)
    assert data["runs"][0]["now"] == "wait_for_setup"


async def test_start_cancel_unsubscribe_and_forget_change_the_store_and_the_runs(
    temporal: WorkflowEnvironment, settings: Settings, store: Store, cli_env: dict[str, str]
) -> None:
    kairos = make_kairos(temporal.client, settings, store)
    now = await temporal.get_current_time()
    async with running_worker(temporal.client, settings, store):
        await kairos.identify("sue", {"email": "sue@example.com", "timezone": timezone_at(now, 12),
                                      "phone": "+358401234567"},
                              consent={"marketing": True, "sms": True}, source="test")  # fmt: skip
        started = await run(["start", "nurture", "sue"], cli_env)
        assert started.code == 0, started.output
        assert started.out.strip() == "started nurture for sue: run 1 (journey:nurture:sue:1)"
        refused = await run(["start", "nurture", "sue"], cli_env)
        assert refused.code == 1
        assert refused.err.strip() == (
            "error: nurture is already running for sue (entry: after_exit)"
        )

        cancelled = await run(["cancel", "nurture", "sue"], cli_env)
        assert cancelled.code == 0, cancelled.output
        assert cancelled.out.strip() == "cancelled nurture run 1 for sue (journey:nurture:sue:1)"
        handle = temporal.client.get_workflow_handle("journey:nurture:sue:1")

        async def cancelled_in_temporal() -> bool:
            return (await handle.describe()).status is WorkflowExecutionStatus.CANCELED

        assert await eventually(cancelled_in_temporal, attempts=1200)
        again = await run(["cancel", "nurture", "sue"], cli_env)
        assert (again.code, again.err.strip()) == (1, "error: sue has no running nurture")

        nobody = await run(["unsubscribe", "nobody", "--topic", "sms"], cli_env)
        assert (nobody.code, nobody.err.strip()) == (
            1,
            "error: no customer 'nobody' is known to Kairos",
        )
        assert await store.customer("nobody") is None
        opted_out = await run(["unsubscribe", "sue", "--topic", "sms"], cli_env)
        assert opted_out.out.strip() == "unsubscribed sue (sms; source: kairos unsubscribe)"
        record = await store.customer("sue")
        assert record is not None and not record.consent.sms

        await run(["start", "nurture", "sue"], cli_env)

        async def settled() -> bool:
            # Run 2 has scored the lead and sent its first lesson: it now waits for days, so
            # nothing is added to the store between counting and forgetting.
            # Sent, not only reserved: its outbox file is written before the ledger says sent.
            row = await store.database.fetch_one(
                "SELECT count(*) AS n FROM messages WHERE key LIKE 'nurture:sue:2:%%'"
                " AND status = 'sent'"
            )
            return row is not None and row["n"] == 1

        assert await eventually(settled, attempts=1200)
        counts = ", ".join(
            [f"{table} {await _rows(store, table, 'sue')}"
             for table in ("events", "consent_changes", "runs", "messages", "dispatches",
                           "data_keys")]
        )  # fmt: skip
        mailed = [m for m in outbox(settings.outbox_dir) if m["customer_id"] == "sue"]
        forgotten = await run(["forget", "sue", "--yes"], cli_env)
        assert forgotten.code == 0, forgotten.output
        assert forgotten.out.splitlines() == [
            f"forgotten sue: deleted the customer with their profile and consent; rows per "
            f"table: {counts}",
            "  deleted their data key: their payloads in Temporal histories (open, closed or "
            "archived) can no longer be decrypted by anyone",
            f"  deleted {len(mailed)} outbox messages",
            "  kept suppressed (hashed addresses, no customer id): sms (all)",
            "  terminated nurture run 2 (journey:nurture:sue:2)",
        ]
        assert await store.customer("sue") is None
        assert (
            mailed and [m for m in outbox(settings.outbox_dir) if m["customer_id"] == "sue"] == []
        )
        gone = await run(["customer", "sue"], cli_env)
        assert (gone.code, gone.err.strip()) == (1, "error: no customer 'sue' is known to Kairos")


async def test_an_event_is_accepted_while_temporal_is_down_and_left_to_a_worker(
    settings: Settings, store: Store
) -> None:
    offline = command_env(
        KAIROS_DATABASE_URL=settings.database_url, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}"
    )
    emitted = await run(["emit", "ola", "signed_up", "--data", json.dumps(SIGNUP)], offline)
    assert emitted.code == 0, emitted.output
    assert emitted.out.splitlines()[1:] == [
        "  started welcome: run 1 (journey:welcome:ola:1)",
        "Temporal unreachable: a worker will make the calls (1 waiting in the customer store)",
    ]
    assert emitted.err == ""
    pending = await store.database.fetch_all("SELECT kind, journey, run_no FROM dispatches")
    assert [tuple(r.values()) for r in pending] == [("start", "welcome", 1)]

    # The store's cancellation stands (the run's sends are blocked); the workflow is left.
    cancelled = await run(["cancel", "welcome", "ola"], offline)
    assert cancelled.code == 0, cancelled.output
    assert cancelled.out.strip() == "cancelled welcome run 1 for ola (journey:welcome:ola:1)"
    assert cancelled.err.startswith("warning: Temporal at 127.0.0.1:")
    assert "cancel its workflow journey:welcome:ola:1 in the Temporal UI" in cancelled.err
    assert len(cancelled.err.strip().splitlines()) == 1
    assert [r.status for r in await runs_of(store.database, customer_id="ola")] == ["cancelled"]


async def test_commands_refuse_a_database_without_the_schema_until_db_upgrade(
    empty_database: str,
) -> None:
    env = command_env(KAIROS_DATABASE_URL=empty_database)
    for command in (["customer", "c-42"], ["worker"]):
        refused = await run(command, env)
        assert refused.code == 1, refused.output
        assert refused.err.strip().endswith(
            f"has schema version 0, this Kairos needs {WANT}: run `kairos db upgrade`"
        ), refused.err
        assert len(refused.err.strip().splitlines()) == 1
    status = await run(["db", "status"], env)
    assert status.code == 1
    names = [f"{m.version:04d}_{m.name}" for m in migrations()]
    assert status.err.strip() == (
        f"error: schema version 0, this Kairos needs {WANT}: run `kairos db upgrade` to apply "
        + ", ".join(names)
    )

    upgraded = await run(["db", "upgrade"], env)
    assert upgraded.code == 0, upgraded.output
    assert upgraded.out.splitlines() == [
        f"customer store: {redact(empty_database)}",
        *(f"applied {name}" for name in names),
        f"now at schema version {WANT}",
    ]
    again = await run(["db", "upgrade"], env)
    assert again.out.splitlines()[1:] == [f"already at version {WANT}: nothing to apply"]
    status = await run(["db", "status"], env)
    assert (status.code, status.out.splitlines()[1:]) == (0, [f"schema version {WANT}: up to date"])
    known = await run(["customer", "c-42"], env)
    assert known.err.strip() == "error: no customer 'c-42' is known to Kairos"


async def test_an_unreachable_database_is_one_line() -> None:
    url = f"postgresql://kairos:secret@127.0.0.1:{free_port()}/kairos"
    refused = await run(["runs"], command_env(KAIROS_DATABASE_URL=url))
    assert refused.code == 1
    lines = refused.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.output
    assert lines[0].startswith(
        "error: cannot reach PostgreSQL at postgresql://kairos:***@127.0.0.1:"
    )
    assert "secret" not in refused.output


# --- mistakes, found before anything is connected to ----------------------------------------

MISTAKES = [
    (["emit", "c-42", "signed_up", "--data", '{"emial": "ada@example.com"}'],
     "error: event 'signed_up': unknown property 'emial' (declared: email, first_name,"),
    (["emit", "c-42", "signed_up", "--data", '{"email": '],
     "error: --data is not valid JSON: Expecting value at column 11"),
    (["emit", "c-42", "signed_upp"], "error: unknown event 'signed_upp'"),
    (["emit", "c-42", "signed_up", "--data", json.dumps({"email": "ada@example.com",
                                                          "first_name": "A" * 3_000_000})],
     "error: first_name is 3,000,000 characters; at most 10,000 fit in one value"),  # 3 MB
    (["emit", " ", "cart_updated", "--data", '{"cart_total": 1, "currency": "EUR"}'],
     "error: a customer id is required (a non-empty string such as 'c-42')"),
    (["identify", "c-42", "--consent", "newsletter=yes"],
     "error: --consent 'newsletter=yes': expected TOPIC=yes or TOPIC=no pairs"),
    (["identify", "c-42", "--data", '{"phone": "040 123"}'],
     "error: profile: 'phone' must be a phone number in E.164 form"),
    (["identify", "c-42"], "error: nothing to record: give --data with profile attributes"),
    (["start", "welcom", "c-42"], "error: no journey named 'welcom' (journeys: cart_abandonment,"),
    (["cancel", "welcom", "c-42"], "error: no journey named 'welcom'"),
    (["runs", "--journey", "welcom"], "error: no journey named 'welcom'"),
    (["broadcast", "welcom", "--segment", "sms_subscribers_retention"],
     "error: no journey named 'welcom' (journeys: cart_abandonment,"),
    (["unsubscribe", "c-42", "--topic", "newsletter"],
     "error: --topic 'newsletter': use one of email, sms, marketing, all"),
    (["customer", "a\tb"], "error: customer ids are at most 200 characters, without quotes"),
    (["forget", "ada@example.com", "--yes"], "error: customer ids must be pseudonymous"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), MISTAKES)
def test_a_mistake_is_one_line_before_anything_is_connected_to(
    args: list[str], expected: str, tmp_path: Path
) -> None:
    # Nothing listens at either address: reaching for one would take seconds and say so.
    env = command_env(
        KAIROS_DATABASE_URL=f"postgresql://kairos@127.0.0.1:{free_port()}/kairos",
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        KAIROS_OUTBOX=tmp_path,
    )
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(expected), result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "PostgreSQL" not in result.output


def test_a_data_file_too_large_or_not_text_is_refused_without_reading_it_all(
    tmp_path: Path,
) -> None:
    huge = tmp_path / "huge.json"
    with huge.open("wb") as handle:  # 1 GB, sparse: reading it whole would take the memory
        handle.truncate(1 << 30)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b'{"email": "\xff"}')
    env = command_env(
        KAIROS_DATABASE_URL=f"postgresql://kairos@127.0.0.1:{free_port()}/kairos",
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        KAIROS_OUTBOX=tmp_path,
    )
    expected = {
        huge: f"error: --data: {huge} is larger than 256 KB; one event's data holds at most 32 KB",
        binary: f"error: --data: {binary} is not UTF-8 text (byte 11)",
    }
    for path, message in expected.items():
        args = ["emit", "c-42", "signed_up", "--data", f"@{path}"]
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 1, result.output
        assert result.output.startswith(message), result.output
        assert len(result.output.strip().splitlines()) == 1


def test_bad_configuration_exits_2() -> None:
    env = command_env(KAIROS_DATABASE_URL="mysql://kairos@db/kairos")
    result = CliRunner().invoke(app, ["customer", "c-42"], env=env)
    assert result.exit_code == 2
    assert "KAIROS_DATABASE_URL: expected a PostgreSQL URL" in result.output


def test_every_command_shows_an_example_in_its_help() -> None:
    commands = ["emit", "identify", "start", "customer", "runs", "cancel", "unsubscribe",
                "forget", "worker", "simulate"]  # fmt: skip
    for args in [[c] for c in commands] + [["db", "upgrade"], ["db", "status"]]:
        result = CliRunner().invoke(app, [*args, "--help"], env=command_env())
        assert result.exit_code == 0 and "Example" in result.output, (args, result.output)
        assert "<bool>" not in result.output, args  # a flag takes no value


def _help_example(command: str) -> str:
    """The ``Example:`` a command's --help shows (its docstring, or its epilog)."""
    name, _, sub = command.partition(" ")
    infos = app.registered_commands
    if sub:
        group = next(g for g in app.registered_groups if g.name == name)
        assert group.typer_instance is not None
        infos, name = group.typer_instance.registered_commands, sub
    info = next(i for i in infos if i.name == name)
    text = f"{info.callback.__doc__ if info.callback else ''}\n{info.epilog or ''}"
    found = re.search(r"Example: (?:\[bold\])?(.+?)(?:\[/\].*)?$", text, re.M)
    assert found is not None, command
    return found.group(1).strip()


async def test_the_help_examples_work_as_written(
    temporal: WorkflowEnvironment, settings: Settings, store: Store, cli_env: dict[str, str]
) -> None:
    async with running_worker(temporal.client, settings, store):
        for command in ("db status", "emit", "identify", "start", "customer", "runs", "cancel",
                        "unsubscribe", "forget", "db upgrade", "simulate"):  # fmt: skip
            example = _help_example(command)
            assert f"{example} ".startswith(f"kairos {command} "), example
            await kairos_in_process(example, cli_env)  # as the shell splits it; must succeed
    assert await store.customer("c-42") is None  # forgotten by the forget example
    example = _help_example("worker")
    assert example == "TEMPORAL_ADDRESS=temporal.internal:7233 kairos worker"
    ran = await run(example, cli_env)
    assert ran.code == 1
    assert ran.err.startswith("kairos worker: cannot reach Temporal at temporal.internal:7233: ")


def _help_examples(*names: str) -> list[str]:
    """Every command a --help shows in bold (``[bold]kairos ...[/]``), for these commands."""
    found = []
    for info in app.registered_commands:
        if info.name in names:
            text = f"{info.callback.__doc__ if info.callback else ''}\n{info.epilog or ''}"
            found += re.findall(r"\[bold\](kairos [^\[]+?)\[/\]", text)
    return found


@pytest.mark.timeout(240)
async def test_the_language_report_and_outbox_help_examples_work_as_written(
    settings: Settings, store: Store, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # (enroll's and preview's examples are the documents' own, run by tests/test_docs.py)
    examples = sorted(_help_examples("validate", "schema", "graph", "report", "outbox"))
    assert examples == sorted([
        "kairos validate", "kairos validate journeys/welcome.yaml", "kairos schema",
        "kairos graph cart_abandonment > cart.mmd",
        "kairos report cart_abandonment --since 7d --html report.html",
        "kairos outbox --channel email --customer c-42 --limit 5",
    ])  # fmt: skip
    project = tmp_path / "project"
    for part in ("journeys", "templates", "segments"):
        shutil.copytree(ROOT / part, project / part)
    here = {"kairos schema": project, "kairos graph": tmp_path, "kairos report": tmp_path}
    for example in examples:
        cwd = next((d for start, d in here.items() if example.startswith(start)), ROOT)
        env = {**cli_env, "KAIROS_HOME": str(project if cwd == project else ROOT)}
        ran = await run(example, env, cwd=cwd)
        assert ran.code == 0 and not ran.err, (example, ran.output)
    for name in ("journey.schema.json", "customer.schema.json"):
        assert (project / "schema" / name).read_text() == (ROOT / "schema" / name).read_text()
    assert (tmp_path / "cart.mmd").read_text().startswith("flowchart")
    assert "<td class=l>cart_abandonment</td>" in (tmp_path / "report.html").read_text()


def test_each_command_starts_with_only_its_own_module_loaded() -> None:
    """kairos.cli.load_commands imports the one module a command needs: the table it uses must
    name every command in the module that registers it."""
    from kairos.cli import COMMANDS, load_commands

    app = load_commands()
    registered: dict[str, set[str]] = {}
    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.replace("_", "-")
        registered.setdefault(command.callback.__module__, set()).add(name)
    for group in app.registered_groups:
        assert group.typer_instance is not None and group.name is not None
        module = group.typer_instance.registered_commands[0].callback.__module__
        registered.setdefault(module, set()).add(group.name)
    assert registered == {module: set(names) for module, names in COMMANDS.items()}


async def test_unknown_names_are_refused_not_quietly_accepted(
    settings: Settings, store: Store
) -> None:
    # A typo must not create a customer, nor report nothing with exit 0.
    env = command_env(
        KAIROS_DATABASE_URL=settings.database_url, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}"
    )
    for args, expected in (
        (["unsubscribe", "nobody-here"], "error: no customer 'nobody-here' is known to Kairos"),
        (["start", "welcome", "nobody-here"],
         "error: no customer 'nobody-here' is known to Kairos (to create them, give --data with "
         "a profile)"),
        (["report", "nope"], "error: no journey named 'nope' has runs (journeys: "
                             "cart_abandonment, flash_sale, nurture, referral_reward, "
                             "sales_handover, welcome, win_back)"),
    ):  # fmt: skip
        refused = await run(args, env)
        assert (refused.code, refused.err.strip(), refused.out) == (1, expected, ""), args
    assert await store.customer("nobody-here") is None


# Loaded by the ``kairos`` processes below (PYTHONPATH): an object the interpreter collects only
# when it tears itself down, which then leaves a mark in a file.
TEARDOWN_MARK = """
import os as _os


class _Teardown:
    def __del__(self, write=_os.write, path=_os.environ.get("KAIROS_TEST_TEARDOWN_MARK", "")):
        if path:
            write(_os.open(path, _os.O_WRONLY | _os.O_CREAT | _os.O_APPEND), b"teardown\\n")


_teardown = _Teardown()
"""


def test_the_teardown_mark_is_left_by_an_interpreter_that_tears_down(tmp_path: Path) -> None:
    # The check below is only as good as its mark: a plain ``python`` exit leaves it.
    (tmp_path / "sitecustomize.py").write_text(TEARDOWN_MARK)
    mark = tmp_path / "mark"
    env = command_env(PYTHONPATH=str(tmp_path), KAIROS_TEST_TEARDOWN_MARK=str(mark))
    subprocess.run([sys.executable, "-c", "print('done')"], env=env, check=True)
    assert mark.read_text() == "teardown\n"


async def test_the_cli_exits_without_interpreter_teardown(
    temporal: WorkflowEnvironment,
    settings: Settings,
    store: Store,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # The Temporal SDK's threads could abort a finalizing interpreter after the answer was
    # printed (exit 134, "Fatal Python error: PyGILState_Release"), about one call in ten. So
    # every command ends without tearing the interpreter down (kairos.runtime.exits), which is
    # checked here on every call rather than hoped for over many: no call may leave the mark.
    # `kairos customer` talks to PostgreSQL and asks Temporal where the run is: both clients.
    (tmp_path / "sitecustomize.py").write_text(TEARDOWN_MARK)
    mark = tmp_path / "mark"
    env = {**cli_env, "PYTHONPATH": str(tmp_path), "KAIROS_TEST_TEARDOWN_MARK": str(mark)}
    async with running_worker(temporal.client, settings, store):
        await make_kairos(temporal.client, settings, store).emit("loop", "signed_up", SIGNUP)
        ran = [await run(["customer", "loop", "--json"], env) for _ in range(3)]
        refused = await run(["customer", "nobody-here"], env)
    assert [(r.code, r.err) for r in ran] == [(0, "")] * 3
    assert {json.loads(r.out)["runs"][0]["workflow_id"] for r in ran} == {"journey:welcome:loop:1"}
    assert refused.code == 1
    assert not mark.exists(), mark.read_text()


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["runs", "--status", "bogus"],
      "error: No such option: --status (see `kairos runs --help`)"),
     (["runs", "--limit", "many"],
      "error: Invalid value for '--limit': Input should be a valid integer, unable to parse "
      "string as an integer (see `kairos runs --help`)"),
     (["emitt"], "error: No such command 'emitt'. Did you mean 'emit'? (see `kairos --help`)"),
     (["cancel", "welcome"], "error: Missing argument 'customer_id' (see `kairos cancel --help`)")],
)  # fmt: skip
async def test_a_usage_mistake_is_one_line_with_exit_2(args: list[str], expected: str) -> None:
    # The real program: its own handler says Click's usage errors in one line.
    ran = await run(args, command_env(TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}"))
    assert (ran.code, ran.out, ran.err) == (2, "", expected + "\n")
