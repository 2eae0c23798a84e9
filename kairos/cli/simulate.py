"""``kairos simulate``: what one customer would receive from a journey, over weeks, in seconds."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from temporalio.service import RPCError

from kairos.cli.base import app, console
from kairos.cli.base import fail_text as fail
from kairos.language.problems import ProjectError
from kairos.language.project import load_project
from kairos.runtime.config import ConfigError, load_settings
from kairos.simulation.customers import (
    DEFAULT_START,
    SimulationError,
    load_customer,
    parse_event_spec,
)
from kairos.simulation.engine import DEFAULT_DAYS, simulate, simulate_project
from kairos.simulation.timeline import ProjectTimeline, Timeline, TimelineEntry, format_offset
from kairos.store.database import StoreError

_EPILOG = (
    "Example: [bold]kairos simulate welcome --customer tests/fixtures/simulate/ada.yaml "
    "--event order_placed@+3d[/]  (add --json for CI)\n\n"
    "Every journey at once: [bold]kairos simulate --customer tests/fixtures/simulate/ada.yaml "
    "--event signed_up --event cart_updated@+2d[/]"
)
_STYLES = {
    "event": "cyan",
    "start": "bold",
    "restart": "bold yellow",
    "send": "green",
    "deferred": "yellow",
    "blocked": "red",
    "cap": "red",
    "failed": "bold red",
    "held_out": "dim",
    "wait": "dim",
    "wait_for": "dim",
    "goal": "bold green",
    "exit": "bold",
    "end": "bold",
    "horizon": "bold yellow",
    "not_entered": "bold red",
}
_LOCAL = "%a %d %b %H:%M"


@app.command("simulate", epilog=_EPILOG)
def simulate_command(
    customer: Annotated[
        Path,
        typer.Option(
            "--customer", "-c", help="Customer file (YAML or JSON): profile, consent, events."
        ),
    ],
    journey: Annotated[
        str | None,
        typer.Argument(
            help="Journey name (journeys/<name>.yaml); leave it out to run every journey "
            "together, with their frequency caps and priorities."
        ),
    ] = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event", "-e", help="An event at an offset from the start, e.g. order_placed@+3h."
        ),
    ] = None,
    days: Annotated[int, typer.Option(min=1, help="How many days to simulate.")] = DEFAULT_DAYS,
    start: Annotated[
        str,
        typer.Option(
            help="Start at this time on the customer's clock (HH:MM), 'now', "
            "or a local date-time to come (2030-03-04T09:00)."
        ),
    ] = DEFAULT_START,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    bodies: Annotated[
        bool, typer.Option("--bodies", help="Also print the text of every message sent.")
    ] = False,
    call_webhooks: Annotated[
        bool,
        typer.Option("--call-webhooks", help="Let webhook actions call their URLs for real."),
    ] = False,
) -> None:
    """Show what one customer would receive from a journey, weeks of it in seconds.

    The real journey, policy and templates run on a private PostgreSQL and
    a private time-skipping Temporal; nothing is sent. The customer gets the
    profile and the consent the customer file gives (consent is opt-in).
    Without a journey name, every journey runs: the events start whichever
    journeys they trigger, and frequency caps and priorities apply between
    them, as before launching a second campaign you would want to see.
    Every message is shown at its simulated send time in the customer's
    timezone, with each wait, branch, deferral, frequency cap, block and why,
    restart and exit. Dates in the customer file may be relative to the
    simulated clock: now, now-60d, now+2h.
    """
    try:
        settings = load_settings()
        project = load_project(
            settings.home, actions=settings.actions, cache=settings.project_cache
        )
        person = load_customer(customer)
        scheduled = tuple(parse_event_spec(spec) for spec in event or [])
    except ConfigError as err:
        raise fail(str(err), code=2) from None
    except ProjectError as err:
        raise fail(f"the journeys do not compile:\n{err}") from None
    except SimulationError as err:
        raise fail(str(err)) from None
    # The timeline is the output: keep the SDK's warnings (activity retries, ...) out of it.
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    timeline: Timeline | ProjectTimeline
    try:
        if journey is None:
            timeline = asyncio.run(
                simulate_project(project, settings, person, events=scheduled, days=days,
                                 start=start, call_webhooks=call_webhooks)
            )  # fmt: skip
        else:
            timeline = asyncio.run(
                simulate(project, settings, journey, person, events=scheduled, days=days,
                         start=start, call_webhooks=call_webhooks)
            )  # fmt: skip
    except (SimulationError, StoreError) as err:
        raise fail(str(err)) from None
    except RPCError as err:
        # The private Temporal server failed under the simulation (it ran out of memory, or
        # was killed): nothing the customer file can fix, so say so in one line.
        failed = f"the simulation's private Temporal server failed: {err}; run it again"
        raise fail(failed) from None
    if as_json:
        typer.echo(json.dumps(timeline.to_json(), indent=2, ensure_ascii=False))
    elif isinstance(timeline, ProjectTimeline):
        print_project(timeline, bodies=bodies)
    else:
        print_timeline(timeline, bodies=bodies)


def print_timeline(timeline: Timeline, *, bodies: bool = False) -> None:
    """The timeline as a table, a one-line summary and (with ``bodies``) each message's text."""
    start = timeline.local(timeline.start)
    console.print(
        f"[bold]{escape(timeline.journey)}[/] v{timeline.version} for customer "
        f"[bold]{escape(timeline.customer_id)}[/] ({escape(timeline.timezone)}), "
        f"simulated from {start.strftime(_LOCAL)} {start.tzname()} "
        f"to {format_offset(int((timeline.horizon - timeline.start).total_seconds()))}",
        highlight=False,
    )
    table = Table("after", "local time", "step", "what", "message", header_style="bold")
    for entry in timeline.entries:
        table.add_row(*_row(timeline, entry), style=_STYLES.get(entry.kind))
    console.print(table)
    console.print(_summary(timeline), highlight=False)
    if bodies:
        _print_bodies(timeline)


def print_project(project: ProjectTimeline, *, bodies: bool = False) -> None:
    """Every journey's timeline in one table (a journey column), then a summary per journey."""
    start = project.journeys[0].local(project.start)
    console.print(
        f"every journey for customer [bold]{escape(project.customer_id)}[/] "
        f"({escape(project.timezone)}), simulated from {start.strftime(_LOCAL)} "
        f"{start.tzname()} to "
        f"{format_offset(int((project.horizon - project.start).total_seconds()))}",
        highlight=False,
    )
    table = Table("after", "local time", "journey", "step", "what", "message", header_style="bold")
    first = project.journeys[0]
    rows = [(e.offset_seconds, 0, first, e) for e in first.entries if e.kind == "event"]
    for number, timeline in enumerate(project.entered, start=1):
        rows += [(e.offset_seconds, number, timeline, e) for e in timeline.entries
                 if e.kind != "event"]  # fmt: skip
    for _, _, timeline, entry in sorted(rows, key=lambda r: r[:2]):
        after, local, step, what, message = _row(timeline, entry)
        journey = "" if entry.kind == "event" else escape(timeline.journey)
        table.add_row(after, local, journey, step, what, message, style=_STYLES.get(entry.kind))
    console.print(table)
    for timeline in project.entered:
        console.print(f"[bold]{escape(timeline.journey)}[/]: {_summary(timeline)}", highlight=False)
    others = [t.journey for t in project.journeys if not t.runs]
    if not project.entered:
        console.print(
            "no journey started: give the events that start them (--event signed_up), or "
            "the profile dates that date-triggered journeys wait for",
            highlight=False,
        )
    if others:
        console.print(f"not entered: {escape(', '.join(others))}", highlight=False)
    if bodies:
        for timeline in project.entered:
            _print_bodies(timeline)


def _row(timeline: Timeline, entry: TimelineEntry) -> tuple[str, str, str, str, str]:
    message = ""
    if entry.message is not None:
        message = entry.message.subject or entry.message.text
    return (
        format_offset(entry.offset_seconds),
        timeline.local(entry.at).strftime(_LOCAL),
        escape(entry.step),
        escape(entry.what),
        escape(message),
    )


def _summary(timeline: Timeline) -> str:
    counts: dict[str, int] = {}
    for entry in timeline.entries:
        counts[entry.kind] = counts.get(entry.kind, 0) + 1
    blocked = counts.get("blocked", 0) + counts.get("cap", 0)
    outcome = timeline.outcome or "still running"
    converted = "yes" if timeline.converted else "no"
    runs = f"runs: {timeline.runs}  " if timeline.runs > 1 else ""
    return (
        f"outcome: [bold]{escape(outcome)}[/]  converted: {converted}  {runs}"
        f"messages: {counts.get('send', 0)} sent, {blocked} blocked, "
        f"{counts.get('deferred', 0)} deferred, {counts.get('failed', 0)} failed, "
        f"{counts.get('held_out', 0)} held out  stage: {escape(timeline.stage or '-')}"
    )


def _print_bodies(timeline: Timeline) -> None:
    for entry in timeline.entries:
        message = entry.message
        if message is None:
            continue
        title = f"{format_offset(entry.offset_seconds)} {message.channel.value} {entry.step}"
        head = f"Subject: {message.subject}\n\n" if message.subject else ""
        console.print(Panel(escape(head + message.text.strip()), title=escape(title)))
