"""The Kairos worker: compile the journeys, open the customer store, connect to Temporal,
register the journey workflow and its activities, run. ``worker.py`` at the top of the project
and ``kairos worker`` both run :func:`main`; tools that run a worker in their own process
(``kairos dev``, ``kairos simulate``, the tests) build one with :func:`build_worker`.

One process per host; scale out by running more of them against the same Temporal and
PostgreSQL. It refuses to start when a journey does not compile or the database schema is not
the one it knows, and says why. Next to the Temporal worker it sweeps the store for Temporal
calls that an accepting process could not make (it died, or Temporal was down), and once a
minute brings what changes with the clock up to date: scores lose their expired points, and
segments that trigger journeys gain and lose members ("no order for 60 days").
SIGINT/SIGTERM drain gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.actions import Actions
from activities.broadcasts import Broadcasts
from activities.customers import CustomerActivities
from activities.messaging import Messaging
from activities.metrics import DeliveryMetrics, prometheus_runtime
from activities.providers import EmailSender, SmsSender, build_senders
from kairos.language.catalogue import AttrType
from kairos.language.plan import Channel
from kairos.language.problems import ProjectError
from kairos.language.project import load_project
from kairos.runtime.client import Kairos
from kairos.runtime.config import ConfigError, Settings, deployment_problems, load_settings
from kairos.runtime.delivery import send_queue
from kairos.runtime.exits import exit_process
from kairos.runtime.temporal import connect, start_journey
from kairos.store.database import StoreError
from kairos.store.dispatch import Dispatcher, JourneyStarter, repeat
from kairos.store.facade import Store
from workflows.broadcast import BroadcastWorkflow
from workflows.journey import JourneyWorkflow

log = logging.getLogger("kairos.worker")

# How often the worker sweeps scores and trigger segments for what changed with time alone.
SEGMENT_SWEEP_SECONDS = 60.0


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
    store: Store,
    *,
    task_queue: str | None = None,
    email: EmailSender | None = None,
    sms: SmsSender | None = None,
    extra_workflows: Sequence[type] = (),
    journeys: Sequence[type] = (JourneyWorkflow,),
    start: JourneyStarter = start_journey,
) -> Workers:
    """A worker with every Kairos workflow and activity; providers default to configuration.

    It is one Temporal worker on the task queue and one per channel on that channel's send
    queue (kairos.runtime.delivery.send_queue), whose rate ``settings.rates`` limits across all
    workers.

    ``extra_workflows`` lets simulations and tests add their own (the event schedule);
    ``journeys`` (with ``start``, which starts them) lets the benchmark run hand-written
    journeys on the same store, activities, sandbox and tuning.
    """
    if email is None or sms is None:
        default_email, default_sms = build_senders(settings)
        email = email or default_email
        sms = sms or default_sms
    queue = task_queue or settings.task_queue
    kairos = Kairos(store, dispatcher(store, client, queue, start=start), settings)
    customers = CustomerActivities(kairos)
    messaging = Messaging(
        customers, settings, store.project.templates, email, sms, DeliveryMetrics.of(client)
    )
    actions = Actions(settings.outbox_dir)
    journeys_worker = Worker(
        client,
        task_queue=queue,
        workflows=[*journeys, BroadcastWorkflow, *extra_workflows],
        workflow_runner=workflow_runner(),
        activities=[
            messaging.deliver,
            messaging.record_failed_send,
            customers.change_profile,
            customers.end_run,
            customers.note_problems,
            customers.accept_event,
            actions.run_action,
            Broadcasts(kairos).broadcast_group,
        ],
        graceful_shutdown_timeout=timedelta(seconds=20),
        max_cached_workflows=settings.max_cached_workflows,
    )
    senders = [
        send_worker(client, queue, channel, settings.rates.get(channel), [messaging.deliver])
        for channel in Channel
    ]
    return Workers([journeys_worker, *senders])


def send_worker(
    client: Client,
    task_queue: str,
    channel: Channel,
    rate: float | None,
    activities: Sequence[Callable[..., Any]],
) -> Worker:
    """The worker of one channel's send queue: ``rate`` messages a second at most, across every
    worker polling that queue (Temporal enforces it on the server); None for no limit."""
    return Worker(
        client,
        task_queue=send_queue(task_queue, channel),
        activities=activities,
        max_task_queue_activities_per_second=rate,
        graceful_shutdown_timeout=timedelta(seconds=20),
    )


class Workers:
    """Temporal workers run together as one: ``async with`` starts them all and drains them
    all (in-flight activities finish) on the way out."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = tuple(workers)
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> Workers:
        async with AsyncExitStack() as stack:
            for worker in self.workers:
                await stack.enter_async_context(worker)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None


def dispatcher(
    store: Store, client: Client, task_queue: str, *, start: JourneyStarter = start_journey
) -> Dispatcher:
    """The dispatcher that makes the store's Temporal calls on this task queue."""
    timezone = store.catalogue.attribute_of_type(AttrType.timezone)
    return Dispatcher(store.database, client, task_queue, timezone, start=start, keys=store.keys)


async def sweep_time_forever(
    store: Store, sweeper: Dispatcher, stop: asyncio.Event, every: float = SEGMENT_SWEEP_SECONDS
) -> None:
    """Every ``every`` seconds until ``stop`` is set: take expired points off the scores (and
    tell the runs that read them), then bring the trigger segments up to date (a score that
    fell may take a customer out of one) and make the signals and starts these decided."""

    async def sweep() -> None:
        expired = await store.expire_points()
        swept = await store.sweep_segments()
        if expired.changed or swept.entered or swept.left:
            log.info(
                "time sweep: %d scores lost expired points (%d customers' runs told);"
                " %d entered and %d left segments",
                expired.changed, len(expired.signalled), swept.entered, swept.left,
            )  # fmt: skip
        await sweeper.run([*expired.signalled, *swept.customers], wait=False)

    await repeat(sweep, stop, every, "time sweep")


async def compact_report_forever(
    store: Store, stop: asyncio.Event, every: float = SEGMENT_SWEEP_SECONDS
) -> None:
    """Every ``every`` seconds until ``stop`` is set: fold the differences writers appended to
    the report's rollups, so that a report sums one row per key."""
    await repeat(store.compact_report, stop, every, "report compaction")


async def run(settings: Settings) -> int:
    refused = deployment_problems(settings)
    if refused:
        # The worker mints unsubscribe links and writes to Temporal: the same rule as serve.
        print(f"kairos worker: refusing to start: {'; '.join(refused)}", file=sys.stderr)
        return 2
    try:
        project = load_project(
            settings.home, actions=settings.actions, cache=settings.project_cache
        )
    except ProjectError as err:
        print(
            f"kairos worker: the journeys do not compile, refusing to start:\n{err}",
            file=sys.stderr,
        )
        return 1
    try:
        store = await Store.open(settings, project)
    except StoreError as err:
        print(f"kairos worker: {err}", file=sys.stderr)
        return 1
    try:
        try:
            runtime = prometheus_runtime(settings.metrics) if settings.metrics else None
        except ValueError as err:
            print(f"kairos worker: KAIROS_METRICS={settings.metrics}: {err}", file=sys.stderr)
            return 1
        try:
            client = await connect(settings, store.keys, runtime=runtime)
        except RuntimeError as err:
            target = settings.temporal.get("target_host", "localhost:7233")
            print(f"kairos worker: cannot reach Temporal at {target}: {err}", file=sys.stderr)
            return 1
        worker = build_worker(client, settings, store)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        journeys = ", ".join(f"{p.name}@{p.version}" for p in project.plans.values())
        log.info(
            "worker on task queue %r with journeys: %s", settings.task_queue, journeys or "none"
        )
        if settings.metrics:
            log.info("metrics at http://%s/metrics", settings.metrics)
        calls = dispatcher(store, client, settings.task_queue)
        sweepers = [
            asyncio.create_task(calls.sweep_forever(stop)),
            asyncio.create_task(compact_report_forever(store, stop)),
        ]
        if store.changes_with_time:
            sweepers.append(asyncio.create_task(sweep_time_forever(store, calls, stop)))
        async with worker:
            await stop.wait()
            log.info("shutting down: finishing activities in flight")
        await asyncio.gather(*sweepers)
    finally:
        await store.close()
    return 0


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"kairos worker: {err}", file=sys.stderr)
        exit_process(2)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    exit_process(asyncio.run(run(settings)))
