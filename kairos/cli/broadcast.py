"""``kairos broadcast JOURNEY --segment NAME``: start a journey for every member of a segment."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kairos.broadcast import DEFAULT_CONCURRENCY, DEFAULT_RATE, BroadcastError, BroadcastRun
from kairos.cli.base import app, console, err_console, progress_bar, quiet_logs
from kairos.cli.base import fail_text as fail
from kairos.cli.runtime import load
from kairos.cli.segment import find_segment
from kairos.client import Kairos, KairosError, check_journey
from kairos.enroll import EnrollError, ensure_worker
from kairos.store import StoreError
from kairos.store.broadcasts import Broadcast, BroadcastStore, MemberStatus, Reach

_EPILOG = (
    "Example: [bold]kairos broadcast flash_sale --segment sms_subscribers_retention[/]  "
    "(Ctrl-C stops; the same command goes on where it stopped)"
)


@app.command("broadcast", epilog=_EPILOG)
def broadcast_command(
    journey: Annotated[str, typer.Argument(help="Journey name (journeys/<name>.yaml).")],
    segment: Annotated[str, typer.Option("--segment", help="Segment name (segments/<name>.yaml).")],
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
    """Start a journey for every member of a segment, once each.

    The segment's members are recorded when the broadcast begins; each is then
    entered into the journey under its entry rule, as `kairos start` would. The
    messages go through consent, caps, quiet hours (in each customer's timezone)
    and the providers' rate limits like any other. Stopped (Ctrl-C, a crash),
    the same command goes on with the members left; nobody is entered twice.
    """
    settings, project = load()
    try:
        plan = check_journey(project, journey)
    except KairosError as err:
        raise fail(str(err)) from None
    chosen = find_segment(project, segment)
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
