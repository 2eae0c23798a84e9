"""``kairos enroll``: an imported list enters a journey once per customer, even if run twice."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from kairos.cli import app
from kairos.language.project import Project
from kairos.runtime.config import Settings
from kairos.store.facade import Store
from kairos.tools.enroll import (
    EnrollError,
    Enrollment,
    EnrollState,
    RowResult,
    Status,
    read_rows,
    summarise,
)
from tests.conftest import ROOT, make_kairos, running_worker

LEADS = """id,email,first_name,lead_score,onboarded
c-1,ann@example.com,Ann,12,no
c-2,ben@example.com,Ben,,
,nobody@example.com,No Id,,
c-3,not-an-email,Cid,,
c-1,ann@example.com,Ann again,,
c-4,dee@example.com,Dee,many,
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_rejected_row_says_why(tmp_path: Path, project: Project) -> None:
    rows, rejected = read_rows(write(tmp_path, "leads.csv", LEADS), project.catalogue)

    assert [(r.line, r.customer_id, dict(r.profile)) for r in rows] == [
        (2, "c-1", {"email": "ann@example.com", "first_name": "Ann", "lead_score": 12.0,
                    "onboarded": False}),
        (3, "c-2", {"email": "ben@example.com", "first_name": "Ben"}),
    ]  # fmt: skip
    assert [(r.line, r.reason) for r in rejected] == [
        (4, "no customer id"),
        (5, "'email' must be an email address such as ada@example.com, not 'not-an-email'"),
        (6, "customer c-1 is also on line 2"),
        (7, "'lead_score' must be a number, not 'many'"),
    ]


def test_a_column_that_is_not_a_profile_attribute_stops_everything(
    tmp_path: Path, project: Project
) -> None:
    path = write(tmp_path, "bad.csv", "id,email,shoe_size\nc-1,a@example.com,42\n")
    with pytest.raises(EnrollError, match="columns shoe_size are not profile attributes"):
        read_rows(path, project.catalogue)
    with pytest.raises(EnrollError, match="one of them `id`"):
        read_rows(write(tmp_path, "noid.csv", "email\na@example.com\n"), project.catalogue)


def test_json_lines_take_flat_or_nested_profiles(tmp_path: Path, project: Project) -> None:
    text = (
        '{"id": "c-1", "email": "ann@example.com"}\n'
        "\n"
        '{"customer_id": "c-2", "profile": {"first_name": "Ben"}}\n'
        "[1, 2]\n"
        '{"id": "c-3", oops}\n'
    )
    rows, rejected = read_rows(write(tmp_path, "leads.jsonl", text), project.catalogue, jsonl=True)

    assert [(r.line, r.customer_id, dict(r.profile)) for r in rows] == [
        (1, "c-1", {"email": "ann@example.com"}),
        (3, "c-2", {"first_name": "Ben"}),
    ]
    assert [r.line for r in rejected] == [4, 5]
    assert rejected[1].reason.startswith("not valid JSON")


async def test_enrolling_twice_enrolls_nobody_twice(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, tmp_path: Path
) -> None:
    source = write(tmp_path, "leads.csv", LEADS.replace("c-", "twice-"))
    rows, _ = read_rows(source, store.catalogue)
    kairos = make_kairos(dev_env.client, settings, store)
    plan = store.project.plans["welcome"]
    async with running_worker(dev_env.client, settings, store):
        first = EnrollState.open(tmp_path, "welcome", source)
        await Enrollment(kairos, plan, first).run(rows)
        again = Enrollment(kairos, plan, EnrollState.open(tmp_path, "welcome", source))
        left_over = again.pending(rows)
        heard: list[RowResult] = []
        fresh = Enrollment(
            kairos,
            plan,
            EnrollState.open(tmp_path, "welcome", source, fresh=True),
            on_result=heard.append,
        )
        await fresh.run(rows)
        await kairos.cancel("welcome", "twice-2")
        once = await fresh.enroll(rows[1])
    runs = await kairos.runs(journey="welcome")

    assert summarise(first.done.values())["enrolled"] == 2
    assert left_over == []
    # welcome is entry: once; the store refuses both while their runs are going ...
    assert [r.status for r in heard] == [Status.already_enrolled, Status.already_enrolled]
    assert all(r.reason.startswith("running since ") for r in heard)
    # ... and after a run has ended, says that the customer went through it before.
    assert (once.status, once.reason) == (
        Status.already_entered,
        "twice-2 has been through welcome before (entry: once)",
    )
    assert sorted((r.customer_id, r.run_no) for r in runs) == [("twice-1", 1), ("twice-2", 1)]


async def test_an_import_never_restarts_a_run_or_enters_a_running_customer_again(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, tmp_path: Path
) -> None:
    """cart_abandonment restarts on a new trigger and nurture takes a customer again after
    their run ends; neither happens to a customer who is in the journey when imported."""
    source = write(tmp_path, "shoppers.csv", "id,email\nann,ann@example.com\n")
    rows, _ = read_rows(source, store.catalogue)
    kairos = make_kairos(dev_env.client, settings, store)
    results: dict[str, list[RowResult]] = {}
    for journey in ("cart_abandonment", "nurture"):
        plan = store.project.plans[journey]
        for fresh in (False, True):
            state = EnrollState.open(tmp_path, journey, source, fresh=fresh)
            enrollment = Enrollment(kairos, plan, state)
            results.setdefault(journey, []).append(await enrollment.enroll(rows[0]))
    runs = await kairos.runs("ann")

    for journey in ("cart_abandonment", "nurture"):
        statuses = [r.status for r in results[journey]]
        assert statuses == [Status.enrolled, Status.already_enrolled], journey
    assert sorted((r.journey, r.run_no, r.status) for r in runs) == [
        ("cart_abandonment", 1, "running"),
        ("nurture", 1, "running"),
    ]


async def test_an_interrupted_enrollment_resumes_where_it_stopped(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, tmp_path: Path
) -> None:
    lines = ["id,email"] + [f"resume-{n},r{n}@example.com" for n in range(8)]
    source = write(tmp_path, "many.csv", "\n".join(lines) + "\n")
    rows, _ = read_rows(source, store.catalogue)
    kairos = make_kairos(dev_env.client, settings, store)
    plan = store.project.plans["welcome"]
    state = EnrollState.open(tmp_path, "welcome", source)
    stopped = asyncio.create_task(Enrollment(kairos, plan, state, rate=4, concurrency=1).run(rows))
    while not state.done:
        await asyncio.sleep(0.05)
    stopped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopped
    saved = json.loads(state.path.read_text())["rows"]
    resumed_state = EnrollState.open(tmp_path, "welcome", source)
    resumed = Enrollment(kairos, plan, resumed_state, rate=50)
    pending = resumed.pending(rows)
    await resumed.run(pending)
    runs = await kairos.runs(journey="welcome")

    assert 1 <= len(saved) < len(rows)
    assert {r.line for r in pending}.isdisjoint(int(line) for line in saved)
    assert sorted(resumed_state.done) == [r.line for r in rows]
    enrolled = [r for r in resumed_state.done.values() if r.status is Status.enrolled]
    # A start in flight at Ctrl-C may have entered its customer; the store then refused the
    # repeat, so the row reads "already enrolled". Either way, one run per customer.
    assert len(enrolled) >= len(rows) - 1
    assert sorted(r.customer_id for r in runs) == sorted(r.customer_id for r in rows)
    assert all(r.status == "running" and r.run_no == 1 for r in runs)


async def test_the_cli_reports_enrolled_and_rejected_rows(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for part in ("journeys", "templates", "segments"):
        # Copied: a project refuses files that link out of it (kairos.language.yaml_source.escapes).
        shutil.copytree(ROOT / part, home / part)
    source = write(tmp_path, "leads.csv", LEADS.replace("c-", "cli-"))
    env = {
        "KAIROS_HOME": str(home),
        "NO_COLOR": "1",
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "KAIROS_TASK_QUEUE": settings.task_queue,
        "KAIROS_DATABASE_URL": settings.database_url,
    }
    command = ["enroll", "welcome", "--csv", str(source), "--json"]
    async with running_worker(dev_env.client, settings, store):
        first = await asyncio.to_thread(CliRunner().invoke, app, command, env=env)
        second = await asyncio.to_thread(CliRunner().invoke, app, command[:-1], env=env)
    runs = await make_kairos(dev_env.client, settings, store).runs(journey="welcome")

    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert data["counts"]["enrolled"] == 2 and data["counts"]["rejected"] == 4
    assert [r["line"] for r in data["rejected"]] == [4, 5, 6, 7]
    assert second.exit_code == 0, second.output
    assert "resuming: 2 rows were handled by an earlier run" in second.output
    assert re.search(r"handled by an earlier run\s+│\s+2 │", second.output)
    assert sorted(r.customer_id for r in runs) == ["cli-1", "cli-2"]
