"""Broadcast a journey to a segment: every member entered once, resumable, through the normal
journey start.

``kairos broadcast flash_sale --segment sms_subscribers_retention`` begins a broadcast (the
segment's members at that moment are recorded in the store), then enters each member into the
journey as ``kairos start`` would: under the journey's entry rule, recorded in the store with
its Temporal start in the dispatch outbox. What the journey then sends goes through the send
transaction like any other message: consent, suppressions, frequency caps and quiet hours in
the customer's timezone decide, and the channel's send task queue holds the provider's rate.

Run the same command again after Ctrl-C or a crash: it takes up the same broadcast, makes the
Temporal starts a crash left undone and enters the members still pending. Nobody is entered
twice (see :mod:`kairos.store.broadcasts`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from kairos.client import Kairos
from kairos.enroll import Pacer, in_parallel
from kairos.plan import JourneyPlan
from kairos.segments import Segment
from kairos.store import StoreError
from kairos.store.broadcasts import Broadcast, BroadcastStore, MemberStatus

DEFAULT_CONCURRENCY = 8
DEFAULT_RATE = 200.0
_PAGE = 500


class BroadcastError(Exception):
    """The broadcast cannot go on: the one-line reason."""


def new_id(plan: JourneyPlan, segment: Segment, now: datetime) -> str:
    """A readable id for a new broadcast: journey, segment and the minute it began (UTC)."""
    return f"{plan.name}-{segment.name}-{now.astimezone(UTC):%Y%m%d-%H%M}"


@dataclass
class Progress:
    """Members handled by this run, by status."""

    enrolled: int = 0
    refused: int = 0


OnMember = Callable[[MemberStatus], None]


class BroadcastRun:
    """One run of a broadcast: enter its pending members, ``concurrency`` at a time."""

    def __init__(
        self,
        kairos: Kairos,
        plan: JourneyPlan,
        segment: Segment,
        *,
        rate: float = DEFAULT_RATE,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_member: OnMember | None = None,
    ) -> None:
        if rate <= 0 or concurrency < 1:
            raise BroadcastError("--rate must be above 0 and --concurrency at least 1")
        self.kairos = kairos
        self.plan = plan
        self.segment = segment
        self.store = BroadcastStore(kairos.store)
        self.pacer = Pacer(rate)
        self.concurrency = concurrency
        self.on_member = on_member or (lambda status: None)
        self.progress = Progress()

    async def begin(self, broadcast_id: str | None, now: datetime) -> Broadcast:
        """The broadcast to run: ``broadcast_id``'s, else the unfinished one of this journey
        and segment, else a new one with the segment's members at ``now``."""
        try:
            if broadcast_id is None:
                found = await self.store.unfinished(self.plan.name, self.segment.name)
                broadcast_id = found.id if found else new_id(self.plan, self.segment, now)
            return await self.store.begin(broadcast_id, self.plan, self.segment, now)
        except StoreError as err:
            raise BroadcastError(str(err)) from None

    async def run(self, broadcast: Broadcast) -> bool:
        """Enter every pending member; True when none is left (the broadcast is finished).

        Cancelling (Ctrl-C) stops at once: every member is either entered and marked or
        neither, and the next run goes on from there.
        """
        await self.kairos.dispatcher.run(await self.store.undispatched(broadcast.id))
        after = ""
        while page := await self.store.pending(broadcast.id, after, _PAGE):
            after = page[-1]
            await self._page(broadcast.id, page)
        return await self.store.finish(broadcast.id)

    async def _page(self, broadcast_id: str, members: list[str]) -> None:
        async def handle(customer_id: str) -> None:
            await self.pacer.wait()
            status = await self._enter(broadcast_id, customer_id)
            if status is MemberStatus.enrolled:
                self.progress.enrolled += 1
            else:
                self.progress.refused += 1
            self.on_member(status)

        await in_parallel(members, self.concurrency, handle)

    async def _enter(self, broadcast_id: str, customer_id: str) -> MemberStatus:
        try:
            status, accepted = await self.store.enter(broadcast_id, self.plan, customer_id)
            if accepted is not None:
                # Never raises for Temporal being unreachable: the start stays in the outbox,
                # made by a worker's sweep or by the next run of the broadcast.
                await self.kairos.dispatch(accepted)
        except StoreError as err:
            # The store is gone: stop; the same command goes on from here once it is back.
            raise BroadcastError(str(err)) from None
        return status
