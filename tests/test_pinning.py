"""A run renders the templates its plan was compiled with: editing or deleting a template
changes new runs only."""

from __future__ import annotations

import shutil
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from kairos.language.pinning import tree_id
from kairos.language.project import load_project
from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from tests.conftest import ROOT, make_kairos, project_store, running_worker
from tests.helpers import finish, outbox, started, timezone_at

SUBJECT = Path("templates/cart_abandonment/reminder.en.subject.j2")
CART = {"cart_total": 20.0, "currency": "EUR"}


def copy_project(target: Path) -> Path:
    for part in ("journeys", "templates", "segments"):
        shutil.copytree(ROOT / part, target / part)
    return target


def test_a_template_edit_changes_the_plan_version() -> None:
    project = load_project(ROOT)
    plan = project.plans["cart_abandonment"]
    files = project.trees[plan.templates]
    assert tree_id(files) == plan.templates
    assert "cart_abandonment/reminder.en.subject.j2" in files
    assert "layouts/base.html.j2" in files  # what the parts extend is pinned too


async def test_a_run_keeps_its_templates_when_they_are_edited_or_deleted(
    ts_env: WorkflowEnvironment, settings: Settings, tmp_path: Path
) -> None:
    now = await ts_env.get_current_time()
    home = copy_project(tmp_path / "home")
    before = load_project(home)
    profile = {"email": "p@example.com", "locale": "en", "timezone": timezone_at(now, 12)}
    async with project_store(settings, before) as store:
        kairos = make_kairos(ts_env.client, settings, store)
        await kairos.identify("pinned", profile, consent={"marketing": True})
        await kairos.emit("pinned", "cart_updated", CART)
    # A marketer rewrites the reminder's subject and deploys; then the templates folder is
    # even deleted from the worker's disk. The run that started before renders what it saw.
    (home / SUBJECT).write_text("EDITED: come back\n", encoding="utf-8")
    after = load_project(home)
    assert after.plans["cart_abandonment"].version != before.plans["cart_abandonment"].version
    shutil.rmtree(home / "templates")
    async with project_store(settings, after) as store:
        kairos = make_kairos(ts_env.client, settings, store)
        async with running_worker(ts_env.client, settings, store):
            old = await started(
                ts_env.client, journey_workflow_id("cart_abandonment", "pinned", 1), JourneyResult
            )
            await kairos.identify("fresh", profile, consent={"marketing": True})
            await kairos.emit("fresh", "cart_updated", CART)
            new = await started(
                ts_env.client, journey_workflow_id("cart_abandonment", "fresh", 1), JourneyResult
            )
            results = [await finish(ts_env, handle) for handle in (old, new)]
    assert [r.outcome for r in results] == ["completed", "completed"]
    subjects = {(m["customer_id"], m["step"]): m["subject"] for m in outbox(settings.outbox_dir)}
    assert subjects[("pinned", "first_reminder")] == "You left something in your cart"
    assert subjects[("fresh", "first_reminder")] == "EDITED: come back"
    assert subjects[("pinned", "last_chance_email")] == subjects[("fresh", "last_chance_email")]
