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
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.client import Schedule as TemporalSchedule
from temporalio.service import RPCError

from kairos.language.plan import JourneyPlan
from kairos.language.segments import Segment
from kairos.runtime.client import Kairos
from kairos.runtime.crypto import KeyUnavailable
from kairos.runtime.schedules import (
    BROADCAST_WORKFLOW,
    DEFAULT_ZONE,
    BroadcastGroup,
    broadcast_of,
    fire_time,
    first_day,
    is_zone,
    schedule_id,
)
from kairos.store.broadcasts import STARTS_AT_ONCE, Broadcast, BroadcastStore, MemberStatus
from kairos.store.database import StoreError
from kairos.tools.enroll import Pacer

DEFAULT_CONCURRENCY = STARTS_AT_ONCE
DEFAULT_RATE = 200.0
CATCHUP = timedelta(hours=1)
_NEVER = datetime.max.replace(tzinfo=UTC)


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
    """One run of a broadcast: enter its pending members a batch per store transaction, and
    make their journey starts ``concurrency`` at a time."""

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
        self.kairos = kairos
        self.plan = plan
        self.segment = segment
        self.store = BroadcastStore(kairos.store)
        self.pacer = Pacer.checked(rate, concurrency, BroadcastError)
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
        try:
            await self.kairos.dispatcher.run(await self.store.undispatched(broadcast.id))
            async for statuses in self.store.enter_pending(
                broadcast.id, self.plan, self.kairos.dispatcher,
                concurrency=self.concurrency, pace=self.pacer.wait,
            ):  # fmt: skip
                for status in statuses:
                    if status is MemberStatus.enrolled:
                        self.progress.enrolled += 1
                    else:
                        self.progress.refused += 1
                    self.on_member(status)
            return await self.store.finish(broadcast.id)
        except StoreError as err:
            # The store is gone: stop; the same command goes on from here once it is back.
            raise BroadcastError(str(err)) from None


# --- scheduled broadcasts: one Temporal Schedule per zone ------------------------------------


@dataclass(frozen=True)
class ZoneGroup:
    """One Temporal Schedule of a broadcast: the zone whose clock it follows, the moment that
    clock shows ``at`` (UTC), and the segment's members in that zone when it was scheduled."""

    zone: str
    fires_at: datetime
    members: int


@dataclass(frozen=True)
class Schedule:
    """A broadcast to schedule: each group fires once, at ``at`` on ``day`` in its zone."""

    broadcast: str
    journey: str
    segment: str
    day: date
    at: time
    local: bool
    groups: list[ZoneGroup]

    def group(self, zone: str) -> BroadcastGroup:
        """The broadcast workflow's input for ``zone``'s schedule."""
        zones = [g.zone for g in self.groups]
        return BroadcastGroup(
            broadcast=self.broadcast,
            journey=self.journey,
            segment=self.segment,
            zones=[zone] if self.local else [],
            rest=zone == DEFAULT_ZONE or not self.local,
            scheduled=zones if self.local else [],
            when=f"{self.day.isoformat()} {self.at:%H:%M} {zone}",
        )

    def note(self, group: ZoneGroup) -> str:
        """The schedule's note, for whoever finds it in the Temporal UI."""
        whose = (
            f"the members whose timezone is {group.zone}"
            + (" (and those with none)" if group.zone == DEFAULT_ZONE else "")
            if self.local
            else "every member"
        )
        return (
            f"Broadcast {self.broadcast}: starts journey {self.journey} for {whose} of segment "
            f"{self.segment}, once, at {self.day.isoformat()} {self.at:%H:%M} {group.zone}. "
            f"Cancel: kairos broadcast cancel {self.broadcast}"
        )


def check_zone(zone: str) -> None:
    """Raises BroadcastError when ``zone`` (``--timezone``) is not a timezone."""
    if not is_zone(zone):
        raise BroadcastError(
            f"--timezone {zone}: not a timezone (an IANA name: Europe/Helsinki, UTC, ...)"
        )


async def plan_schedule(
    store: BroadcastStore,
    plan: JourneyPlan,
    segment: Segment,
    now: datetime,
    *,
    at: time,
    day: date | int | None,
    zone: str | None,
    broadcast_id: str | None,
) -> Schedule:
    """The schedules of a broadcast at ``at`` on ``day``: in ``zone``, or in each member's own
    timezone when ``zone`` is None (one group per timezone in the segment now, plus the
    default zone's). A weekday (0 for Monday) or None for ``day`` means the first such day
    on which ``at`` is still ahead everywhere.

    Raises:
        BroadcastError: ``zone`` is not a timezone, or ``at`` on ``day`` has passed somewhere.
    """
    if zone is not None:
        check_zone(zone)
    counts: dict[str, int] = {}
    if zone is None:
        try:
            for name, members in (await store.zones(segment, now)).items():
                key = name if is_zone(name) else DEFAULT_ZONE
                counts[key] = counts.get(key, 0) + members
        except StoreError as err:
            raise BroadcastError(str(err)) from None
        counts.setdefault(DEFAULT_ZONE, 0)
    else:
        counts[zone] = 0
    zones = sorted(counts)
    if not isinstance(day, date):
        day = first_day(now.astimezone(UTC).date(), at, zones, now, weekday=day)
    past = [z for z in zones if fire_time(day, at, z) <= now]
    if past:
        more = f" (and {len(past) - 1} more zones)" if len(past) > 1 else ""
        raise BroadcastError(
            f"{at:%H:%M} on {day.isoformat()} has already passed in {past[0]}{more}: "
            "choose a later --on (YYYY-MM-DD or a weekday)"
        )
    local = zone is None
    name = broadcast_id or (
        f"{plan.name}-{segment.name}-{day:%Y%m%d}-{at:%H%M}" + ("-local" if local else "")
    )
    groups = [ZoneGroup(z, fire_time(day, at, z), counts[z]) for z in zones]
    return Schedule(name, plan.name, segment.name, day, at, local, groups)


async def create_schedules(client: Client, task_queue: str, schedule: Schedule) -> int:
    """Create the broadcast's Temporal Schedules; those that exist already are left as they
    are (running the same command again after a failure completes it). Returns how many
    were created.

    Raises:
        BroadcastError: Every one of them existed already, or Temporal cannot be reached.
    """
    created = 0
    for group in schedule.groups:
        try:
            await client.create_schedule(
                schedule_id(schedule.broadcast, group.zone),
                _temporal_schedule(schedule, group, task_queue),
                memo={
                    "broadcast": schedule.broadcast,
                    "journey": schedule.journey,
                    "segment": schedule.segment,
                    "zone": group.zone,
                    "local": schedule.local,
                    "fires_at": group.fires_at.isoformat(),
                },
            )
            created += 1
        except ScheduleAlreadyRunningError:
            continue
        except (RPCError, RuntimeError) as err:
            raise _unreachable(client, err) from None
    if not created:
        raise BroadcastError(
            f"broadcast {schedule.broadcast} is scheduled already (`kairos broadcast list` "
            "shows it; cancel it or choose another --id)"
        )
    return created


def _temporal_schedule(schedule: Schedule, group: ZoneGroup, task_queue: str) -> TemporalSchedule:
    day, at = schedule.day, schedule.at
    once = ScheduleCalendarSpec(
        year=[ScheduleRange(day.year)],
        month=[ScheduleRange(day.month)],
        day_of_month=[ScheduleRange(day.day)],
        hour=[ScheduleRange(at.hour)],
        minute=[ScheduleRange(at.minute)],
        second=[ScheduleRange(0)],
        comment=f"{day.isoformat()} {at:%H:%M} in {group.zone}",
    )
    return TemporalSchedule(
        action=ScheduleActionStartWorkflow(
            BROADCAST_WORKFLOW,
            schedule.group(group.zone),
            id=schedule_id(schedule.broadcast, group.zone),
            task_queue=task_queue,
        ),
        # Temporal keeps the wall clock of the zone: 10:00 is 10:00 on a DST-change day too.
        spec=ScheduleSpec(calendars=[once], time_zone_name=group.zone),
        # Late by more than an hour (Temporal was down at 10:00), a sale morning is missed
        # rather than sent in the afternoon; `kairos broadcast list` shows it never ran.
        policy=SchedulePolicy(catchup_window=CATCHUP),
        state=ScheduleState(note=schedule.note(group), limited_actions=True, remaining_actions=1),
    )


@dataclass(frozen=True)
class Scheduled:
    """A scheduled broadcast as Temporal has it: one schedule per group."""

    broadcast: str
    journey: str
    segment: str
    local: bool
    schedules: list[str]
    waiting: list[datetime]  # when the groups still to fire will (UTC)
    fired: int  # groups that have run


async def scheduled_broadcasts(client: Client) -> list[Scheduled]:
    """Every scheduled broadcast Temporal knows, by the first moment a group fires.

    Raises:
        BroadcastError: Temporal cannot be reached.
    """
    found: dict[str, dict[str, Any]] = {}
    try:
        async for listed in await client.list_schedules():
            broadcast = broadcast_of(listed.id)
            if broadcast is None:
                continue
            try:
                memo = await listed.memo()
            except KeyUnavailable:
                # Written under keys this installation does not have: another installation's
                # broadcast in a shared namespace (each keeps its own master key), not ours.
                continue
            entry = found.setdefault(
                broadcast,
                {
                    "journey": str(memo.get("journey", "")),
                    "segment": str(memo.get("segment", "")),
                    "local": bool(memo.get("local", False)),
                    "schedules": [],
                    "waiting": [],
                    "fired": 0,
                },
            )
            entry["schedules"].append(listed.id)
            if listed.info is not None:
                entry["waiting"].extend(listed.info.next_action_times)
                entry["fired"] += 1 if listed.info.recent_actions else 0
    except (RPCError, RuntimeError) as err:
        raise _unreachable(client, err) from None
    out = [
        Scheduled(broadcast=b, **{**e, "schedules": sorted(e["schedules"])})
        for b, e in found.items()
    ]
    return sorted(out, key=lambda s: (min(s.waiting, default=_NEVER), s.broadcast))


async def cancel_scheduled(client: Client, broadcast_id: str) -> Scheduled:
    """Delete every schedule of ``broadcast_id``; members a group already entered stay in.

    Raises:
        BroadcastError: No such scheduled broadcast, or Temporal cannot be reached.
    """
    listed = await scheduled_broadcasts(client)
    chosen = next((s for s in listed if s.broadcast == broadcast_id), None)
    if chosen is None:
        raise BroadcastError(
            f"no scheduled broadcast {broadcast_id!r} (`kairos broadcast list` shows them)"
        )
    try:
        for schedule in chosen.schedules:
            await client.get_schedule_handle(schedule).delete()
    except (RPCError, RuntimeError) as err:
        raise _unreachable(client, err) from None
    return chosen


def _unreachable(client: Client, err: Exception) -> BroadcastError:
    target = client.service_client.config.target_host
    return BroadcastError(f"cannot reach Temporal at {target} ({err})")
