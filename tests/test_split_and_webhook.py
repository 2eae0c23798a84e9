"""Splits with a holdout, and webhook actions, run by the real interpreter."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.language.plan import (
    ActionStep,
    Channel,
    JourneyPlan,
    SendStep,
    SplitStep,
    SplitVariant,
    Webhook,
)
from kairos.language.project import Project
from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from kairos.runtime.policy import choose_variant
from tests.conftest import make_kairos, project_store, running_worker
from tests.helpers import finish, outbox, started, timezone_at


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local webhook receiver that records each JSON body and answers with a ticket."""
    calls: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            calls.append({"body": json.loads(body), "key": self.headers["Idempotency-Key"]})
            answer = json.dumps({"ticket": f"T{len(calls)}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/crm", calls
    server.shutdown()


def experiment(url: str) -> JourneyPlan:
    variants = (
        SplitVariant(name="a", weight=50, next="mail_a"),
        SplitVariant(name="b", weight=50, next="mail_b"),
    )
    steps: dict[str, Any] = {
        "test": SplitStep(id="test", variants=variants, holdout_percent=20, holdout_next="mail_a"),
        "mail_a": SendStep(
            id="mail_a", channel=Channel.email, template="welcome/welcome", next="tell_crm"
        ),
        "mail_b": SendStep(
            id="mail_b", channel=Channel.email, template="welcome/welcome", next="tell_crm"
        ),
        "tell_crm": ActionStep(
            id="tell_crm",
            webhook=Webhook(
                url=url, body={"customer": "{{ customer.id }}", "variant": "{{ journey.variant }}"}
            ),
            save_as="crm",
        ),
    }
    return JourneyPlan(
        name="experiment", locales=("en", "fi", "de"), start="test", steps=steps
    ).with_version()


async def test_a_split_sends_each_variant_and_holds_out_a_share_that_gets_nothing(
    ts_env: WorkflowEnvironment,
    settings: Settings,
    project: Project,
    hook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, calls = hook
    now = await ts_env.get_current_time()
    plan = experiment(url)
    test_project = dataclasses.replace(project, plans={"experiment": plan})
    customers = [f"p{n}" for n in range(12)]
    results: dict[str, JourneyResult] = {}
    async with (
        project_store(settings, test_project) as store,
        running_worker(ts_env.client, settings, store),
    ):
        kairos = make_kairos(ts_env.client, settings, store)
        for customer in customers:
            profile = {"email": f"{customer}@example.com", "timezone": timezone_at(now, 12)}
            await kairos.identify(customer, profile, consent={"marketing": True})
            await kairos.start("experiment", customer)
            handle = await started(
                ts_env.client, journey_workflow_id("experiment", customer, 1), JourneyResult
            )
            results[customer] = await finish(ts_env, handle)

    split = plan.steps["test"]
    assert isinstance(split, SplitStep)
    expected = {
        c: (choose_variant(c, "experiment", "test", split.variants, 20) or None) for c in customers
    }
    held = [c for c, v in expected.items() if v is None]
    assert held, "pick customers so that some fall in the holdout"
    for customer, result in results.items():
        variant = expected[customer]
        status = result.messages[0].status
        assert status == ("held_out" if variant is None else "sent")
        step = result.messages[0].key.split(":")[-2]
        assert step == ("mail_a" if variant is None or variant.name == "a" else "mail_b")
    assert len(outbox(settings.outbox_dir)) == len(customers) - len(held)
    # Every run told the CRM, with its variant, rendered; the result was saved for later steps.
    told = {c["body"]["customer"]: c["body"]["variant"] for c in calls}
    assert told == {c: ("holdout" if v is None else v.name) for c, v in expected.items()}
    assert len({c["key"] for c in calls}) == len(customers)
