"""``kairos report``: what marketers ask of their journeys, counted from the customer store
(runs, outcomes, the send ledger, stages) and the runs' own step records in Temporal.

The journey here is a plan built in the test, not compiled from YAML. Its condition is compiled
outside the workflow sandbox first, as the compiler does for real journeys: compiling Jinja
inside the sandbox fails (jinja2 is not passed through the sandbox; reported to worker.py's
owner).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from kairos.cli import app
from kairos.cli.base import console
from kairos.cli.report import render_html
from kairos.language import expressions
from kairos.language.plan import (
    BranchCase,
    BranchStep,
    Channel,
    Entry,
    EventMatch,
    EventTrigger,
    ExitStep,
    JourneyPlan,
    PlanStep,
    SendStep,
    SetStep,
    SplitStep,
    SplitVariant,
    Stage,
    WaitStep,
)
from kairos.language.project import Project
from kairos.reporting.experiments import Group
from kairos.reporting.report import (
    JourneyReport,
    Report,
    ReportError,
    build_report,
    in_lifecycle_order,
    parse_since,
)
from kairos.runtime import policy
from kairos.runtime.client import Kairos
from kairos.runtime.config import Settings
from kairos.runtime.contract import SA_JOURNEY, journey_workflow_id
from kairos.store.facade import Store
from tests.conftest import ROOT, make_kairos, running_worker
from tests.helpers import eventually

JOURNEY = "pricing_followup"
SPLIT = "offer_split"
VARIANTS = (
    SplitVariant(name="a", weight=50, next="offer_a"),
    SplitVariant(name="b", weight=50, next="offer_b"),
)
HOLDOUT = 20
CUSTOMERS = [f"rep-{n}" for n in range(10)]
NOT_ELIGIBLE, CANCELLED, UNSUBSCRIBED, RESTARTED = "rep-5", "rep-3", "rep-4", "rep-6"
BUYERS = ["rep-0", "rep-1", "rep-2"]


def pricing_followup() -> JourneyPlan:
    """Someone looked at prices: an offer (variant a or b, or none for the holdout), an hour
    for them to order, restarted whenever they look again."""
    # Compiled once here, as load_project does for every condition (see the module docstring).
    eligible = "(customer.lead_score or 0) > 100"
    assert expressions.check_syntax(eligible) is None
    steps: list[PlanStep] = [
        BranchStep(
            id="eligible",
            cases=(BranchCase(when=eligible, next="not_eligible"),),
            otherwise="into_retention",
        ),
        ExitStep(id="not_eligible", outcome="not_eligible"),
        SetStep(id="into_retention", stage=Stage.retention, next=SPLIT),
        SplitStep(id=SPLIT, variants=VARIANTS, holdout_percent=HOLDOUT, holdout_next="offer_a"),
        SendStep(id="offer_a", channel=Channel.email, template="welcome/welcome", next="wait"),
        SendStep(
            id="offer_b", channel=Channel.email, template="welcome/onboarding_tips", next="wait"
        ),
        WaitStep(id="wait", duration_seconds=3600, next="no_order"),
        ExitStep(id="no_order", outcome="no_order"),
    ]
    return JourneyPlan(
        name=JOURNEY,
        stage=Stage.purchase,
        trigger=EventTrigger(event="pricing_viewed"),
        entry=Entry.restart,
        exit_on=(EventMatch(event="order_placed"),),
        start="eligible",
        ignore_quiet_hours=True,
        steps={s.id: s for s in steps},
    ).with_version()


def variant(customer_id: str) -> str:
    chosen = policy.choose_variant(customer_id, JOURNEY, SPLIT, VARIANTS, HOLDOUT)
    return chosen.name if chosen else "holdout"


async def waiting(kairos: Kairos, customer_id: str) -> bool:
    return bool((await kairos.status(JOURNEY, customer_id)).waiting)


async def seed(dev_env: WorkflowEnvironment, kairos: Kairos) -> None:
    """Ten customers look at prices; three buy, one is cancelled, one looks again. Returns once
    every run that ends has ended (its last activity tells the store)."""

    def run(customer_id: str, run_no: int = 1) -> Any:
        return dev_env.client.get_workflow_handle(journey_workflow_id(JOURNEY, customer_id, run_no))

    for customer_id in CUSTOMERS:
        profile: dict[str, Any] = {"email": f"{customer_id}@example.com", "timezone": "UTC"}
        if customer_id == NOT_ELIGIBLE:
            profile["lead_score"] = 200
        await kairos.identify(customer_id, profile, consent={"marketing": True}, source="test")
        if customer_id == UNSUBSCRIBED:
            await kairos.unsubscribe(customer_id, "marketing")
        await kairos.emit(customer_id, "pricing_viewed", {"plan": "home"}, event_id=customer_id)
    await run(NOT_ELIGIBLE).result()
    for customer_id in CUSTOMERS:
        if customer_id != NOT_ELIGIBLE:
            await eventually(lambda c=customer_id: waiting(kairos, c))  # type: ignore[misc]
    for customer_id in BUYERS:
        order = {"order_id": f"o-{customer_id}", "total": 20.0, "currency": "EUR",
                 "placed_at": datetime.now(UTC).isoformat()}  # fmt: skip
        await kairos.emit(customer_id, "order_placed", order)
        await run(customer_id).result()
    await kairos.cancel(JOURNEY, CANCELLED)
    with pytest.raises(WorkflowFailureError):
        await run(CANCELLED).result()
    # Looking again restarts: run 1 ends restarted and run 2 starts from the top.
    await kairos.emit(RESTARTED, "pricing_viewed", {"plan": "office"}, event_id="again")
    await run(RESTARTED).result()
    await eventually(lambda: waiting(kairos, RESTARTED))
    # "Here now" is Temporal's visibility, which the dev server updates after a run closes:
    # wait until it has seen every run above close (the five still running are counted).
    running = (
        f"ExecutionStatus = 'Running' AND TaskQueue = '{kairos.settings.task_queue}'"
        f" AND {SA_JOURNEY.name} = '{JOURNEY}'"
    )

    async def settled() -> bool:
        return (await dev_env.client.count_workflows(running)).count == 5

    await eventually(settled)


async def feedback(store: Store) -> dict[str, int]:
    """SendGrid's webhook reports every sent email delivered, and the first one opened twice and
    clicked: the report counts messages, so that is one open."""
    sent = await store.database.fetch_all(
        "SELECT key FROM messages WHERE journey = %s AND status = 'sent' ORDER BY key", (JOURNEY,)
    )
    assert sent
    said = [(row["key"], "delivered") for row in sent]
    said += [(sent[0]["key"], "open"), (sent[0]["key"], "open"), (sent[0]["key"], "click")]
    for key, event in said:
        await store.ledger.feedback(
            key, provider="sendgrid", provider_id="", event=event, at=datetime.now(UTC)
        )
    return {"delivered": len(sent), "opened": 1, "clicked": 1}


async def report_of(dev_env: WorkflowEnvironment, settings: Settings, store: Store) -> Report:
    return await build_report(
        store.database,
        dev_env.client,
        settings.task_queue,
        {JOURNEY: pricing_followup()},
        journey=JOURNEY,
    )


@pytest_asyncio.fixture
async def plan_store(settings: Settings, project: Project) -> AsyncIterator[Store]:
    """The store of a project whose only journey is pricing_followup."""
    opened = await Store.open(
        settings, dataclasses.replace(project, plans={JOURNEY: pricing_followup()})
    )
    yield opened
    await opened.close()


async def test_a_journey_report_counts_entries_steps_variants_and_stages(
    dev_env: WorkflowEnvironment, settings: Settings, plan_store: Store, tmp_path: Path
) -> None:
    kairos = make_kairos(dev_env.client, settings, plan_store)
    async with running_worker(dev_env.client, settings, plan_store):
        await seed(dev_env, kairos)
        engaged = await feedback(plan_store)
        report = await report_of(dev_env, settings, plan_store)
        html = await _cli(dev_env, settings, tmp_path)
        # The dev server's visibility cannot count by step: a List places running entries,
        # and when it is cut short the report says its step counts of them are partial.
        bounded = await build_report(
            plan_store.database, dev_env.client, settings.task_queue,
            {JOURNEY: pricing_followup()}, journey=JOURNEY, here_now_limit=2,
        )  # fmt: skip

    journey = report.journeys[0]
    assert (journey.entered, journey.active, journey.converted) == (10, 5, 3)
    assert journey.restarts == 1
    # The rate is of ended entries the journey messaged; the holdout is compared, not mixed in.
    ended = [*BUYERS, CANCELLED, NOT_ELIGIBLE]
    held = [c for c in ended if c != NOT_ELIGIBLE and variant(c) == "holdout"]
    treated_buyers = [c for c in BUYERS if c not in held]
    assert journey.treated == Group(len(ended) - len(held), len(treated_buyers))
    assert journey.holdout == Group(len(held), len(BUYERS) - len(treated_buyers))
    assert journey.rate == pytest.approx(len(treated_buyers) / (len(ended) - len(held)))
    versus_holdout = journey.versus_holdout
    assert versus_holdout is not None and versus_holdout.verdict == "too early"
    # Every buyer's order was worth 20.00 EUR: revenue is read from the goal event itself.
    held_buyers = len(BUYERS) - len(treated_buyers)
    assert journey.revenue == ({"EUR": Decimal(20) * len(treated_buyers)} if treated_buyers else {})
    assert journey.holdout_revenue == ({"EUR": Decimal(20) * held_buyers} if held_buyers else {})
    assert journey.by_locale == {"(unknown)": journey.treated}  # no profile says a locale
    email = journey.by_channel["email"]
    assert {k: email[k] for k in ("sent", "blocked", *engaged)} == {
        "sent": journey.messages["sent"], "blocked": journey.messages["blocked"], **engaged
    }  # fmt: skip
    median = journey.time_to_convert(0.5)
    assert (median is not None and median > timedelta(0)) == bool(treated_buyers)
    assert sum(c.entered for c in journey.cohorts) == 10
    assert sum(c.active for c in journey.cohorts) == 5
    assert sum(c.treated.converted for c in journey.cohorts) == journey.treated.converted
    assert dict(journey.outcomes) == {"converted": 3, "cancelled": 1, "not_eligible": 1}
    assert journey.unrecorded == 0
    assert (journey.running, journey.stale, report.temporal_error) == (5, 0, None)
    assert report.here_now_note is None
    (cut,) = bounded.journeys
    assert (cut.running, cut.stale, sum(s.active for s in cut.steps)) == (5, 0, 2)
    assert bounded.here_now_note is not None and "first 2 " in bounded.here_now_note

    eligible = [c for c in CUSTOMERS if c != NOT_ELIGIBLE]
    sends = [variant(c) for c in eligible] + [variant(RESTARTED)]  # the restart sends again
    # The sends a holdout skipped never reach the ledger: the run records them, with its end.
    held_out = [variant(c) for c in [*BUYERS, CANCELLED]].count("holdout")
    blocked = 0 if variant(UNSUBSCRIBED) == "holdout" else 1
    assert dict(journey.messages) == {
        k: v
        for k, v in {"sent": len(sends) - sends.count("holdout") - blocked, "blocked": blocked,
                     "held_out": held_out, **engaged}.items()
        if v
    }  # fmt: skip

    steps = {s.step: s for s in journey.steps}
    assert [s.step for s in journey.steps] == list(pricing_followup().steps)
    # Ended entries by the steps their runs recorded; running ones where Temporal says they are.
    assert (steps["eligible"].reached, steps["not_eligible"].reached) == (5, 1)
    assert steps["not_eligible"].exits == Counter({"not_eligible": 1})
    assert steps["into_retention"].reached == steps[SPLIT].reached == 4
    done_in_a = sum(1 for c in [*BUYERS, CANCELLED] if variant(c) in ("a", "holdout"))
    assert (steps["offer_a"].reached, steps["offer_b"].reached) == (done_in_a, 4 - done_in_a)
    assert steps["wait"].active == 5
    assert steps["wait"].reached == 5 + 4  # there now, and the four who ended there
    assert steps["wait"].exits == Counter({"cancelled": 1, "converted": 3})

    by_variant = {v.variant: (v.ended, v.converted) for v in journey.variants}
    done = Counter(variant(c) for c in [*BUYERS, CANCELLED])
    bought = Counter(variant(c) for c in BUYERS)
    assert by_variant == {v: (done[v], bought[v]) for v in ("a", "b", "holdout")}
    assert report.stages == {
        "awareness": 0, "consideration": 0, "purchase": 0, "retention": 9, "advocacy": 0,
        "lapsed": 0, "(none)": 1,
    }  # fmt: skip

    # Self-contained: plotly.js is inline, nothing is loaded from anywhere.
    assert 'src="http' not in html and "<link" not in html
    assert f"<h2>{JOURNEY}</h2>" in html and f'data-chart="{JOURNEY}-variants"' in html


async def _cli(dev_env: WorkflowEnvironment, settings: Settings, tmp_path: Path) -> str:
    """``kairos report <journey> --json --html`` against the same server; returns the page."""
    page = tmp_path / "report.html"
    env = {
        "KAIROS_HOME": str(ROOT),
        "NO_COLOR": "1",
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "KAIROS_TASK_QUEUE": settings.task_queue,
        "KAIROS_DATABASE_URL": settings.database_url,
    }
    table = tmp_path / "report.csv"
    command = ["report", JOURNEY, "--since", "1h", "--json", "--html", str(page)]
    command += ["--csv", str(table)]
    result = await asyncio.to_thread(CliRunner().invoke, app, command, env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    shown = data["journeys"][0]
    assert shown["entered"] == 10
    messaged = shown["messaged"]
    assert shown["conversion_rate"] == pytest.approx(messaged["converted"] / messaged["ended"])
    assert shown["versus_holdout"]["verdict"] == "too early"
    assert sum(Decimal(v) for v in shown["revenue"].values()) % 20 == 0
    assert {v["variant"] for v in shown["variants"] if v["versus_holdout"]} == {"a", "b"}
    rows = list(csv.reader(table.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == ["journey", "figure", "value"]
    assert [JOURNEY, "entered", "10"] in rows and [JOURNEY, "steps.wait.active", "5"] in rows
    assert ["", "stages.retention", "9"] in rows
    # The console is made once per process, so COLUMNS is read only if no test printed before.
    narrow, console.width = console.width, 200
    try:
        printed = await asyncio.to_thread(CliRunner().invoke, app, command[:4], env=env)
    finally:
        console.width = narrow
    assert printed.exit_code == 0, printed.output
    assert "against the holdout" in printed.output and "too early" in printed.output
    return page.read_text(encoding="utf-8")


def test_the_window_reads_like_the_rest_of_kairos() -> None:
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-02-01", now) == datetime(2026, 2, 1, tzinfo=UTC)
    assert parse_since("all", now) is None
    with pytest.raises(ReportError, match="a duration such as 7d"):
        parse_since("last week", now)


def test_an_outcome_has_one_colour_in_every_journeys_chart() -> None:
    from kairos.reporting.charts import outcome_colour

    assert outcome_colour("converted") != outcome_colour("cancelled")
    assert outcome_colour("lapsed") == outcome_colour("lapsed")
    won = render_html(
        Report(
            generated=datetime(2026, 11, 30, tzinfo=UTC), since=None, task_queue="q",
            journeys=[_ended(name, outcomes) for name, outcomes in (
                ("welcome", {"completed": 2, "converted": 1}),
                ("win_back", {"converted": 3, "lapsed": 1}),
            )],
            stages={},
        )
    )  # fmt: skip
    green = f'"color":"{outcome_colour("converted")}"'
    sections = won.split("<h2>")[2:4]
    assert [section.split("<")[0] for section in sections] == ["welcome", "win_back"]
    assert all(green in section for section in sections)


def _ended(name: str, outcomes: dict[str, int]) -> JourneyReport:
    report = JourneyReport(journey=name, entered=sum(outcomes.values()))
    report.outcomes.update(outcomes)
    return report


def test_journeys_are_listed_in_lifecycle_order(project: Project) -> None:
    found = [
        JourneyReport(journey=name, stage=plan.stage)
        for name, plan in sorted(project.plans.items())
    ]
    found.append(JourneyReport(journey="adhoc"))  # built in code, no stage: last
    assert [j.journey for j in in_lifecycle_order(found)] == [
        "nurture", "sales_handover", "welcome", "cart_abandonment", "flash_sale", "win_back",
        "referral_reward", "adhoc",
    ]  # fmt: skip
