"""A benchmark worker process: ``python -m benchmarks.worker --side kairos|baseline|plain``.

The harness starts one or two of these against the same dev server and the same PostgreSQL
store. ``kairos`` is the real worker (``worker.build_worker``: the journey interpreter and the
store's activities); ``baseline`` is the same worker with the hand-written journeys in place of
the interpreter, started by the same dispatcher through :func:`benchmarks.baseline.start_baseline`;
``plain`` runs the plain anchor (:class:`benchmarks.baseline.PlainTwoSends`) the same way.
All deliver to a local outbox, with quiet hours and frequency caps off so that every message
goes out when the journey sends it, and both sweep the store for Temporal calls left behind, as
a production worker does.

It prints ``ready`` once it polls, and drains and exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
from pathlib import Path

from temporalio.client import Client

from activities.providers.outbox import OutboxEmailSender, OutboxSmsSender
from benchmarks.baseline import BASELINE_WORKFLOWS, PlainTwoSends, start_baseline, start_plain
from kairos.language.project import load_project
from kairos.runtime.config import Settings, load_settings
from kairos.runtime.temporal import connect, start_journey
from kairos.store.dispatch import JourneyStarter
from kairos.store.facade import Store
from kairos.worker import Workers, build_worker, dispatcher

SIDES = ("kairos", "baseline", "plain")
# What starts a run on each side: the interpreter, or the journey's hand-written twin.
STARTERS: dict[str, JourneyStarter] = {
    "kairos": start_journey,
    "baseline": start_baseline,
    "plain": start_plain,
}


def bench_settings(
    home: Path, address: str, task_queue: str, outbox: Path, database_url: str
) -> Settings:
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
        database_url=database_url,
    )


def build_side_worker(side: str, client: Client, settings: Settings, store: Store) -> Workers:
    """``worker.build_worker`` for one side: the same store, activities, sandbox and tuning;
    the baseline registers the hand-written journeys instead of the interpreter."""
    email = OutboxEmailSender(settings.outbox_dir)
    sms = OutboxSmsSender(settings.outbox_dir)
    if side == "kairos":
        return build_worker(client, settings, store, email=email, sms=sms)
    if side == "plain":
        journeys: list[type] = [PlainTwoSends]
    else:
        journeys = [cls for _, cls in BASELINE_WORKFLOWS.values()]
    return build_worker(
        client, settings, store, email=email, sms=sms, journeys=journeys, start=STARTERS[side]
    )


async def serve(side: str, settings: Settings) -> None:
    """Run one worker of ``side`` (and its dispatch sweeper) until SIGTERM or SIGINT."""
    project = load_project(settings.home)
    store = await Store.open(settings, project)
    try:
        client = await connect(settings, store.keys)
        worker = build_side_worker(side, client, settings, store)
        sweeper = dispatcher(store, client, settings.task_queue, start=STARTERS[side])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sweeping = asyncio.create_task(sweeper.sweep_forever(stop))
        async with worker:
            print("ready", flush=True)
            await stop.wait()
        await sweeping
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker", description=__doc__)
    parser.add_argument("--side", choices=SIDES, required=True)
    parser.add_argument("--address", required=True, help="host:port of the Temporal frontend")
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--home", type=Path, required=True, help="the benchmark project home")
    parser.add_argument("--outbox", type=Path, required=True)
    parser.add_argument("--database-url", required=True, help="the run's PostgreSQL database")
    args = parser.parse_args(argv)
    settings = bench_settings(
        args.home, args.address, args.task_queue, args.outbox, args.database_url
    )
    asyncio.run(serve(args.side, settings))


if __name__ == "__main__":
    main()
