"""A channel's send rate holds across workers: Temporal hands out no more sends a second on a
channel's send queue than its rate (KAIROS_RATE_EMAIL, KAIROS_RATE_SMS), whichever worker
polls it. Needs the real dev server: the time-skipping test server does not limit rates."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from kairos.language.plan import Channel
from kairos.runtime.delivery import send_queue
from kairos.worker import Workers, send_worker

RATE = 2.0  # SMS a second, as KAIROS_RATE_SMS=2 sets it
SENDS = 12


@workflow.defn(sandboxed=False)
class Broadcast:
    """Twelve SMS sends at once, as a broadcast's journeys would schedule them."""

    @workflow.run
    async def run(self, count: int) -> int:
        queue = send_queue(workflow.info().task_queue, Channel.sms)
        sent = await asyncio.gather(
            *(
                workflow.execute_activity(
                    "deliver", n, task_queue=queue, start_to_close_timeout=timedelta(minutes=1)
                )
                for n in range(count)
            )
        )
        return len(sent)


class Clock:
    """A ``deliver`` that notes when Temporal handed out each send.

    The server's start time of the attempt, not this process's clock: on a busy machine a
    worker starved of CPU runs the sends it was given seconds apart all at once, which says
    nothing about the rate Temporal hands them out at.
    """

    def __init__(self) -> None:
        self.starts: list[float] = []

    @activity.defn(name="deliver")
    async def deliver(self, n: int) -> int:
        self.starts.append(activity.info().started_time.timestamp())
        return n


def busiest(starts: Sequence[float], window: float) -> int:
    """The most sends that started within any ``window`` seconds."""
    return max(sum(1 for t in starts if s <= t < s + window) for s in starts)


@pytest.mark.timeout(120)
async def test_an_sms_broadcast_never_exceeds_the_channels_rate_across_two_workers(
    dev_env: WorkflowEnvironment,
) -> None:
    client, queue, clock = dev_env.client, f"rate-{uuid.uuid4()}", Clock()
    journeys = Worker(client, task_queue=queue, workflows=[Broadcast])
    # Two workers, each with its own connection, as two worker processes would have.
    target = client.service_client.config.target_host
    # Each with the same data converter: payloads are encrypted (kairos.runtime.codec).
    connections = [
        await Client.connect(
            target, namespace=client.namespace, data_converter=client.data_converter
        )
        for _ in range(2)
    ]
    two = [send_worker(c, queue, Channel.sms, RATE, [clock.deliver]) for c in connections]

    async with Workers([journeys, *two]):
        sent = await client.execute_workflow(
            Broadcast.run, SENDS, id=f"broadcast-{uuid.uuid4()}", task_queue=queue
        )

    assert sent == SENDS and len(clock.starts) == SENDS
    # Unlimited, all twelve start at once. Limited, the server hands them out over seconds: a
    # burst plus the rate, where its token buckets (one per task queue partition) and two
    # pollers on a loaded machine let one more through now and then (7 of 12 once seen in two
    # seconds, against 6) — never anything like all of them.
    assert busiest(clock.starts, 2.0) <= 4 * RATE
    assert max(clock.starts) - min(clock.starts) >= SENDS / RATE / 2
