"""The activity of a scheduled broadcast: enter one group's members into the journey, once.

It runs when the group's Temporal Schedule fires. The segment is evaluated then, not when the
broadcast was scheduled: whoever is in it at 10:00 in their zone is entered. Each member is
entered through the store's broadcast path (one transaction: the start recorded under the
event id ``broadcast:<id>``, the member marked), so a retry after a worker was killed mid-way
takes the members still pending and enters nobody twice; the Temporal starts a crash left in
the dispatch outbox are made first.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from kairos.client import Kairos
from kairos.plan import JourneyPlan
from kairos.schedules import BROADCAST_ACTIVITY, BroadcastGroup, GroupResult
from kairos.segments import Segment
from kairos.store.broadcasts import BroadcastStore, MemberStatus

_PAGE = 500
_AT_ONCE = 8


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
        after = ""
        while page := await self.store.pending(begun.id, after, _PAGE):
            after = page[-1]
            for start in range(0, len(page), _AT_ONCE):
                chunk = page[start : start + _AT_ONCE]
                statuses = await asyncio.gather(
                    *(self._enter(begun.id, plan, customer) for customer in chunk)
                )
                result.enrolled += statuses.count(MemberStatus.enrolled)
                result.refused += statuses.count(MemberStatus.refused)
                activity.heartbeat(result.enrolled + result.refused)
        await self.store.finish(begun.id)
        return result

    async def _enter(self, broadcast_id: str, plan: JourneyPlan, customer: str) -> MemberStatus:
        status, accepted = await self.store.enter(broadcast_id, plan, customer)
        if accepted is not None:
            # Never raises for Temporal being unreachable: the sweeper makes the start.
            await self.kairos.dispatch(accepted)
        return status

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
