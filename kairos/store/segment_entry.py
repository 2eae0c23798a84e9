"""Segment membership for segment-entry triggers: who entered and who left, exactly once.

A journey with ``trigger: {segment: sales_ready}`` starts when a customer *enters* the segment:
was not a member, now is. The store keeps the membership of every segment a journey triggers
on (``segment_members``) and changes it in two places:

* in the customer's own transaction, whenever an event, identify call, consent change or
  ``set`` step changes them (:class:`Membership`, called by :mod:`kairos.store.ingest`): the
  segment's SQL condition is evaluated for that one customer;
* in a periodic sweep (:func:`sweep_segment`, run by the worker next to the dispatch sweeper),
  for what changes with time alone ("no order for 60 days", points that expire): one query per
  segment finds the customers whose membership is out of date, and each of those goes through
  the same per-customer transaction as an event.

Entering is one statement (an upsert that only changes a row that is absent or has left), so
whichever transaction makes it alone starts the journeys. The first process to open the store
with a trigger segment (or with an edited condition) records who is in it without starting
anyone: a new trigger is not a broadcast to everyone already there (``kairos broadcast`` is).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import sql

from kairos.language.segments import Segment
from kairos.store.database import Connection

_LOCK_SQL = "hashtextextended('kairos.segment:' || %s, 0)"
# The column that lists a customer's segments (no segment name can be it: names are [a-z_0-9]).
_MEMBER_OF = "$member_of"
# How many customers one sweep of a segment moves at most; the rest wait for the next sweep.
SWEEP_LIMIT = 2000


@dataclass
class Changes:
    """The tracked segments one customer entered and left in one transaction."""

    entered: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


class Membership:
    """Keeps the membership of the segments that trigger journeys, for one customer at a time."""

    def __init__(self, segments: Mapping[str, Segment]) -> None:
        self.segments = dict(sorted(segments.items()))
        # Segments whose membership the store keeps for the condition this process knows.
        self._tracked: set[str] = set()

    async def tracked(self, conn: Connection) -> list[Segment]:
        """The trigger segments the store keeps membership of (the worker's first sweep of a
        segment starts keeping it)."""
        missing = [name for name in self.segments if name not in self._tracked]
        if missing:
            cursor = await conn.execute(
                "SELECT segment, condition FROM segment_tracking WHERE segment = ANY(%s)",
                (missing,),
            )
            for row in await cursor.fetchall():
                if row["condition"] == self.segments[row["segment"]].when:
                    self._tracked.add(row["segment"])
        return [s for name, s in self.segments.items() if name in self._tracked]

    async def update(self, conn: Connection, customer_id: str, now: datetime) -> Changes:
        """Evaluate the tracked segments for the customer (whose row the caller has locked)
        and record what they entered and left."""
        changes = Changes()
        segments = await self.tracked(conn)
        if not segments:
            return changes
        columns = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(s.condition(now), sql.Identifier(s.name)) for s in segments
        )
        # One statement: each condition, and the segments they are recorded in. Literals
        # only: a condition's literals may hold a `%`.
        cursor = await conn.execute(
            sql.SQL(
                "SELECT {}, ARRAY(SELECT m.segment FROM segment_members m"
                " WHERE m.customer_id = c.id AND m.left_at IS NULL) AS {}"
                " FROM customers c WHERE c.id = {}"
            ).format(columns, sql.Identifier(_MEMBER_OF), sql.Literal(customer_id))
        )
        holds = await cursor.fetchone()
        if holds is None:
            return changes
        member = set(holds[_MEMBER_OF])
        for segment in segments:
            name = segment.name
            if holds[name] and name not in member and await enter(conn, name, customer_id, now):
                changes.entered.append(name)
            elif not holds[name] and name in member and await leave(conn, name, customer_id, now):
                changes.left.append(name)
        return changes


async def enter(conn: Connection, segment: str, customer_id: str, now: datetime) -> bool:
    """Record that the customer entered the segment; False when they were in it already."""
    cursor = await conn.execute(
        "INSERT INTO segment_members (segment, customer_id, entered_at) VALUES (%s, %s, %s)"
        " ON CONFLICT (segment, customer_id) DO UPDATE SET entered_at = EXCLUDED.entered_at,"
        " left_at = NULL, entries = segment_members.entries + 1"
        " WHERE segment_members.left_at IS NOT NULL RETURNING entries",
        (segment, customer_id, now),
    )
    return await cursor.fetchone() is not None


async def leave(conn: Connection, segment: str, customer_id: str, now: datetime) -> bool:
    """Record that the customer left the segment; False when they were not in it."""
    cursor = await conn.execute(
        "UPDATE segment_members SET left_at = %s"
        " WHERE segment = %s AND customer_id = %s AND left_at IS NULL RETURNING entries",
        (now, segment, customer_id),
    )
    return await cursor.fetchone() is not None


@dataclass(frozen=True)
class Swept:
    """What one sweep of a segment found: whether it only started keeping the membership
    (``baseline``: nobody is started), and the customers whose membership is out of date."""

    segment: str
    baseline: bool = False
    members: int = 0
    stale: tuple[str, ...] = ()
    skipped: bool = False  # another process is sweeping it


async def sweep_segment(
    conn: Connection, segment: Segment, now: datetime, *, baseline_only: bool = False
) -> Swept:
    """One sweep of ``segment`` inside the caller's transaction.

    A segment not yet tracked (or tracked for another condition) gets its membership recorded
    set-based, in one INSERT ... SELECT, and starts nobody. A tracked one is compared with its
    condition in one query; the customers it returns (at most SWEEP_LIMIT) are to be
    re-evaluated one by one, each in its own transaction (:meth:`Ingest.reevaluate`), which
    enters or leaves them exactly as an event would. With ``baseline_only`` a tracked
    segment is left as it is.
    """
    cursor = await conn.execute(
        f"SELECT pg_try_advisory_xact_lock({_LOCK_SQL}) AS locked", (segment.name,)
    )
    locked = await cursor.fetchone()
    if not (locked and locked["locked"]):
        return Swept(segment.name, skipped=True)
    cursor = await conn.execute(
        "SELECT condition FROM segment_tracking WHERE segment = %s FOR UPDATE", (segment.name,)
    )
    tracking = await cursor.fetchone()
    condition = segment.condition(now)
    name, at = sql.Literal(segment.name), sql.Literal(now.isoformat())
    if tracking is None or tracking["condition"] != segment.when:
        return await _baseline(conn, segment, condition, now)
    if baseline_only:
        return Swept(segment.name)
    cursor = await conn.execute(
        sql.SQL(
            "(SELECT c.id FROM customers c WHERE {cond} AND NOT EXISTS (SELECT 1 FROM"
            " segment_members m WHERE m.segment = {name} AND m.customer_id = c.id"
            " AND m.left_at IS NULL) LIMIT {limit})"
            " UNION ALL (SELECT c.id FROM segment_members m JOIN customers c ON c.id ="
            " m.customer_id WHERE m.segment = {name} AND m.left_at IS NULL AND NOT {cond}"
            " LIMIT {limit})"
        ).format(cond=condition, name=name, limit=sql.Literal(SWEEP_LIMIT))
    )
    stale = tuple(row["id"] for row in await cursor.fetchall())
    await conn.execute(
        sql.SQL("UPDATE segment_tracking SET swept_at = {} WHERE segment = {}").format(at, name)
    )
    return Swept(segment.name, stale=stale)


async def _baseline(
    conn: Connection, segment: Segment, condition: sql.Composable, now: datetime
) -> Swept:
    name, at = sql.Literal(segment.name), sql.Literal(now.isoformat())
    await conn.execute(
        sql.SQL(
            "UPDATE segment_members m SET left_at = {at} WHERE m.segment = {name}"
            " AND m.left_at IS NULL AND NOT EXISTS (SELECT 1 FROM customers c"
            " WHERE c.id = m.customer_id AND {cond})"
        ).format(at=at, name=name, cond=condition)
    )
    cursor = await conn.execute(
        sql.SQL(
            "INSERT INTO segment_members (segment, customer_id, entered_at)"
            " SELECT {name}, c.id, {at} FROM customers c WHERE {cond}"
            " ON CONFLICT (segment, customer_id) DO UPDATE SET entered_at = EXCLUDED.entered_at,"
            " left_at = NULL, entries = segment_members.entries + 1"
            " WHERE segment_members.left_at IS NOT NULL"
        ).format(name=name, at=at, cond=condition)
    )
    await conn.execute(
        "INSERT INTO segment_tracking (segment, condition, since, swept_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (segment) DO UPDATE"
        " SET condition = EXCLUDED.condition, since = EXCLUDED.since,"
        " swept_at = EXCLUDED.swept_at",
        (segment.name, segment.when, now, now),
    )
    cursor = await conn.execute(
        "SELECT count(*) AS n FROM segment_members WHERE segment = %s AND left_at IS NULL",
        (segment.name,),
    )
    counted = await cursor.fetchone()
    return Swept(segment.name, baseline=True, members=int(counted["n"]) if counted else 0)


def trigger_segments(
    segments: Mapping[str, Segment], triggered: Iterable[str]
) -> dict[str, Segment]:
    """The segments that journeys trigger on (those of ``triggered`` that compiled)."""
    return {name: segments[name] for name in triggered if name in segments}
