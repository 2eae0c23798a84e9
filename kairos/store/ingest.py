"""Events in: one customer transaction records the event once, applies what it changes and
decides which journey runs to start or signal.

Every way a customer changes goes through :meth:`Ingest.accept`: product events, identify calls
(``$identify``), consent changes (``$consent``), a journey's ``set`` step (``$set``) and starting
a journey by name (``$start``). Each is an event with an id, recorded once per customer, so a
retried call is harmless. Inside the transaction the customer's row is locked, which serialises
everything that happens to one customer (entry rules, increments, consent) without blocking
anyone else.

The transaction decides; it does not call Temporal. The Temporal calls it decides on are rows
in ``dispatches``, made right after the commit by :class:`kairos.store.dispatch.Dispatcher` (or,
if this process dies first, by a worker), so an accepted event is never lost and costs no
Temporal action when no journey listens to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kairos.language.catalogue import AttrType, Catalogue
from kairos.language.expressions import ExpressionError
from kairos.language.plan import Entry, JourneyPlan, SegmentTrigger
from kairos.language.segments import Segment
from kairos.runtime import phone, routing
from kairos.runtime.contract import Event, RunOutcome
from kairos.runtime.crypto import MasterKeys
from kairos.runtime.routing import SET_EVENT, START_EVENT
from kairos.store.database import Connection
from kairos.store.keys import create_customer_key
from kairos.store.scores import earned, increments, record_points
from kairos.store.segment_entry import Changes, Membership, trigger_segments
from kairos.store.views import (
    CustomerRow,
    customer_id_hash,
    jsonb,
    load_customer,
    suppression_key,
    to_json,
)

log = logging.getLogger(__name__)


@dataclass
class ProfileEdit:
    """What an event changes about a customer."""

    attributes: dict[str, Any] = field(default_factory=dict)
    increment: dict[str, float] = field(default_factory=dict)
    stage: str | None = None
    consent: dict[str, bool] = field(default_factory=dict)
    consent_source: str = ""
    # For an identify call: when its attributes were true. An attribute an identify stated for
    # a later time keeps its value; other edits (events, set steps) always apply.
    stated_at: datetime | None = None


@dataclass
class Accepted:
    """What accepting one event did.

    ``started`` maps journeys entered to their run number; ``refused`` says why a journey that
    was asked for by name (``$start``) was not entered; ``problems`` lists trigger conditions
    that could not be evaluated (the journey was not started, the event was still accepted).
    """

    event_id: str
    customer: CustomerRow
    duplicate: bool = False
    started: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    signalled: list[tuple[str, int]] = field(default_factory=list)
    dispatches: int = 0
    # The trigger segments the customer entered and left with this event.
    segments: Changes = field(default_factory=Changes)
    problems: list[str] = field(default_factory=list)
    # Dispatches still to make after the accepting process tried (Temporal unreachable).
    pending: int = 0


@dataclass(frozen=True)
class _OpenRun:
    journey: str
    run_no: int
    listens: frozenset[str]
    reads: frozenset[str]


class Ingest:
    """Accepts events for the journeys of one compiled project."""

    def __init__(
        self,
        catalogue: Catalogue,
        plans: Mapping[str, JourneyPlan],
        master: MasterKeys,
        segments: Mapping[str, Segment] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.master = master
        self.plans = sorted(plans.values(), key=lambda p: (-p.priority, p.name))
        self.phone_attribute = catalogue.attribute_of_type(AttrType.phone)
        self._id_key: bytes | None = None
        self.by_segment: dict[str, list[JourneyPlan]] = {}
        for plan in self.plans:
            if isinstance(plan.trigger, SegmentTrigger):
                self.by_segment.setdefault(plan.trigger.segment, []).append(plan)
        self.membership = Membership(trigger_segments(segments or {}, self.by_segment))
        # What segment conditions count back from (history windows, days_since).
        self.clock: Callable[[], datetime] = _now
        # A simulation stamps every event with its simulated server's time: then an event's
        # timestamp, not the clock read a moment later, is the moment it is scored and its
        # segments are evaluated at (the server may have skipped hours since the clock was set).
        self.stamped_clock = False

    async def accept(self, conn: Connection, customer_id: str, event: Event) -> Accepted:
        """Record ``event`` for the customer, apply it and decide its dispatches.

        Must run inside a transaction. A repeated event id changes nothing (``duplicate``).
        """
        row = await load_customer(conn, customer_id, lock=True)
        if row is None:
            await conn.execute(
                "INSERT INTO customers (id) VALUES (%s) ON CONFLICT (id) DO NOTHING",
                (customer_id,),
            )
            # Their data key is born with them, so nothing of theirs reaches Temporal without it.
            await create_customer_key(conn, customer_id, self.master)
            row = await load_customer(conn, customer_id, lock=True)
            assert row is not None
        # Routed unless this transaction decides on Temporal calls (then NULL until made).
        cursor = await conn.execute(
            "INSERT INTO events (customer_id, id, name, properties, occurred_at, routed_at)"
            " VALUES (%s, %s, %s, %s, coalesce(%s, now()), now())"
            " ON CONFLICT (customer_id, id) DO NOTHING RETURNING seq",
            (customer_id, event.id, event.name, jsonb(event.properties), event.timestamp),
        )
        if await cursor.fetchone() is None:
            return Accepted(event.id, row, duplicate=True)
        before = row.view()
        edit = self._edit(event)
        now = self.clock()
        if self.stamped_clock and event.timestamp is not None:
            now = event.timestamp
        at = event.timestamp or now
        points, problems = earned(self.catalogue, event, before, at)
        for score, amount in increments(points, now).items():
            edit.increment[score] = edit.increment.get(score, 0) + amount
        changed = await self._apply(conn, row, edit, event.id)
        await record_points(conn, customer_id, event.id, at, points, now)
        if "stage" in changed:
            await _stage_changed(conn, row.id, before["stage"], row.stage, event)
        after = row.view()
        accepted = Accepted(event.id, row, problems=problems)
        open_runs = await self._open_runs(conn, customer_id)
        restarted = await self._enter_journeys(conn, customer_id, event, before, after, accepted)
        restarted |= await self._enter_segments(conn, customer_id, event.id, accepted, now)
        author = _author(event)
        for run in open_runs:
            if (run.journey, run.run_no) == author:
                continue  # a run's own set step: it reads the result back from the activity
            hears = event.name in run.listens and event.name not in routing.INTERNAL_EVENTS
            restart = (run.journey, run.run_no) in restarted
            if not (restart or hears or changed & run.reads):
                continue
            payload = {"event": to_json(event.model_dump()) if hears else None, "restart": restart}
            await _dispatch(conn, customer_id, event.id, "signal", run.journey, run.run_no, payload)
            accepted.signalled.append((run.journey, run.run_no))
            accepted.dispatches += 1
        if accepted.dispatches:
            await conn.execute(
                "UPDATE events SET routed_at = NULL WHERE customer_id = %s AND id = %s",
                (customer_id, event.id),
            )
        return accepted

    # --- what an event changes --------------------------------------------------------------

    def _edit(self, event: Event) -> ProfileEdit:
        props = event.properties
        match event.name:
            case routing.IDENTIFY_EVENT:
                attributes = dict(props.get("attributes", {}))
                consent = {
                    **self.catalogue.consent_changes(None, attributes),
                    **props.get("consent", {}),
                }
                return ProfileEdit(
                    attributes=attributes,
                    consent=consent,
                    consent_source=str(props.get("source") or "identify"),
                    stated_at=_stated_at(event.timestamp),
                )
            case routing.SET_EVENT:
                return ProfileEdit(
                    attributes=dict(props.get("attributes", {})),
                    increment=dict(props.get("increment", {})),
                    stage=props.get("stage"),
                    consent_source=f"journey {props.get('journey', '')}".strip(),
                )
            case routing.CONSENT_EVENT:
                return ProfileEdit(
                    consent={str(k): bool(v) for k, v in props.get("consent", {}).items()},
                    consent_source=str(props.get("source") or "api"),
                )
            case routing.START_EVENT:
                return ProfileEdit()
            case _:
                return ProfileEdit(
                    attributes=self.catalogue.profile_updates(event.name, props),
                    consent=self.catalogue.consent_changes(event.name, props),
                    consent_source=f"event {event.name}",
                )

    async def _apply(
        self, conn: Connection, row: CustomerRow, edit: ProfileEdit, event_id: str
    ) -> set[str]:
        """Apply ``edit`` to the locked row (and the store); returns the names that changed."""
        profile = dict(row.profile)
        profile_at = dict(row.profile_at)
        for name, value in edit.attributes.items():
            if edit.stated_at is None:
                profile_at.pop(name, None)
            else:
                newer = profile_at.get(name)
                if newer is not None and datetime.fromisoformat(newer) > edit.stated_at:
                    continue  # an identify stated for a later time set it: keep that
                profile_at[name] = edit.stated_at.isoformat()
            if value is None:
                profile.pop(name, None)
            else:
                profile[name] = to_json(value)
        for name, amount in edit.increment.items():
            current = profile.get(name)
            base = (
                current if isinstance(current, int | float) and not isinstance(current, bool) else 0
            )
            total = base + amount
            profile[name] = int(total) if isinstance(total, float) and total.is_integer() else total
        changed = {
            k for k in set(profile) | set(row.profile) if profile.get(k) != row.profile.get(k)
        }
        stage = edit.stage or row.stage
        if stage != row.stage:
            changed.add("stage")
        if await self._consent(conn, row, edit, event_id):
            changed.add("consent")
        if changed:
            await conn.execute(
                "UPDATE customers SET profile = %s, stage = %s, phone = %s, profile_at = %s,"
                " version = version + 1, updated_at = now() WHERE id = %s",
                (jsonb(profile), stage, self._phone(profile), jsonb(profile_at), row.id),
            )
            row.profile, row.stage, row.version = profile, stage, row.version + 1
        elif profile_at != row.profile_at:
            await conn.execute(
                "UPDATE customers SET profile_at = %s WHERE id = %s", (jsonb(profile_at), row.id)
            )
        row.profile_at = profile_at
        return changed

    async def _consent(
        self, conn: Connection, row: CustomerRow, edit: ProfileEdit, event_id: str
    ) -> bool:
        changed = False
        current = row.consent
        for topic, granted in sorted(edit.consent.items()):
            if current.granted.get(topic) == granted:
                continue
            await conn.execute(
                "INSERT INTO consent (customer_id, topic, granted, source, changed_at)"
                " VALUES (%s, %s, %s, %s, now()) ON CONFLICT (customer_id, topic) DO UPDATE"
                " SET granted = EXCLUDED.granted, source = EXCLUDED.source,"
                " changed_at = EXCLUDED.changed_at",
                (row.id, topic, granted, edit.consent_source),
            )
            await conn.execute(
                "INSERT INTO consent_changes (customer_id, topic, granted, source, event_id, at)"
                " VALUES (%s, %s, %s, %s, %s, now())",
                (row.id, topic, granted, edit.consent_source, event_id),
            )
            current.granted[topic] = granted
            current.sources[topic] = edit.consent_source
            changed = True
        return changed

    def _phone(self, profile: Mapping[str, Any]) -> str | None:
        raw = profile.get(self.phone_attribute or "")
        if not isinstance(raw, str) or not raw:
            return None
        try:
            return phone.normalise(raw)
        except phone.PhoneError:
            return None

    # --- which runs start ---------------------------------------------------------------------

    async def _enter_journeys(
        self,
        conn: Connection,
        customer_id: str,
        event: Event,
        before: dict[str, Any],
        after: dict[str, Any],
        accepted: Accepted,
    ) -> set[tuple[str, int]]:
        """Enter every journey the event triggers; returns the runs a restart replaced."""
        restarted: set[tuple[str, int]] = set()
        for plan in self._triggered(event, before, after, accepted):
            trigger = None if event.name == START_EVENT else event
            refusal = await self._start(conn, customer_id, plan, trigger, event.id, accepted)
            if isinstance(refusal, tuple):
                restarted.add(refusal)
            elif refusal is not None and event.name == START_EVENT:
                accepted.refused[plan.name] = refusal
        return restarted

    async def _enter_segments(
        self,
        conn: Connection,
        customer_id: str,
        event_id: str | None,
        accepted: Accepted,
        now: datetime,
    ) -> set[tuple[str, int]]:
        """Record the trigger segments the customer entered or left and start the journeys
        that trigger on entering them; returns the runs a restart replaced."""
        restarted: set[tuple[str, int]] = set()
        if not self.by_segment:
            return restarted
        accepted.segments = await self.membership.update(conn, customer_id, now)
        for segment in accepted.segments.entered:
            for plan in self.by_segment.get(segment, []):
                outcome = await self._start(conn, customer_id, plan, None, event_id, accepted)
                if isinstance(outcome, tuple):
                    restarted.add(outcome)
        return restarted

    async def _start(
        self,
        conn: Connection,
        customer_id: str,
        plan: JourneyPlan,
        trigger: Event | None,
        event_id: str | None,
        accepted: Accepted,
    ) -> tuple[str, int] | str | None:
        """Enter ``plan`` under its entry rule and write the start's dispatch. Returns the
        run a restart replaced, the refusal when it was not entered, or None."""
        run_no, previous, refusal = await self._enter(conn, customer_id, plan)
        if run_no is None:
            return refusal
        await conn.execute(
            "INSERT INTO runs (customer_id, journey, run_no, plan_version, trigger_event,"
            " started_at) VALUES (%s, %s, %s, %s, %s, now())",
            (customer_id, plan.name, run_no, plan.version, trigger.id if trigger else None),
        )
        payload = {
            "version": plan.version,
            "trigger": to_json(trigger.model_dump()) if trigger else None,
        }
        await _dispatch(conn, customer_id, event_id, "start", plan.name, run_no, payload)
        accepted.started[plan.name] = run_no
        accepted.dispatches += 1
        return (plan.name, previous) if previous is not None else None

    async def reevaluate(
        self, conn: Connection, customer_id: str, now: datetime
    ) -> Accepted | None:
        """Bring the customer's trigger segments up to date at ``now`` with no event (the
        segment sweep: their data did not change, time did); None when there is no such
        customer.

        Must run inside a transaction.
        """
        row = await load_customer(conn, customer_id, lock=True)
        if row is None:
            return None
        accepted = Accepted("", row)
        open_runs = {(r.journey, r.run_no) for r in await self._open_runs(conn, customer_id)}
        restarted = await self._enter_segments(conn, customer_id, None, accepted, now)
        for journey, run_no in sorted(restarted & open_runs):
            payload = {"event": None, "restart": True}
            await _dispatch(conn, customer_id, None, "signal", journey, run_no, payload)
            accepted.signalled.append((journey, run_no))
            accepted.dispatches += 1
        return accepted

    def _triggered(
        self, event: Event, before: dict[str, Any], after: dict[str, Any], accepted: Accepted
    ) -> Iterable[JourneyPlan]:
        if event.name == START_EVENT:
            wanted = event.properties.get("journey")
            yield from (p for p in self.plans if p.name == wanted)
            return
        for plan in self.plans:
            try:
                if routing.triggers(plan, event, before, after):
                    yield plan
            except ExpressionError as err:
                problem = f"{plan.name}: trigger condition could not be evaluated: {err}"
                log.warning("event %s not routed to %s", event.id, problem)
                accepted.problems.append(problem)

    async def _enter(
        self, conn: Connection, customer_id: str, plan: JourneyPlan
    ) -> tuple[int | None, int | None, str]:
        """Apply the plan's entry rule: (new run number or None, run it replaced, refusal)."""
        values = (customer_id, plan.name)
        # A first entry continues the numbering of the runs an erased customer with this id had.
        insert = (
            "INSERT INTO journey_entries (customer_id, journey, entries, open_run, run_base,"
            " first_at, last_at) SELECT %s, %s, 1, base + 1, base, now(), now() FROM"
            " (SELECT coalesce(max(last_run), 0) AS base FROM retired_runs"
            "  WHERE id_hash = %s AND journey = %s) AS retired"
            " ON CONFLICT (customer_id, journey)"
        )
        take = (
            " DO UPDATE SET entries = journey_entries.entries + 1,"
            " open_run = journey_entries.run_base + journey_entries.entries + 1,"
            " last_at = EXCLUDED.last_at"
        )
        returning = " RETURNING run_base + entries AS run_no"
        retired = (await self._id_hash(conn, customer_id), plan.name)
        previous: int | None = None
        match plan.entry:
            case Entry.once:
                query = insert + " DO NOTHING" + returning
                refusal = f"{customer_id} has been through {plan.name} before (entry: once)"
            case Entry.after_exit:
                query = insert + take + " WHERE journey_entries.open_run IS NULL" + returning
                refusal = f"{plan.name} is already running for {customer_id} (entry: after_exit)"
            case Entry.restart:
                cursor = await conn.execute(
                    "SELECT open_run FROM journey_entries WHERE customer_id = %s AND journey = %s"
                    " FOR UPDATE",
                    values,
                )
                found = await cursor.fetchone()
                previous = found["open_run"] if found else None
                if previous is not None:
                    await conn.execute(
                        "UPDATE runs SET ended_at = now(), outcome = %s"
                        " WHERE customer_id = %s AND journey = %s AND run_no = %s",
                        (RunOutcome.restarted, *values, previous),
                    )
                query = insert + take + returning
                refusal = ""
        cursor = await conn.execute(query, (*values, *retired))
        entered = await cursor.fetchone()
        if entered is None:
            return None, None, refusal
        return int(entered["run_no"]), previous, ""

    async def _id_hash(self, conn: Connection, customer_id: str) -> bytes:
        """The keyed hash erased customer ids are retired under (the key read once)."""
        if self._id_key is None:
            self._id_key = await suppression_key(conn)
        return customer_id_hash(self._id_key, customer_id)

    async def _open_runs(self, conn: Connection, customer_id: str) -> list[_OpenRun]:
        cursor = await conn.execute(
            "SELECT r.journey, r.run_no, p.listens, p.reads FROM runs r"
            " JOIN plans p ON p.journey = r.journey AND p.version = r.plan_version"
            " WHERE r.customer_id = %s AND r.ended_at IS NULL ORDER BY r.journey",
            (customer_id,),
        )
        return [
            _OpenRun(
                row["journey"], row["run_no"], frozenset(row["listens"]), frozenset(row["reads"])
            )
            for row in await cursor.fetchall()
        ]


async def _dispatch(
    conn: Connection,
    customer_id: str,
    event_id: str | None,
    kind: str,
    journey: str,
    run_no: int,
    payload: dict[str, Any],
) -> None:
    await conn.execute(
        "INSERT INTO dispatches (customer_id, event_id, kind, journey, run_no, payload)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (customer_id, event_id, kind, journey, run_no, jsonb(payload)),
    )


async def _stage_changed(
    conn: Connection, customer_id: str, before: str | None, after: str | None, event: Event
) -> None:
    """Keep the stage's history where it changes, with the run whose ``set`` step moved it:
    the report's lifecycle flow reads it."""
    journey, run_no = _author(event) or (None, None)
    if not journey:
        journey, run_no = None, None
    await conn.execute(
        "INSERT INTO stage_changes (customer_id, from_stage, to_stage, journey, run_no, at)"
        " VALUES (%s, %s, %s, %s, %s, coalesce(%s, now()))",
        (customer_id, before, after, journey, run_no, event.timestamp),
    )


def _author(event: Event) -> tuple[str, int] | None:
    """The run whose ``set`` step this event is, if it is one."""
    if event.name != SET_EVENT:
        return None
    return str(event.properties.get("journey")), int(event.properties.get("run_no", 0))


def _now() -> datetime:
    return datetime.now(UTC)


def _stated_at(moment: datetime | None) -> datetime:
    """When an identify call says its attributes were true: its timestamp (naive is UTC), but
    never later than now, so a caller's fast clock cannot lock attributes against later calls."""
    now = datetime.now(UTC)
    if moment is None:
        return now
    return min(moment if moment.tzinfo else moment.replace(tzinfo=UTC), now)
