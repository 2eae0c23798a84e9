"""Broadcasts in the customer store: a segment's members, each entered into a journey once.

A broadcast copies its segment's members into ``broadcast_members`` when it begins (one
INSERT ... SELECT, so a million members never pass through Python), then enters them a batch
per transaction: the members' rows are locked, each one's journey start is recorded as the
event ``broadcast:<id>`` (an event id is accepted once per customer) and the members' statuses
are set, together. A crash or Ctrl-C anywhere leaves every member either entered and marked,
or neither; the next run takes the members still pending, and makes any Temporal start the
crash left in the dispatch outbox.

A scheduled broadcast (:mod:`kairos.runtime.schedules`) adds its members group by group instead:
each timezone's group adds the segment's members of that zone when its schedule fires, to the one
broadcast every group shares, so ``targeted`` grows as the groups fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from psycopg import sql

from kairos.language.plan import Entry, JourneyPlan
from kairos.language.segments import Segment
from kairos.messages.models import LedgerStatus
from kairos.runtime.contract import Event, RunOutcome
from kairos.runtime.routing import START_EVENT
from kairos.runtime.schedules import BroadcastGroup
from kairos.store.database import Connection, Database, StoreError
from kairos.store.dispatch import Dispatcher, TemporalUnreachable
from kairos.store.facade import Store
from kairos.store.ingest import Accepted

# Members entered per store transaction; pending members are read a page at a time.
BATCH = 100
_PAGE = 1000
# Journey starts in flight at once while the next batch is entered.
STARTS_AT_ONCE = 32
log = logging.getLogger(__name__)


class MemberStatus(StrEnum):
    """What became of one member of a broadcast."""

    pending = "pending"
    enrolled = "enrolled"  # a run of the journey started for them
    refused = "refused"  # the journey's entry rule (or a run still going) kept them out


@dataclass(frozen=True)
class Broadcast:
    """One broadcast as the store has it."""

    id: str
    journey: str
    segment: str
    condition: str
    targeted: int
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Entered:
    """One member's turn: their status now, and what the store decided for them (None when
    nothing was: the member was done already, or is no longer there)."""

    customer_id: str
    status: MemberStatus
    accepted: Accepted | None


def event_id(broadcast_id: str) -> str:
    """The id of the start event that enters a member: one per broadcast and customer."""
    return f"broadcast:{broadcast_id}"


class BroadcastStore:
    """The queries of broadcasts, on one customer store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.database = store.database
        self.batch = BATCH  # members per transaction (a test's seam)

    async def find(self, broadcast_id: str) -> Broadcast | None:
        row = await self.database.fetch_one(
            "SELECT * FROM broadcasts WHERE id = %s", (broadcast_id,)
        )
        return Broadcast(**row) if row else None

    async def unfinished(self, journey: str, segment: str) -> Broadcast | None:
        """The newest broadcast of ``journey`` to ``segment`` that has members left, if any."""
        row = await self.database.fetch_one(
            "SELECT * FROM broadcasts WHERE journey = %s AND segment = %s"
            " AND finished_at IS NULL ORDER BY created_at DESC LIMIT 1",
            (journey, segment),
        )
        return Broadcast(**row) if row else None

    async def begin(
        self,
        broadcast_id: str,
        plan: JourneyPlan,
        segment: Segment,
        now: datetime,
        group: BroadcastGroup | None = None,
    ) -> Broadcast:
        """Create the broadcast with the segment's members at ``now``; an existing one is
        returned as it is (its members are those of when it began).

        A scheduled ``group`` adds its zones' members at ``now`` to the broadcast, created by
        whichever group fires first; a member some other group added is not added again.

        Raises:
            StoreError: ``broadcast_id`` names a broadcast of another journey or segment.
        """
        async with self.database.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO broadcasts (id, journey, segment, condition, targeted)"
                " VALUES (%s, %s, %s, %s, 0) ON CONFLICT (id) DO NOTHING RETURNING id",
                (broadcast_id, plan.name, segment.name, segment.when),
            )
            created = await cursor.fetchone() is not None
            if created or group is not None:
                within = sql.SQL("true") if group is None else self._in_group(group)
                members = sql.SQL(
                    "INSERT INTO broadcast_members (broadcast, customer_id)"
                    " SELECT {}, c.id FROM customers c WHERE {} AND {}"
                    " ON CONFLICT DO NOTHING"
                ).format(sql.Literal(broadcast_id), segment.condition(now), within)
                cursor = await conn.execute(members)
                if cursor.rowcount > 0 or created:
                    # A group that adds members opens the broadcast again until they are in.
                    await conn.execute(
                        "UPDATE broadcasts SET finished_at = NULL, targeted = (SELECT count(*)"
                        " FROM broadcast_members WHERE broadcast = %s) WHERE id = %s",
                        (broadcast_id, broadcast_id),
                    )
        found = await self.find(broadcast_id)
        assert found is not None
        if (found.journey, found.segment) != (plan.name, segment.name):
            raise StoreError(
                f"broadcast {broadcast_id!r} is of {found.journey} to {found.segment}, not of "
                f"{plan.name} to {segment.name}: choose another --id"
            )
        return found

    def _zone(self) -> sql.Composable:
        """A customer's timezone as written in their profile ('' when none)."""
        attribute = self.store.timezone_attribute
        if attribute is None:
            return sql.Literal("")
        return sql.SQL("coalesce(c.profile ->> {}, '')").format(sql.Literal(attribute))

    def _in_group(self, group: BroadcastGroup) -> sql.Composable:
        zone = self._zone()
        mine = sql.SQL("{} = ANY({}::text[])").format(zone, sql.Literal(group.zones))
        if not group.rest:
            return mine
        others = sql.SQL("NOT {} = ANY({}::text[])").format(zone, sql.Literal(group.scheduled))
        return sql.SQL("({} OR {})").format(mine, others)

    async def zones(self, segment: Segment, now: datetime) -> dict[str, int]:
        """How many of the segment's members at ``now`` have each timezone ('' for none)."""
        query = sql.SQL(
            "SELECT {} AS zone, count(*) AS n FROM customers c WHERE {} GROUP BY 1"
        ).format(self._zone(), segment.condition(now))
        rows = await self.database.fetch_all(query)
        return {row["zone"]: int(row["n"]) for row in rows}

    async def pending(self, broadcast_id: str, after: str, limit: int) -> list[str]:
        """Members not yet entered, in id order after ``after``."""
        rows = await self.database.fetch_all(
            "SELECT customer_id FROM broadcast_members WHERE broadcast = %s"
            " AND status = 'pending' AND customer_id > %s"
            " ORDER BY customer_id LIMIT %s",
            (broadcast_id, after, limit),
        )
        return [row["customer_id"] for row in rows]

    async def enter(
        self, broadcast_id: str, plan: JourneyPlan, customer_id: str
    ) -> tuple[MemberStatus, Accepted | None]:
        """Enter one member into the journey, once (see :meth:`enter_many`)."""
        [entered] = await self.enter_many(broadcast_id, plan, [customer_id])
        return entered.status, entered.accepted

    async def enter_many(
        self, broadcast_id: str, plan: JourneyPlan, customer_ids: list[str]
    ) -> list[Entered]:
        """Enter these members into the journey, once each, in one transaction: every start
        and every member's status are committed together, or none is.

        The members' rows are locked in id order, so two runs of one broadcast (a retried
        activity, the same command twice) take turns rather than enter anyone twice. Each
        member is entered through the store's one path (:meth:`Ingest.accept`); what it
        decided is returned with the member (``accepted`` is None when the member was already
        done, or is no longer there), and its Temporal start waits in the dispatch outbox.
        """
        ids = sorted(set(customer_ids))
        found: list[Entered] = []
        async with self.database.transaction() as conn:
            cursor = await conn.execute(
                "SELECT customer_id, status FROM broadcast_members WHERE broadcast = %s"
                " AND customer_id = ANY(%s) ORDER BY customer_id FOR UPDATE",
                (broadcast_id, ids),
            )
            members = {row["customer_id"]: row["status"] for row in await cursor.fetchall()}
            changed: list[tuple[str, str, str, int | None]] = []
            for customer_id in ids:
                status = members.get(customer_id)
                if status is None:  # forgotten since the broadcast began
                    found.append(Entered(customer_id, MemberStatus.refused, None))
                elif status != MemberStatus.pending:
                    found.append(Entered(customer_id, MemberStatus(status), None))
                else:
                    entered, reason = await self._enter_one(conn, broadcast_id, plan, customer_id)
                    found.append(entered)
                    run_no = entered.accepted.started.get(plan.name) if entered.accepted else None
                    changed.append((customer_id, entered.status.value, reason, run_no))
            if changed:
                await conn.execute(
                    "UPDATE broadcast_members m SET status = u.status, reason = u.reason,"
                    " run_no = u.run_no, done_at = now()"
                    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[])"
                    "  AS u(customer_id, status, reason, run_no)"
                    " WHERE m.broadcast = %s AND m.customer_id = u.customer_id",
                    (*(list(column) for column in zip(*changed, strict=True)), broadcast_id),
                )
        return found

    async def _enter_one(
        self, conn: Connection, broadcast_id: str, plan: JourneyPlan, customer_id: str
    ) -> tuple[Entered, str]:
        """Enter one pending member (its row locked): what became of them, and why."""
        reason = await _still_running(conn, plan, customer_id)
        if reason:
            return Entered(customer_id, MemberStatus.refused, None), reason
        start = Event(
            id=event_id(broadcast_id),
            name=START_EVENT,
            properties={"journey": plan.name},
            timestamp=None,
        )
        accepted = await self.store.ingest.accept(conn, customer_id, start)
        reason = accepted.refused.get(plan.name, "")
        if accepted.duplicate:
            reason = "entered by this broadcast before"
        entered = plan.name in accepted.started
        status = MemberStatus.enrolled if entered else MemberStatus.refused
        return Entered(customer_id, status, accepted), reason

    async def enter_pending(
        self,
        broadcast_id: str,
        plan: JourneyPlan,
        dispatcher: Dispatcher,
        *,
        concurrency: int = STARTS_AT_ONCE,
        pace: Callable[[int], Awaitable[None]] | None = None,
    ) -> AsyncIterator[list[MemberStatus]]:
        """Enter the broadcast's pending members, yielding each batch's statuses once its store
        transaction has committed (the command's progress bar, the activity's heartbeat).
        ``pace`` waits for the turn of a batch of that many starts.

        A batch of :attr:`batch` members is one store transaction; its journey starts are then
        made ``concurrency`` at a time while the next batch is entered. A start Temporal does not
        take stays in the dispatch outbox, for the next run or a worker's sweep.
        """
        starting: asyncio.Task[None] | None = None

        async def make_starts(customers: list[str]) -> None:
            try:
                await dispatcher.run_starts(customers, concurrency)
            except TemporalUnreachable as err:
                log.warning("journey starts left to a worker: %s", err)

        try:
            after = ""
            while page := await self.pending(broadcast_id, after, _PAGE):
                after = page[-1]
                for first in range(0, len(page), self.batch):
                    batch = page[first : first + self.batch]
                    if pace is not None:
                        await pace(len(batch))  # the command's --rate
                    entered = await self.enter_many(broadcast_id, plan, batch)
                    if starting is not None:
                        await starting
                    decided = [
                        e.customer_id for e in entered if e.accepted and e.accepted.dispatches
                    ]
                    starting = asyncio.create_task(make_starts(decided))
                    yield [e.status for e in entered]
            if starting is not None:
                await starting
        finally:
            if starting is not None and not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting

    async def undispatched(self, broadcast_id: str) -> list[str]:
        """Members whose journey start was decided but not yet made in Temporal (a crash
        between the two): the dispatcher makes them."""
        rows = await self.database.fetch_all(
            "SELECT DISTINCT customer_id FROM dispatches WHERE event_id = %s",
            (event_id(broadcast_id),),
        )
        return [row["customer_id"] for row in rows]

    async def counts(self, broadcast_id: str) -> dict[MemberStatus, int]:
        """How many members have each status."""
        rows = await self.database.fetch_all(
            "SELECT status, count(*) AS n FROM broadcast_members WHERE broadcast = %s"
            " GROUP BY status",
            (broadcast_id,),
        )
        found = {MemberStatus(row["status"]): int(row["n"]) for row in rows}
        return {status: found.get(status, 0) for status in MemberStatus}

    async def finish(self, broadcast_id: str) -> bool:
        """Mark the broadcast finished when no member is left to enter; says whether it is."""
        row = await self.database.fetch_one(
            "UPDATE broadcasts SET finished_at = now() WHERE id = %s AND finished_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM broadcast_members WHERE broadcast = %s"
            " AND status = 'pending') RETURNING 1",
            (broadcast_id, broadcast_id),
        )
        if row is not None:
            return True
        done = await self.find(broadcast_id)
        return done is not None and done.finished_at is not None


async def _still_running(conn: Connection, plan: JourneyPlan, customer_id: str) -> str:
    """Why a broadcast leaves a customer out although the entry rule would take them: a
    broadcast never restarts a run in flight (``entry: restart``), as an import does not."""
    if plan.entry is not Entry.restart:
        return ""
    cursor = await conn.execute(
        "SELECT open_run FROM journey_entries WHERE customer_id = %s AND journey = %s",
        (customer_id, plan.name),
    )
    row = await cursor.fetchone()
    if row is None or row["open_run"] is None:
        return ""
    return f"{plan.name} is running for them (a broadcast restarts nobody)"


@dataclass(frozen=True)
class Reach:
    """What one broadcast came to: members, messages and conversions of the runs it began."""

    broadcast: str
    journey: str
    segment: str
    created_at: datetime
    targeted: int
    entered: int
    kept_out: int
    sent: int
    blocked: dict[str, int]  # reason -> messages
    converted: int


async def reach(database: Database, journey: str | None, since: datetime | None) -> list[Reach]:
    """The reach of every broadcast (of ``journey``) begun since ``since``, newest first."""
    rows = await database.fetch_all(
        "SELECT b.id, b.journey, b.segment, b.created_at, b.targeted,"
        " count(*) FILTER (WHERE m.status = 'enrolled') AS entered,"
        " count(*) FILTER (WHERE m.status = 'refused') AS kept_out,"
        " count(*) FILTER (WHERE r.outcome = %(converted)s) AS converted"
        " FROM broadcasts b"
        " LEFT JOIN broadcast_members m ON m.broadcast = b.id"
        " LEFT JOIN runs r ON r.customer_id = m.customer_id AND r.journey = b.journey"
        "  AND r.run_no = m.run_no"
        " WHERE (%(journey)s::text IS NULL OR b.journey = %(journey)s)"
        " AND (%(since)s::timestamptz IS NULL OR b.created_at >= %(since)s)"
        " GROUP BY b.id ORDER BY b.created_at DESC",
        {"journey": journey, "since": since, "converted": RunOutcome.converted},
    )
    found = []
    for row in rows:
        messages = await database.fetch_all(
            "SELECT s.status, s.reason, count(*) AS n FROM broadcast_members m"
            " JOIN messages s ON s.customer_id = m.customer_id AND s.journey = %s"
            "  AND s.run_no = m.run_no"
            " WHERE m.broadcast = %s AND s.status IN ('sent', 'blocked')"
            " GROUP BY s.status, s.reason",
            (row["journey"], row["id"]),
        )
        blocked = {
            m["reason"]: int(m["n"]) for m in messages if m["status"] == LedgerStatus.blocked
        }
        sent = sum(int(m["n"]) for m in messages if m["status"] == LedgerStatus.sent)
        found.append(
            Reach(
                broadcast=row["id"],
                journey=row["journey"],
                segment=row["segment"],
                created_at=row["created_at"],
                targeted=row["targeted"],
                entered=row["entered"],
                kept_out=row["kept_out"],
                sent=sent,
                blocked=dict(sorted(blocked.items(), key=lambda item: -item[1])),
                converted=row["converted"],
            )
        )
    return found
