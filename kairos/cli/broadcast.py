"""``kairos broadcast JOURNEY --segment NAME``: start a journey for every member of a segment."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from kairos.cli.base import app, console, err_console, progress_bar, quiet_logs, warn
from kairos.cli.base import fail_text as fail
from kairos.cli.runtime import load, with_client
from kairos.cli.segment import find_segment
from kairos.language.plan import JourneyPlan
from kairos.language.problems import plural
from kairos.language.project import Project
from kairos.language.segments import Segment
from kairos.runtime.client import Kairos, KairosError, check_journey
from kairos.runtime.config import Settings
from kairos.runtime.schedules import DEFAULT_ZONE, opening_wait, schedule_id
from kairos.store.broadcasts import Broadcast, BroadcastStore, MemberStatus, Reach
from kairos.store.database import StoreError
from kairos.tools.broadcast import (
    CATCHUP,
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE,
    BroadcastError,
    BroadcastRun,
    Schedule,
    Scheduled,
    cancel_scheduled,
    check_zone,
    create_schedules,
    plan_schedule,
    scheduled_broadcasts,
)
from kairos.tools.enroll import EnrollError, ensure_worker

T = TypeVar("T")

_EPILOG = (
    "Examples: [bold]kairos broadcast flash_sale --segment sms_subscribers_retention[/]  "
    "(now; Ctrl-C stops, the same command goes on where it stopped)  "
    "[bold]kairos broadcast flash_sale --segment sms_subscribers_retention "
    "--on friday --at 10:00 --local --id friday-sale[/]  (Friday 10:00 in each "
    "customer's own time)"
)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


class _SendByDefault(TyperGroup):
    """``kairos broadcast JOURNEY ...`` is ``kairos broadcast send JOURNEY ...``: the group's
    other commands (list, cancel) are names no journey needs to be broadcast by."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:  # Typer's vendored Click
        if args and args[0] not in self.commands:
            args = ["send", *args]
        return super().resolve_command(ctx, args)


broadcast = typer.Typer(
    cls=_SendByDefault,
    help="Start a journey for every member of a segment, now or at a time (in each customer's "
    "own timezone with --local); list and cancel scheduled broadcasts.",
    epilog=_EPILOG,
    no_args_is_help=True,
)
app.add_typer(broadcast, name="broadcast")


@broadcast.command("send", epilog=_EPILOG)
def broadcast_command(
    journey: Annotated[str, typer.Argument(help="Journey name (journeys/<name>.yaml).")],
    segment: Annotated[str, typer.Option("--segment", help="Segment name (segments/<name>.yaml).")],
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Schedule it for this time of day (HH:MM) instead of now: a Temporal Schedule "
            "starts it then (a worker must be running at that time).",
            show_default=False,
        ),
    ] = None,
    on: Annotated[
        str | None,
        typer.Option(
            "--on",
            help="The day for --at: YYYY-MM-DD, or a weekday (friday: the next Friday on which "
            "--at is still ahead everywhere). Default: the first day --at is still ahead.",
            show_default=False,
        ),
    ] = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="--at in each customer's own timezone (their `timezone` attribute; UTC for "
            "those without one): one schedule per timezone in the segment.",
        ),
    ] = False,
    timezone: Annotated[
        str | None,
        typer.Option(
            "--timezone",
            help="The timezone of --at for everyone (default UTC), e.g. Europe/Helsinki.",
            show_default=False,
        ),
    ] = None,
    broadcast_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="Name this broadcast (default: go on with the unfinished one of this journey "
            "and segment, or begin journey-segment-YYYYMMDD-HHMM).",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float, typer.Option(min=0.1, help="At most this many journey starts per second.")
    ] = DEFAULT_RATE,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Starts in flight at once.")
    ] = DEFAULT_CONCURRENCY,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Start a journey for every member of a segment, once each: now, or at --at.

    Now: the segment's members are recorded when the broadcast begins; each is then
    entered into the journey under its entry rule, as `kairos start` would. The
    messages go through consent, caps, quiet hours (in each customer's timezone)
    and the providers' rate limits like any other. Stopped (Ctrl-C, a crash),
    the same command goes on with the members left; nobody is entered twice.

    At a time (--at, with --on, --local or --timezone): Temporal Schedules start
    the broadcast then, and the segment's members are those of that moment.
    """
    settings, project = load()
    try:
        plan = check_journey(project, journey)
    except KairosError as err:
        raise fail(str(err)) from None
    chosen = find_segment(project, segment)
    if at is not None or on is not None or local or timezone is not None:
        when = _when(at, on, local, timezone)
        _check_opening_wait(plan, when)
        _schedule(settings, project, plan, chosen, when, broadcast_id, as_json=as_json)
        return
    quiet_logs()
    handled: list[MemberStatus] = []

    async def go() -> tuple[Broadcast, bool, dict[MemberStatus, int]]:
        async with await Kairos.connect(settings, project=project) as kairos:
            await ensure_worker(kairos)
            run = BroadcastRun(kairos, plan, chosen, rate=rate, concurrency=concurrency)
            begun = await run.begin(broadcast_id, datetime.now(UTC))
            counts = await run.store.counts(begun.id)
            left = counts[MemberStatus.pending]
            if left < begun.targeted:
                err_console.print(
                    f"resuming broadcast {begun.id}: {begun.targeted - left} of "
                    f"{begun.targeted} members were handled by an earlier run",
                    highlight=False,
                    markup=False,
                )
            with progress_bar("broadcasting", left) as advance:

                def heard(status: MemberStatus) -> None:
                    handled.append(status)
                    advance()

                run.on_member = heard
                finished = await run.run(begun)
            return begun, finished, await BroadcastStore(kairos.store).counts(begun.id)

    try:
        begun, finished, counts = asyncio.run(go())
    except (BroadcastError, EnrollError, StoreError) as err:
        raise fail(str(err)) from None
    except KeyboardInterrupt:
        raise fail(
            f"interrupted after {len(handled)} members; run the same command again to go on "
            "(nobody is entered twice)",
            code=130,
        ) from None
    _report(begun, finished, counts, as_json=as_json)


@dataclass(frozen=True)
class _When:
    at: time
    day: date | int | None  # a weekday: the next one on which ``at`` is ahead
    zone: str | None  # None: each customer's own


def _when(at: str | None, on: str | None, local: bool, zone: str | None) -> _When:
    """The options of a scheduled broadcast, checked, or the one-line reason they are wrong."""
    if at is None:
        raise fail("--on, --local and --timezone schedule a broadcast: give --at HH:MM too")
    if local and zone is not None:
        raise fail("--local sends at --at in each customer's own timezone: leave out --timezone")
    if zone is not None:
        try:
            check_zone(zone)
        except BroadcastError as err:
            raise fail(str(err)) from None
    found = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at.strip())
    if found is None:
        raise fail(f"--at {at}: not a time of day (HH:MM, 00:00 to 23:59, e.g. 10:00)")
    return _When(
        time(int(found.group(1)), int(found.group(2))),
        _day(on, datetime.now(UTC).date()) if on is not None else None,
        None if local else (zone or DEFAULT_ZONE),
    )


def _check_opening_wait(plan: JourneyPlan, when: _When) -> None:
    """Refuse a schedule whose time the journey's opening ``wait: {until: ...}`` would push to
    the next day; say so when that wait moves the messages to the next day on purpose."""
    found = opening_wait(plan, when.at, when.zone, CATCHUP)
    if found is None:
        return
    if found.refuse:
        raise fail(found.text)
    warn(found.text)


def _day(on: str, today: date) -> date | int:
    name = on.strip().lower()
    if name in _WEEKDAYS:
        return _WEEKDAYS.index(name)
    try:
        return date.fromisoformat(on.strip())
    except ValueError:
        raise fail(
            f"--on {on}: not a date (YYYY-MM-DD, e.g. {today + timedelta(days=1)}) or a weekday "
            "(monday ... sunday)"
        ) from None


def _schedule(
    settings: Settings,
    project: Project,
    plan: JourneyPlan,
    chosen: Segment,
    when: _When,
    broadcast_id: str | None,
    *,
    as_json: bool,
) -> None:
    async def go(kairos: Kairos) -> Schedule:
        store = BroadcastStore(kairos.store)
        planned = await plan_schedule(
            store,
            plan,
            chosen,
            datetime.now(UTC),
            at=when.at,
            day=when.day,
            zone=when.zone,
            broadcast_id=broadcast_id,
        )
        await create_schedules(kairos.client, kairos.task_queue, planned)
        return planned

    planned = _with_temporal(settings, project, go)
    if as_json:
        body: dict[str, object] = {
            name: getattr(planned, name) for name in ("broadcast", "journey", "segment", "local")
        }
        body["schedules"] = [
            {
                "id": schedule_id(planned.broadcast, g.zone),
                "zone": g.zone,
                "fires_at": g.fires_at.isoformat(),
                "members_now": g.members,
            }
            for g in planned.groups
        ]
        typer.echo(json.dumps(body, indent=2))
        return
    whose = "each customer's own time" if planned.local else planned.groups[0].zone
    table = Table(
        title=f"broadcast {planned.broadcast}: {planned.journey} to {planned.segment}, "
        f"{planned.day:%a %Y-%m-%d} {planned.at:%H:%M} in {whose}",
        title_justify="left",
    )
    for column in ("timezone", "fires (UTC)", "members now"):
        table.add_column(column, justify="right" if column == "members now" else "left")
    for g in planned.groups:
        table.add_row(escape(g.zone), f"{g.fires_at:%Y-%m-%d %H:%M}", str(g.members))
    console.print(table)
    console.print(
        f"scheduled: {plural(len(planned.groups), 'Temporal Schedule')} "
        f"(broadcast:{planned.broadcast}:…); "
        f"each enters its members as the segment is then. "
        f"Cancel: kairos broadcast cancel {planned.broadcast}",
        highlight=False,
        markup=False,
    )


def _with_temporal(
    settings: Settings, project: Project, action: Callable[[Kairos], Awaitable[T]]
) -> T:
    try:
        return with_client(settings, project, action)
    except BroadcastError as err:
        raise fail(str(err)) from None


@broadcast.command("list", epilog="Example: [bold]kairos broadcast list[/]")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable list.")] = False,
) -> None:
    """Scheduled broadcasts (their Temporal Schedules), the next to fire first."""
    settings, project = load()

    async def go(kairos: Kairos) -> list[Scheduled]:
        return await scheduled_broadcasts(kairos.client)

    found = _with_temporal(settings, project, go)
    if as_json:
        rows = [
            {
                "broadcast": s.broadcast,
                "journey": s.journey,
                "segment": s.segment,
                "local": s.local,
                "schedules": s.schedules,
                "waiting": [t.isoformat() for t in sorted(s.waiting)],
                "fired": s.fired,
            }
            for s in found
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not found:
        console.print("no broadcast is scheduled", highlight=False)
        return
    table = Table(title="scheduled broadcasts", title_justify="left")
    for column in ("broadcast", "journey", "segment", "schedules", "next (UTC)", "fired"):
        table.add_column(column, justify="right" if column in ("schedules", "fired") else "left")
    for s in found:
        upcoming = f"{min(s.waiting):%Y-%m-%d %H:%M}" if s.waiting else "-"
        table.add_row(
            escape(s.broadcast),
            escape(s.journey),
            escape(s.segment),
            str(len(s.schedules)),
            upcoming,
            str(s.fired),
        )
    console.print(table)


@broadcast.command(
    "cancel",
    epilog="Example: [bold]kairos broadcast cancel flash_sale-sms_subscribers_retention-"
    "20261204-1000-local[/]",
)
def cancel_command(
    broadcast_id: Annotated[str, typer.Argument(help="The broadcast (kairos broadcast list).")],
) -> None:
    """Cancel a scheduled broadcast: its Temporal Schedules are deleted.

    Members a group already entered stay in the journey (`kairos cancel` ends a run).
    """
    settings, project = load()

    async def go(kairos: Kairos) -> Scheduled:
        return await cancel_scheduled(kairos.client, broadcast_id)

    cancelled = _with_temporal(settings, project, go)
    console.print(
        f"cancelled broadcast {cancelled.broadcast}: {plural(len(cancelled.schedules), 'schedule')}"
        f" deleted ({cancelled.fired} had already fired)",
        highlight=False,
        markup=False,
    )


def _report(
    begun: Broadcast, finished: bool, counts: dict[MemberStatus, int], *, as_json: bool
) -> None:
    if as_json:
        body = {
            "broadcast": begun.id,
            "journey": begun.journey,
            "segment": begun.segment,
            "targeted": begun.targeted,
            "finished": finished,
            "members": {status.value: n for status, n in counts.items()},
        }
        typer.echo(json.dumps(body, indent=2))
        return
    table = Table(title=f"broadcast {begun.id}", title_justify="left")
    table.add_column("members")
    table.add_column("count", justify="right")
    table.add_row("in the segment when it began", str(begun.targeted))
    table.add_row("entered the journey", str(counts[MemberStatus.enrolled]))
    table.add_row("kept out by the entry rule", str(counts[MemberStatus.refused]))
    if counts[MemberStatus.pending]:
        table.add_row("left (run the same command again)", str(counts[MemberStatus.pending]))
    console.print(table)


# --- reach, for `kairos report` ------------------------------------------------------------


def reach_json(found: list[Reach]) -> list[dict[str, object]]:
    return [
        {
            "broadcast": r.broadcast,
            "journey": r.journey,
            "segment": r.segment,
            "began": r.created_at.isoformat(),
            "targeted": r.targeted,
            "entered": r.entered,
            "kept_out": r.kept_out,
            "sent": r.sent,
            "blocked": r.blocked,
            "converted": r.converted,
        }
        for r in found
    ]


def print_reach(found: list[Reach]) -> None:
    """Broadcast reach: targeted, entered, sent, blocked by reason, converted."""
    if not found:
        return
    table = Table(title="broadcasts", title_justify="left")
    for column in ("broadcast", "segment", "targeted", "entered", "sent", "blocked", "converted"):
        table.add_column(column, justify="left" if column in ("broadcast", "segment") else "right")
    for r in found:
        blocked = ", ".join(f"{n} {reason}" for reason, n in r.blocked.items()) or "0"
        table.add_row(
            escape(r.broadcast),
            escape(r.segment),
            str(r.targeted),
            str(r.entered),
            str(r.sent),
            escape(blocked),
            str(r.converted),
        )
    console.print(table)
