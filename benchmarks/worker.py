"""A benchmark worker process: ``python -m benchmarks.worker --side kairos|baseline ...``.

The harness starts one or two of these against the same dev server. ``kairos`` is the real
worker (``worker.build_worker``: the journey interpreter and the customer entity); ``baseline``
registers the same customer entity and the same ``deliver``, ``run_action`` and routing
activities next to the hand-written journeys. Both deliver to a local outbox, with quiet hours
and frequency caps off so that every message goes out when the journey sends it.

It prints ``ready`` once it polls, and drains and exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.worker import Worker

from activities.providers.outbox import OutboxEmailSender, OutboxSmsSender
from activities.routing import Routing
from benchmarks.baseline import BASELINE_WORKFLOWS, VERSION, BaselineInput
from kairos.compiler import Project, load_project
from kairos.config import Settings, load_settings
from kairos.plan import Entry, JourneyPlan
from kairos.runtime import (
    SA_CUSTOMER,
    SA_JOURNEY,
    SA_STAGE,
    SA_VERSION,
    SIGNAL_TRIGGER,
    Event,
    RoutedEvent,
    RouteRequest,
    journey_workflow_id,
)
from kairos.temporal import connect
from worker import build_worker

SIDES = ("kairos", "baseline")


def bench_settings(home: Path, address: str, task_queue: str, outbox: Path) -> Settings:
    """Settings for a benchmark process: outbox delivery, no quiet hours, no frequency caps."""
    base = load_settings({"KAIROS_HOME": str(home)}, dotenv=False)
    return dataclasses.replace(
        base,
        task_queue=task_queue,
        temporal={"target_host": address, "namespace": "default"},
        email_provider="outbox",
        sms_provider="outbox",
        outbox_dir=outbox,
        quiet_hours=None,
        caps={},
    )


class BaselineRouting(Routing):
    """The same routing, starting the hand-written twin of each journey instead of the plan."""

    async def _enter(
        self, plan: JourneyPlan, request: RouteRequest, event: Event, profile: dict[str, Any]
    ) -> bool:
        if plan.entry is Entry.once and plan.name in request.entered:
            return False
        if plan.entry is Entry.restart:
            routed = RoutedEvent(event=event, profile=profile)
            if await self._signal(plan, request.customer_id, SIGNAL_TRIGGER, routed):
                return False
        try:
            await start_baseline(self.client, self.task_queue, plan, request.customer_id,
                                 profile=profile, trigger=event)  # fmt: skip
        except WorkflowAlreadyStartedError:
            return False
        return True


async def start_baseline(
    client: Client,
    task_queue: str,
    plan: JourneyPlan,
    customer_id: str,
    *,
    profile: dict[str, Any],
    trigger: Event,
) -> None:
    """Start the hand-written twin of ``plan`` as ``kairos.temporal.start_journey`` would."""
    attributes = [
        SearchAttributePair(SA_CUSTOMER, customer_id),
        SearchAttributePair(SA_JOURNEY, plan.name),
        SearchAttributePair(SA_VERSION, VERSION),
    ]
    if plan.stage:
        attributes.append(SearchAttributePair(SA_STAGE, plan.stage.value))
    workflow_type, _ = BASELINE_WORKFLOWS[plan.name]
    await client.start_workflow(
        workflow_type,
        BaselineInput(customer_id=customer_id, profile=profile, trigger=trigger),
        id=journey_workflow_id(plan.name, customer_id),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(attributes),
        static_summary=f"{plan.name} (hand-written) for customer {customer_id}, on {trigger.name}",
    )


def build_baseline_worker(client: Client, settings: Settings, project: Project) -> Worker:
    """The baseline worker: ``worker.build_worker`` with the hand-written journeys in place of
    the interpreter (same entity, phonebook, activities, sandbox and tuning)."""
    return build_worker(
        client,
        settings,
        project,
        email=OutboxEmailSender(settings.outbox_dir),
        sms=OutboxSmsSender(settings.outbox_dir),
        journeys=[cls for _, cls in BASELINE_WORKFLOWS.values()],
        routing_class=BaselineRouting,
    )


async def serve(side: str, settings: Settings) -> None:
    """Run one worker of ``side`` until SIGTERM or SIGINT."""
    project = load_project(settings.home)
    client = await connect(settings)
    if side == "kairos":
        worker = build_worker(client, settings, project)
    else:
        worker = build_baseline_worker(client, settings, project)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        print("ready", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker", description=__doc__)
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--address", required=True, help="host:port of the Temporal frontend")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--home", type=Path, required=True, help="the benchmark project home")
    parser.add_argument("--outbox", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = bench_settings(args.home, args.address, args.task_queue, args.outbox)
    asyncio.run(serve(args.side, settings))


if __name__ == "__main__":
    main()
