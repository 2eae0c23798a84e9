"""Record real histories of every journey path for the replay test.

    .venv/bin/python -m tests.record_histories [TAG]

Each scenario runs on a fresh time-skipping Temporal and a throwaway PostgreSQL with the real
worker, then its runs' histories are written to tests/fixtures/histories/TAG-<journey>-<scenario>
-<run>.json. Run it when the interpreter gains behaviour worth pinning; never delete a recording
that runs in production may still have (the replay test holds today's code to all of them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from kairos.language.plan import BranchStep, JourneyPlan
from kairos.language.project import Project, load_project
from kairos.runtime.config import load_settings
from kairos.runtime.contract import JourneyInput, JourneyResult, journey_workflow_id
from kairos.runtime.temporal import register_search_attributes
from kairos.store.database import Database, with_database
from kairos.store.embedded import temporary_server
from kairos.store.facade import Store
from kairos.tools.dev import temporal_binary
from tests.conftest import ROOT, make_kairos, running_worker
from tests.helpers import finish, schedule, started, timezone_at

HISTORIES = Path(__file__).parent / "fixtures" / "histories"
Later = list[tuple[timedelta, str, dict[str, Any]]]


@dataclass
class Scenario:
    """One path through a journey: who, what they do, and which runs to record."""

    journey: str
    customer: str
    profile: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    later: Later = field(default_factory=list)
    runs: int = 1  # runs of the journey to record (a restart makes a second)
    cancel_after: timedelta | None = None
    # Start the run directly with this history bound, so that it continues as new.
    max_history: int | None = None
    # A plan of the test's own instead of the project's journey of that name.
    plan: Callable[[Project], JourneyPlan] | None = None


def jammed(project: Project) -> JourneyPlan:
    """Cart abandonment whose first branch compares a number with text: a problem, not a jam."""
    plan = project.plans["cart_abandonment"]
    steps = dict(plan.steps)
    branch = steps["cart_still_full"]
    assert isinstance(branch, BranchStep)
    cases = (branch.cases[0].model_copy(update={"when": "customer.cart_total > 'x'"}),)
    steps["cart_still_full"] = branch.model_copy(update={"cases": cases})
    return plan.model_copy(update={"steps": steps}).with_version()


def scenarios(now: datetime) -> list[Scenario]:
    noon = {"email": "c@example.com", "first_name": "Cy", "locale": "fi",
            "timezone": timezone_at(now, 12)}  # fmt: skip
    night = {**noon, "timezone": timezone_at(now, 2)}
    phone = {**noon, "phone": "+358401234567"}
    order = {"order_id": "o", "total": 9.0, "currency": "EUR", "placed_at": now.isoformat()}
    cart = {"cart_total": 30.0, "currency": "EUR"}
    bigger = {"cart_total": 45.0, "currency": "EUR"}
    return [
        Scenario("cart_abandonment", "cart-sms", phone, [("cart_updated", cart)]),
        Scenario("cart_abandonment", "cart-won", noon, [("cart_updated", cart)],
                 [(timedelta(hours=2), "order_placed", order)]),
        Scenario("cart_abandonment", "cart-restart", noon, [("cart_updated", cart)],
                 [(timedelta(minutes=40), "cart_updated", bigger)], runs=2),
        Scenario("cart_abandonment", "cart-night", night, [("cart_updated", cart)]),
        Scenario("welcome", "welcome", noon, [("signed_up", noon)]),
        Scenario("welcome", "welcome-cancelled", noon, [("signed_up", noon)],
                 cancel_after=timedelta(days=1)),
        Scenario("nurture", "nurture", noon, [("lead_captured", {**noon, "interest": "filter"})],
                 [(timedelta(hours=3), "webinar_attended", {"webinar_id": "w"}),
                  (timedelta(hours=6), "pricing_viewed", {})]),
        Scenario("win_back", "win-back", noon, [("order_placed", order)]),
        Scenario("referral_reward", "referral", phone, [("referral_converted", {})]),
        Scenario("cart_abandonment", "cart-failed", {**noon, "email": "a<b@example.com"},
                 [("cart_updated", cart)]),
        Scenario("welcome", "welcome-continued", noon, [], max_history=30),
        Scenario("cart_abandonment", "cart-problem", noon, [("cart_updated", cart)],
                 plan=jammed),
    ]  # fmt: skip


async def record(tag: str, only: Callable[[Scenario], bool] = lambda s: True) -> list[Path]:
    """Run every scenario and write its histories; returns the files written."""
    HISTORIES.mkdir(parents=True, exist_ok=True)
    project = load_project(ROOT)
    written: list[Path] = []
    with temporary_server(Path(tempfile.gettempdir())) as admin:
        for index, scenario in enumerate(scenarios(datetime.now().astimezone())):
            if not only(scenario):
                continue
            name = f"record_{index}_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            url = with_database(admin, name)
            async with await Database.open(url, check_schema=False) as database:
                await database.upgrade()
            written += await _record_one(tag, index, project, url)
    return written


async def _record_one(tag: str, index: int, project: Any, url: str) -> list[Path]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_binary("temporal-test-server")),
        data_converter=pydantic_data_converter,
    )
    written = []
    async with env:
        await register_search_attributes(env.client)
        scenario = scenarios(await env.get_current_time())[index]
        with tempfile.TemporaryDirectory() as outbox:
            settings = dataclasses.replace(
                load_settings({"KAIROS_HOME": str(ROOT)}, dotenv=False),
                outbox_dir=Path(outbox),
                task_queue=f"record-{uuid.uuid4()}",
                database_url=url,
            )
            if scenario.plan is not None:
                plan = scenario.plan(project)
                project = dataclasses.replace(project, plans={**project.plans, plan.name: plan})
            store = await Store.open(settings, project)
            kairos = make_kairos(env.client, settings, store)
            customer = scenario.customer
            try:
                async with running_worker(env.client, settings, store):
                    await kairos.identify(
                        customer, scenario.profile, consent={"marketing": True, "sms": True}
                    )
                    for name, properties in scenario.events:
                        await kairos.emit(customer, name, properties)
                    first = journey_workflow_id(scenario.journey, customer, 1)
                    direct = None
                    if scenario.max_history is not None:
                        direct = await env.client.start_workflow(
                            "Journey",
                            JourneyInput(
                                plan=project.plans[scenario.journey], customer_id=customer,
                                run_no=1, max_history=scenario.max_history,
                                timezone_attribute="timezone",
                            ),
                            id=first, task_queue=settings.task_queue,
                        )  # fmt: skip
                    handle = await started(env.client, first, JourneyResult)
                    await schedule(env.client, settings.task_queue, customer, scenario.later)
                    if scenario.cancel_after is not None:
                        await env.sleep(scenario.cancel_after)
                        await kairos.cancel(scenario.journey, customer)
                    for run_no in range(1, scenario.runs + 1):
                        workflow_id = journey_workflow_id(scenario.journey, customer, run_no)
                        handle = await started(env.client, workflow_id, JourneyResult)
                        try:
                            if direct is None:
                                await finish(env, handle)
                            else:  # started by the SDK: it unlocks time skipping itself
                                await direct.result()
                        except Exception as err:  # a cancelled run fails its result
                            print("ended with", type(err).__name__)
                        chain: list[tuple[str, str | None]] = [("", None)]
                        if direct is not None and run_no == 1:
                            # The run that continued as new, not only the one that ended.
                            chain.append(("-first", direct.first_execution_run_id))
                        for suffix, run_id in chain:
                            history = await env.client.get_workflow_handle(
                                workflow_id, run_id=run_id
                            ).fetch_history()
                            name = f"{tag}-{scenario.journey}-{customer}-{run_no}{suffix}.json"
                            (HISTORIES / name).write_text(history.to_json())
                            written.append(HISTORIES / name)
                            print("recorded", name)
            finally:
                await store.close()
    return written


if __name__ == "__main__":
    import sys

    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
