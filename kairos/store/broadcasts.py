"""Broadcasts in the customer store: a segment's members, each entered into a journey once.

A broadcast copies its segment's members into ``broadcast_members`` when it begins (one
INSERT ... SELECT, so a million members never pass through Python), then enters them one
transaction each: the member's row is locked, the journey start is recorded as the event
``broadcast:<id>`` (an event id is accepted once per customer) and the member's status is set,
together. A crash or Ctrl-C anywhere leaves every member either entered and marked, or neither;
the next run takes the members still pending, and makes any Temporal start the crash left in
the dispatch outbox.

A scheduled broadcast (:mod:`kairos.schedules`) adds its members group by group instead: each
timezone's group adds the segment's members of that zone when its schedule fires, to the one
broadcast every group shares, so ``targeted`` grows as the groups fire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from psycopg import sql

from kairos.messages import LedgerStatus
from kairos.plan import Entry, JourneyPlan
from kairos.routing import START_EVENT
from kairos.runtime import Event
from kairos.schedules import BroadcastGroup
from kairos.segments import Segment
from kairos.store.database import Connection, Database, StoreError
from kairos.store.ingest import Accepted
from kairos.store.store import Store


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


def event_id(broadcast_id: str) -> str:
    """The id of the start event that enters a member: one per broadcast and customer."""
    return f"broadcast:{broadcast_id}"


class BroadcastStore:
    """The queries of broadcasts, on one customer store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.database = store.database

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
        """Enter one member into the journey, once: the start and the member's status are
        one transaction. Returns the status and what the store decided (None when the member
        was already done, or is no longer there)."""
        async with self.database.transaction() as conn:
            cursor = await conn.execute(
                "SELECT status FROM broadcast_members WHERE broadcast = %s AND customer_id = %s"
                " FOR UPDATE",
                (broadcast_id, customer_id),
            )
            member = await cursor.fetchone()
            if member is None:  # forgotten since the broadcast began
                return MemberStatus.refused, None
            if member["status"] in (MemberStatus.enrolled, MemberStatus.refused):
                return MemberStatus(member["status"]), None
            reason = await _still_running(conn, plan, customer_id)
            accepted = None
            if not reason:
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
            run_no = accepted.started.get(plan.name) if accepted else None
            status = MemberStatus.enrolled if run_no is not None else MemberStatus.refused
            await conn.execute(
                "UPDATE broadcast_members SET status = %s, reason = %s, run_no = %s,"
                " done_at = now() WHERE broadcast = %s AND customer_id = %s",
                (status.value, reason, run_no, broadcast_id, customer_id),
            )
        return status, accepted

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
        " count(*) FILTER (WHERE r.outcome = 'converted') AS converted"
        " FROM broadcasts b"
        " LEFT JOIN broadcast_members m ON m.broadcast = b.id"
        " LEFT JOIN runs r ON r.customer_id = m.customer_id AND r.journey = b.journey"
        "  AND r.run_no = m.run_no"
        " WHERE (%(journey)s::text IS NULL OR b.journey = %(journey)s)"
        " AND (%(since)s::timestamptz IS NULL OR b.created_at >= %(since)s)"
        " GROUP BY b.id ORDER BY b.created_at DESC",
        {"journey": journey, "since": since},
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
