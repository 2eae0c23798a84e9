"""The activity of a scheduled broadcast: enter one group's members into the journey, once.

It runs when the group's Temporal Schedule fires. The segment is evaluated then, not when the
broadcast was scheduled: whoever is in it at 10:00 in their zone is entered. Members are
entered through the store's broadcast path (a batch per transaction: each start recorded under
the event id ``broadcast:<id>``, each member marked), so a retry after a worker was killed mid-way
takes the members still pending and enters nobody twice; the Temporal starts a crash left in
the dispatch outbox are made first.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from kairos.language.plan import JourneyPlan
from kairos.language.segments import Segment
from kairos.runtime.client import Kairos
from kairos.runtime.schedules import (
    BROADCAST_ACTIVITY,
    HEARTBEAT_EVERY,
    BroadcastGroup,
    GroupResult,
)
from kairos.store.broadcasts import BroadcastStore, MemberStatus


async def _heartbeat(result: GroupResult) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())
        activity.heartbeat(result.enrolled + result.refused)


class Broadcasts:
    """Built with a client (store + dispatcher): the seam tests use."""

    def __init__(self, kairos: Kairos) -> None:
        self.kairos = kairos
        self.store = BroadcastStore(kairos.store)

    @activity.defn(name=BROADCAST_ACTIVITY)
    async def broadcast_group(self, group: BroadcastGroup) -> GroupResult:
        """Add the group's members now in the segment, then enter every pending member."""
        plan, segment = self._chosen(group)
        before = await self.store.find(group.broadcast)
        begun = await self.store.begin(
            group.broadcast, plan, segment, datetime.now(UTC), group=group
        )
        added = begun.targeted - (before.targeted if before else 0)
        await self.kairos.dispatcher.run(await self.store.undispatched(begun.id))
        result = GroupResult(added=added, enrolled=0, refused=0)
        # Heartbeats go on while a batch waits on the store or Temporal, so the short
        # heartbeat timeout only ever notices a worker that is gone.
        beating = asyncio.create_task(_heartbeat(result))
        try:
            async for statuses in self.store.enter_pending(begun.id, plan, self.kairos.dispatcher):
                result.enrolled += statuses.count(MemberStatus.enrolled)
                result.refused += statuses.count(MemberStatus.refused)
                activity.heartbeat(result.enrolled + result.refused)
        finally:
            beating.cancel()
        await self.store.finish(begun.id)
        return result

    def _chosen(self, group: BroadcastGroup) -> tuple[JourneyPlan, Segment]:
        project = self.kairos.store.project
        plan = project.plans.get(group.journey)
        segment = project.segments.get(group.segment)
        if plan is None or segment is None:
            missing = f"journey {group.journey!r}" if plan is None else f"segment {group.segment!r}"
            raise ApplicationError(
                f"broadcast {group.broadcast}: this worker's project has no {missing} "
                "(deployed without it?): nobody was entered",
                type="BroadcastUnknown",
                non_retryable=True,
            )
        return plan, segment
