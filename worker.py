"""The Kairos worker: connect, compile the journeys, register workflows and activities, run.

One process per host; scale out by running more of them against the same Temporal. It refuses
to start when a journey does not compile, and says why. SIGINT/SIGTERM drain gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.actions import Actions, load_action_modules
from activities.messaging import Messaging
from activities.providers import EmailSender, SmsSender, build_senders
from activities.routing import Routing
from kairos.compiler import Project, load_project
from kairos.config import ConfigError, Settings, load_settings
from kairos.problems import ProjectError
from kairos.temporal import connect
from kairos.web.phonebook import PhoneWorkflow
from workflows.customer import CustomerWorkflow
from workflows.journey import JourneyWorkflow

log = logging.getLogger("kairos.worker")


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox the workflows run in, for workers and replayers alike."""
    # Conditions are Jinja; compiled expressions import jinja2 at evaluation time.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "kairos", "jinja2", "markupsafe"
        )
    )


def build_worker(
    client: Client,
    settings: Settings,
    project: Project,
    *,
    task_queue: str | None = None,
    email: EmailSender | None = None,
    sms: SmsSender | None = None,
    extra_workflows: Sequence[type] = (),
    journeys: Sequence[type] = (JourneyWorkflow,),
    routing_class: type[Routing] = Routing,
) -> Worker:
    """A worker with every Kairos workflow and activity; providers default to configuration.

    ``extra_workflows`` lets simulations and tests add their own (the event schedule);
    ``journeys`` and ``routing_class`` let the benchmark run hand-written journeys on the same
    entity, activities, sandbox and tuning.
    """
    if email is None or sms is None:
        default_email, default_sms = build_senders(settings)
        email = email or default_email
        sms = sms or default_sms
    queue = task_queue or settings.task_queue
    messaging = Messaging(client, settings, project.catalogue, project.templates, email, sms)
    routing = routing_class(client, queue, project, settings.secret)
    actions = Actions(settings.outbox_dir)
    return Worker(
        client,
        task_queue=queue,
        workflows=[*journeys, CustomerWorkflow, PhoneWorkflow, *extra_workflows],
        workflow_runner=workflow_runner(),
        activities=[
            messaging.deliver,
            routing.route_event,
            routing.forget_customer,
            actions.run_action,
        ],
        graceful_shutdown_timeout=timedelta(seconds=20),
        max_cached_workflows=settings.max_cached_workflows,
    )


async def run(settings: Settings) -> int:
    try:
        project = load_project(settings.home)
    except ProjectError as err:
        print(
            f"kairos worker: the journeys do not compile, refusing to start:\n{err}",
            file=sys.stderr,
        )
        return 1
    load_action_modules(os.environ.get("KAIROS_ACTIONS", ""))
    client = await connect(settings)
    worker = build_worker(client, settings, project)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    journeys = ", ".join(f"{p.name}@{p.version}" for p in project.plans.values())
    log.info("worker on task queue %r with journeys: %s", settings.task_queue, journeys or "none")
    async with worker:
        await stop.wait()
        log.info("shutting down: finishing activities in flight")
    return 0


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("KAIROS_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"kairos worker: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(asyncio.run(run(settings)))


if __name__ == "__main__":
    main()
