"""Scheduled broadcasts: what the command line, the broadcast workflow and its activity agree on.

``kairos broadcast flash_sale --segment sms_subscribers_retention --on friday --at 10:00
--local`` becomes one Temporal Schedule per timezone present in the segment, each firing once
at 10:00 on that day in its zone (Temporal keeps the wall clock across DST changes). When one
fires, the broadcast workflow's activity enters the segment's members *of that zone at that
moment* through the store's idempotent broadcast path: every group of a broadcast shares one
broadcast id, so a customer who moved from one zone to another since is still entered once.

The group of the project's default zone (UTC, the zone quiet hours use for a customer without
one) also takes everyone whose timezone is none of the broadcast's zones: no timezone, one
nobody had when it was scheduled, or one that is not a timezone.

Nothing here is personal: ids, memos and notes name the broadcast, journey, segment and zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from kairos.language.plan import JourneyPlan
from kairos.runtime.policy import local_datetime

BROADCAST_WORKFLOW = "KairosBroadcast"
BROADCAST_ACTIVITY = "broadcast_group"
SCHEDULE_PREFIX = "broadcast:"
# A group's worker killed mid-way is noticed this soon (it was a minute); the retry goes on
# from the members still pending. The activity heartbeats every HEARTBEAT_EVERY while it runs,
# whatever a batch waits for; the worker sends one on every 0.8 x the timeout (24 s: a
# billable action on Temporal Cloud), which leaves 6 s for a busy machine to deliver it.
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
HEARTBEAT_EVERY = timedelta(seconds=2)
# The zone of a customer without a (valid) timezone: the one quiet hours use
# (kairos.runtime.policy).
DEFAULT_ZONE = "UTC"


class BroadcastGroup(BaseModel):
    """One scheduled group of a broadcast: the input of the broadcast workflow.

    Attributes:
        broadcast: The broadcast id every group of it shares.
        journey: The journey to enter members into.
        segment: The segment whose members (at run time) are entered.
        zones: The customer timezones this group enters.
        rest: Also enter members whose timezone is none of ``scheduled`` (the default
            group; the only group of a broadcast that is not ``--local``).
        scheduled: Every zone with a group of its own in this broadcast.
        when: When it fires, as people read it (``2026-12-04 10:00 Europe/Helsinki``).
    """

    broadcast: str
    journey: str
    segment: str
    zones: list[str] = Field(default_factory=list)
    rest: bool = False
    scheduled: list[str] = Field(default_factory=list)
    when: str = ""


class GroupResult(BaseModel):
    """What one group's run did: members added to the broadcast, entered, kept out."""

    added: int
    enrolled: int
    refused: int


def schedule_id(broadcast_id: str, zone: str) -> str:
    """The Temporal Schedule of one zone of a broadcast: ``broadcast:<id>:<zone>``."""
    return f"{SCHEDULE_PREFIX}{broadcast_id}:{zone}"


def broadcast_of(schedule: str) -> str | None:
    """The broadcast id a schedule id names (None for a schedule that is not a broadcast's)."""
    if not schedule.startswith(SCHEDULE_PREFIX):
        return None
    broadcast, colon, _zone = schedule[len(SCHEDULE_PREFIX) :].rpartition(":")
    return broadcast if colon and broadcast else None


def is_zone(name: str) -> bool:
    """Whether ``name`` is an IANA timezone this machine knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return bool(name)


def fire_time(day: date, at: time, zone: str) -> datetime:
    """``day`` at wall-clock ``at`` in ``zone``, in UTC: 10:00 stays 10:00 on a DST-change day."""
    return local_datetime(day, at, ZoneInfo(zone))


def first_day(
    today: date, at: time, zones: list[str], now: datetime, weekday: int | None = None
) -> date:
    """The first day from ``today`` (of ``weekday``, 0 for Monday, when given) on which ``at``
    is still ahead in every zone."""
    for offset in range(10):
        day = today + timedelta(days=offset)
        if weekday is not None and day.weekday() != weekday:
            continue
        if all(fire_time(day, at, zone) > now for zone in zones):
            return day
    raise AssertionError("unreachable: every zone reaches a time of day within two days")


@dataclass(frozen=True)
class OpeningWait:
    """What a journey's opening ``wait: {until: "HH:MM"}`` does to a broadcast at ``at``.

    Attributes:
        text: ``file:line: ...``, the one line to show the marketer.
        refuse: The wait's time falls in the hour after ``at`` (the group starts at ``at``,
            up to its catch-up window late, and entering a large segment takes a while), so
            each message would wait for the next day, or some would and some not.
    """

    text: str
    refuse: bool


def opening_wait(
    plan: JourneyPlan, at: time, zone: str | None, spread: timedelta
) -> OpeningWait | None:
    """Whether the broadcast of ``plan`` at ``at`` (in each customer's own timezone when
    ``zone`` is None, else in ``zone``) meets an opening wait until a time of day that moves
    its messages to another day. ``spread``: how late a group may start (its catch-up window).

    ``wait: {until: "10:00"}`` waits for the *next* 10:00 on the customer's clock: a run
    entered at 10:00 sends at 10:00 the following day. None when there is no opening wait, or
    each only holds the messages until later the same day.
    """
    entered = at.hour * 60 + at.minute
    late = int(spread.total_seconds() // 60)
    clock = "each customer's own time" if zone is None else f"{zone} time"
    for step in plan.opening_waits():
        hour, minute = (int(part) for part in (step.time_of_day or "").split(":"))
        delay = (hour * 60 + minute - entered) % (24 * 60)
        where = f"{plan.source}:{plan.step_lines.get(step.id, 1)}"
        begins = (
            f"{plan.name} begins by waiting until {step.time_of_day} in the customer's timezone"
        )
        if delay < late:
            return OpeningWait(
                f"{where}: {begins}, and the broadcast enters its members at {at:%H:%M} "
                f"{clock} (a group may start up to {late} minutes late), so each message would "
                f"wait for the next day's {step.time_of_day}, or some would and some not "
                f"(remove that wait and let --at time the message, or schedule --at at least "
                f"{late} minutes before {step.time_of_day})",
                refuse=True,
            )
        if hour * 60 + minute < entered:
            return OpeningWait(
                f"{where}: {begins}: members entered at {at:%H:%M} {clock} get their first "
                f"message at {step.time_of_day} the next day",
                refuse=False,
            )
    return None
