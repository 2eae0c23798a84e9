"""``kairos report``: which journeys convert, where customers drop off, which variant wins.

Why over 600 lines: one command's renderings of one report (terminal tables, JSON and CSV, the
HTML page), each short; the report itself is :mod:`kairos.reporting.report`. The HTML page is the
seam to cut along if it grows.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from temporalio.client import Client

from kairos.cli.base import app, console, err_console, fail
from kairos.cli.broadcast import print_reach, reach_json
from kairos.language.durations import format_duration
from kairos.language.plan import JourneyPlan
from kairos.language.problems import ProjectError
from kairos.language.project import load_project
from kairos.reporting.charts import (
    broadcasts_section,
    journey_charts,
    journeys_chart,
    lifecycle_chart,
    script,
)
from kairos.reporting.experiments import Comparison
from kairos.reporting.report import (
    DEFAULT_SINCE,
    HOLDOUT,
    MESSAGE_COUNTS,
    JourneyReport,
    Report,
    ReportError,
    StepStats,
    VariantStats,
    build_report,
    csv_rows,
    parse_since,
    per_entry,
    versus,
)
from kairos.runtime.config import ConfigError, Settings, load_settings
from kairos.runtime.crypto import MasterKeys
from kairos.runtime.temporal import connect
from kairos.store.broadcasts import Reach, reach
from kairos.store.database import Database, StoreError
from kairos.store.facade import database_url
from kairos.store.keys import DatabaseKeys
from kairos.store.runs import runs_of

_EPILOG = "Example: [bold]kairos report cart_abandonment --since 7d --html report.html[/]"


@app.command("report", epilog=_EPILOG)
def report_command(
    journey: Annotated[
        str | None, typer.Argument(help="Only this journey (default: every journey).")
    ] = None,
    since: Annotated[
        str,
        typer.Option(
            help="Entries that started in this window: 7d, 12h, 2026-01-31 or all. Whole days "
            "are read from counters kept at write time, the first day's rest entry by entry; "
            "a conversion window that is not whole minutes up to 1h, hours up to 3d or days up "
            "to 365d is counted entry by entry over the whole window (slower)."
        ),
    ] = DEFAULT_SINCE,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML page here.")
    ] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write every figure as CSV rows here, for BI tools."),
    ] = None,
) -> None:
    """Lifecycle analysis: journeys, their steps, split variants, stages.

    Per journey: entered, active, each outcome, converted (goal reached) and
    the conversion rate of the ended entries it messaged; with a holdout, the
    difference from the holdout with its 95% interval and a verdict in words.
    Per step: reached, waiting there now, messages sent, blocked, failed,
    deferred and held out, and where entries ended. Split variants each
    against the holdout, and how many customers are in each lifecycle stage
    now and how they moved between stages; per broadcast: targeted, entered,
    sent, blocked by reason, converted. Counted with SQL in the customer
    store; Temporal's visibility is asked how many entries are running and at
    which step (the report says so when it cannot tell).
    """
    settings, plans = _load()
    try:
        window = parse_since(since, datetime.now(UTC))
    except ReportError as err:
        raise fail(str(err), code=2) from None
    report, broadcasts = asyncio.run(_build(settings, plans, journey, window))
    if html_file is not None:
        html_file.write_text(render_html(report, broadcasts), encoding="utf-8")
    if csv_file is not None:
        csv_file.write_text(render_csv(report), encoding="utf-8")
    if as_json:
        body = {**report.to_json(), "broadcasts": reach_json(broadcasts)}
        typer.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    print_report(report)
    print_reach(broadcasts)
    for written in (html_file, csv_file):
        if written is not None:
            console.print(f"[green]wrote[/] {escape(str(written))}")


def _load() -> tuple[Settings, dict[str, JourneyPlan]]:
    try:
        settings = load_settings()
    except ConfigError as err:
        raise fail(str(err), code=2) from None
    try:
        plans = load_project(
            settings.home, actions=settings.actions, cache=settings.project_cache
        ).plans
    except ProjectError:
        # Runs still report without their plans; steps then appear in the order first seen.
        err_console.print("note: the journeys do not compile; steps are shown as recorded")
        plans = {}
    return settings, plans


async def _build(
    settings: Settings,
    plans: dict[str, JourneyPlan],
    journey: str | None,
    since: datetime | None,
) -> tuple[Report, list[Reach]]:
    """The report and the reach of its broadcasts, from one connection to the store."""
    try:
        database = await Database.open(await database_url(settings))
    except StoreError as err:
        raise fail(str(err)) from None
    async with database:
        if journey is not None and journey not in plans:
            await _check_journey(database, plans, journey)
        client: Client | None
        try:
            master = MasterKeys(settings.master_key, settings.master_key_previous)
            client = await connect(settings, DatabaseKeys(database, master))
        except RuntimeError:
            client = None  # the report says Temporal could not tell where runs are now
        try:
            built = await build_report(
                database, client, settings.task_queue, plans, journey=journey, since=since
            )
            return built, await reach(database, journey, since)
        except StoreError as err:
            raise fail(str(err)) from None


async def _check_journey(database: Database, plans: dict[str, JourneyPlan], journey: str) -> None:
    """A journey the project no longer has still reports its runs; a name nothing knows is a
    mistake (a typo, most likely)."""
    if await runs_of(database, journey=journey, limit=1):
        err_console.print(
            f"note: {escape(journey)} is not among the compiled journeys; reporting its runs",
            highlight=False,
        )
        return
    known = f" (journeys: {', '.join(sorted(plans))})" if plans else ""
    raise fail(escape(f"no journey named {journey!r} has runs{known}"))


# --- the terminal ------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _points(comparison: Comparison | None) -> str:
    """``+4.1 pts (-1.2 to +9.0)``: the difference in conversion rate and its 95% interval."""
    if comparison is None or comparison.difference is None:
        return "-"
    low, high = comparison.low or 0.0, comparison.high or 0.0
    return f"{comparison.difference * 100:+.1f} pts ({low * 100:+.1f} to {high * 100:+.1f})"


def _roughly(value: timedelta | None) -> str:
    """A time to the goal in its two largest units: ``2d 3h``, ``45m``."""
    if value is None:
        return "-"
    return " ".join(format_duration(int(value.total_seconds())).split()[:2])


def _to_goal(journey: JourneyReport) -> str:
    median, slow = journey.time_to_convert(0.5), journey.time_to_convert(0.9)
    return "-" if median is None else f"{_roughly(median)} / {_roughly(slow)}"


def _money(amounts: Mapping[str, Decimal]) -> str:
    return ", ".join(f"{amount:,.2f} {currency}".strip() for currency, amount in amounts.items())


def _verdict(comparison: Comparison | None) -> str:
    return "" if comparison is None else comparison.says


def _counts(counter: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counter if count) or "-"


def print_report(report: Report) -> None:
    """The report as rich tables: journeys, then each journey's steps and splits, then stages."""
    window = report.since.strftime("%Y-%m-%d %H:%M UTC") if report.since else "the beginning"
    console.print(
        f"[bold]Kairos report[/]: entries since {window}, task queue {escape(report.task_queue)}",
        highlight=False,
    )
    if report.temporal_error:
        console.print(
            f"[yellow]{escape(report.temporal_error)}: where running entries are now is not "
            "shown; everything else is from the store[/]"
        )
    if report.here_now_note:
        console.print(f"[yellow]{escape(report.here_now_note)}[/]")
    console.print(_journeys_table(report.journeys))
    if any(j.holdout is not None for j in report.journeys):
        console.print(_holdouts_table(report.journeys))
    for journey in report.journeys:
        if journey.entered:
            console.print(_cohorts_table(journey))
            console.print(_breakdown_table(journey))
            console.print(_steps_table(journey))
            if journey.variants:
                console.print(_variants_table(journey))
        if journey.unrecorded:
            console.print(
                f"[yellow]{journey.unrecorded} {escape(journey.journey)} entries ended without "
                "step records (before schema version 3, or terminated in the Temporal UI); "
                "their steps are not counted[/]"
            )
        if journey.stale:
            console.print(
                f"[yellow]{journey.stale} {escape(journey.journey)} entries are open in the store "
                "but not running in Temporal (terminated from its UI?)[/]"
            )
    console.print(_stages_table(report))
    if report.moves:
        console.print(_moves_table(report))


def _journeys_table(journeys: list[JourneyReport]) -> Table:
    table = Table(title="journeys", title_justify="left", header_style="bold")
    table.add_column("stage")
    for name in ("journey", "entered", "active", "converted", "late", "rate (ended)", "restarts"):
        table.add_column(name, justify="left" if name == "journey" else "right")
    table.add_column("to goal (median / 90%)", justify="right")
    table.add_column("revenue", justify="right")
    table.add_column("ended (by outcome)")
    table.add_column("messages")
    for j in journeys:
        table.add_row(
            j.stage.value if j.stage else "", escape(j.journey), str(j.entered), str(j.active),
            str(j.converted), str(j.late) if j.window else "-", _percent(j.rate), str(j.restarts),
            _to_goal(j),
            escape(_money(j.revenue) or "-"), escape(_counts(j.outcomes.most_common())),
            _counts((s, j.messages[s]) for s in MESSAGE_COUNTS),
        )  # fmt: skip
    return table


def _breakdown_table(journey: JourneyReport) -> Table:
    """Conversion by locale and messages by channel, side by side: one row per locale or
    channel, so a locale whose copy underperforms stands out."""
    table = Table(
        title=f"{journey.journey}: by locale (messaged entries) and by channel (messages)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("locale")
    table.add_column("converted", justify="right")
    table.add_column("rate (ended)", justify="right")
    table.add_column("channel")
    table.add_column("messages")
    locales = list(journey.by_locale.items())
    channels = list(journey.by_channel.items())
    for index in range(max(len(locales), len(channels))):
        locale = locales[index] if index < len(locales) else None
        channel = channels[index] if index < len(channels) else None
        table.add_row(
            escape(locale[0]) if locale else "",
            f"{locale[1].converted}/{locale[1].ended}" if locale else "",
            _percent(locale[1].rate) if locale else "",
            channel[0] if channel else "",
            _counts((s, channel[1][s]) for s in MESSAGE_COUNTS) if channel else "",
        )
    return table


def _cohorts_table(journey: JourneyReport) -> Table:
    table = Table(
        title=f"{journey.journey}: entries by the week they began (messaged entries' rate)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("week")
    for name in ("entered", "active", "converted", "rate (ended)"):
        table.add_column(name, justify="right")
    for c in journey.cohorts:
        table.add_row(
            c.label, str(c.entered), str(c.active),
            f"{c.treated.converted}/{c.treated.ended}", _percent(c.treated.rate),
        )  # fmt: skip
    return table


def _holdouts_table(journeys: list[JourneyReport]) -> Table:
    table = Table(
        title="against the holdout (ended entries; difference in conversion rate, 95% interval)",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("journey")
    for name in ("messaged", "rate", "holdout", "rate", "difference"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    table.add_column("revenue per entry (messaged / holdout)", justify="right")
    for j in journeys:
        if j.holdout is None:
            continue
        worth = (per_entry(j.revenue, j.treated), per_entry(j.holdout_revenue, j.holdout))
        table.add_row(
            escape(j.journey),
            f"{j.treated.converted}/{j.treated.ended}", _percent(j.treated.rate),
            f"{j.holdout.converted}/{j.holdout.ended}", _percent(j.holdout.rate),
            _points(j.versus_holdout), escape(_verdict(j.versus_holdout)),
            escape(" / ".join(_money(w) or "-" for w in worth)),
        )  # fmt: skip
    return table


def _steps_table(journey: JourneyReport) -> Table:
    table = Table(title=f"{journey.journey}: steps", title_justify="left", header_style="bold")
    table.add_column("step")
    table.add_column("kind")
    for name in ("reached", "here now", *MESSAGE_COUNTS):
        table.add_column(name.replace("_", " "), justify="right")
    table.add_column("ended here")
    shown = [step for step in journey.steps if step.shown]
    for step in shown:
        table.add_row(*_step_cells(step))
    if len(shown) < len(journey.steps):
        table.caption = (
            f"{len(journey.steps) - len(shown)} generated steps where nothing else happened "
            "(branches, sets, gotos) are left out; --json lists every step"
        )
    return table


def _step_cells(step: StepStats) -> list[str]:
    messages = [str(step.messages[s]) if step.messages[s] else "" for s in MESSAGE_COUNTS]
    return [
        escape(step.step),
        step.kind,
        str(step.reached),
        str(step.active) if step.active else "",
        *messages,
        escape(_counts(step.exits.most_common())) if step.exits else "",
    ]


def _variants_table(journey: JourneyReport) -> Table:
    holdouts = {v.split: v for v in journey.variants if v.variant == HOLDOUT}
    table = Table(title=f"{journey.journey}: splits", title_justify="left", header_style="bold")
    table.add_column("split")
    table.add_column("variant")
    for name in ("customers", "ended", "converted", "rate", "vs holdout"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    for v in journey.variants:
        against = versus(v, holdouts.get(v.split))
        table.add_row(
            escape(v.split), escape(v.variant), str(v.customers), str(v.ended),
            str(v.converted), _percent(v.rate), _points(against), escape(_verdict(against)),
        )  # fmt: skip
    return table


def _stages_table(report: Report) -> Table:
    table = Table(title="lifecycle stages (now)", title_justify="left", header_style="bold")
    table.add_column("stage")
    table.add_column("customers", justify="right")
    table.add_column("median time in stage", justify="right")
    table.add_column("stalled", justify="right")
    for stage in report.stages_now:
        table.add_row(
            escape(stage.stage), str(stage.customers), _roughly(stage.median_in_stage),
            str(stage.stalled),
        )  # fmt: skip
    return table


def _moves_table(report: Report) -> Table:
    table = Table(title="stage changes in the window", title_justify="left", header_style="bold")
    for name in ("from", "to", "journey", "customers"):
        table.add_column(name, justify="right" if name == "customers" else "left")
    for move in report.moves:
        table.add_row(
            escape(move.from_stage or "(new)"), escape(move.to_stage),
            escape(move.journey or "-"), str(move.customers),
        )  # fmt: skip
    return table


# --- the HTML page -----------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d2330}
h1{font-size:1.5rem;margin:0 0 .2rem}h2{font-size:1.2rem;margin:2rem 0 .5rem}
h3{font-size:1rem;margin:1.2rem 0 .4rem;color:#444}.muted{color:#666}
table{border-collapse:collapse;margin:.4rem 0 1rem}
th,td{padding:.25rem .6rem;border-bottom:1px solid #e3e6ec;text-align:right;vertical-align:middle}
th{background:#f4f6fa;font-weight:600}td:first-child,th:first-child{text-align:left}
td.l,th.l{text-align:left;white-space:nowrap}.bar{background:#edf0f5;width:220px;height:12px;border-radius:3px}
.bar>span{display:block;height:12px;border-radius:3px;background:#3d6fd9}
.bar>span.good{background:#2e9d5b}.bar>span.hold{background:#9aa3b2}
.stack{display:flex;width:320px;height:14px;border-radius:3px;overflow:hidden;background:#edf0f5}
.stack>span{height:14px}.legend span{display:inline-block;margin-right:1rem}
.warn{color:#8a5300}.chart{max-width:960px}
.sw{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.3rem;
vertical-align:-1px}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _bar(value: float, total: float, css: str = "") -> str:
    width = 0.0 if total <= 0 else max(0.0, min(100.0, 100.0 * value / total))
    klass = f' class="{css}"' if css else ""
    return f'<div class="bar"><span{klass} style="width:{width:.1f}%"></span></div>'


def render_csv(report: Report) -> str:
    """``--csv``: one row per figure (journey, figure, value), with a header."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("journey", "figure", "value"))
    writer.writerows(csv_rows(report))
    return out.getvalue()


def render_html(report: Report, broadcasts: Sequence[Reach] = ()) -> str:
    """One self-contained page: plotly charts (plotly.js inline) over the tables, nothing
    fetched; the reach of ``broadcasts`` last."""
    window = report.since.strftime("%Y-%m-%d %H:%M UTC") if report.since else "the beginning"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Kairos report</title><style>{_CSS}</style>{script()}</head><body>",
        "<h1>Kairos: customer lifecycle report</h1>",
        f'<p class="muted">Entries since {_e(window)} on task queue {_e(report.task_queue)}; '
        f"generated {_e(report.generated.strftime('%Y-%m-%d %H:%M UTC'))}.</p>",
        _html_temporal(report),
        journeys_chart(report.journeys),
        _html_journeys(report.journeys),
        *(_html_journey(j) for j in report.journeys if j.entered),
        _html_lifecycle(report),
        broadcasts_section(broadcasts),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _html_journeys(journeys: list[JourneyReport]) -> str:
    rows = [
        "<h2>Journeys, in lifecycle order</h2><table><tr><th>stage</th><th class=l>journey</th>"
        "<th>entered</th><th>active</th>"
        "<th>converted</th><th>rate (ended)</th><th></th><th>restarts</th>"
        "<th>to goal (median / 90%)</th><th>revenue</th>"
        "<th>vs holdout (95% interval)</th><th class=l>verdict</th></tr>"
    ]
    for j in journeys:
        rows.append(
            f"<tr><td>{_e(j.stage.value if j.stage else '')}</td>"
            f"<td class=l>{_e(j.journey)}</td><td>{j.entered}</td><td>{j.active}</td>"
            f"<td>{j.converted}</td><td>{_percent(j.rate)}</td>"
            f"<td>{_bar(j.treated.converted, j.treated.ended, 'good')}</td><td>{j.restarts}</td>"
            f"<td>{_e(_to_goal(j))}</td><td>{_e(_money(j.revenue) or '-')}</td>"
            f"<td>{_e(_points(j.versus_holdout))}</td>"
            f"<td class=l>{_e(_verdict(j.versus_holdout))}</td></tr>"
        )
    return "".join(rows) + "</table>"


def _html_journey(journey: JourneyReport) -> str:
    return "".join(
        [
            f"<h2>{_e(journey.journey)}</h2>",
            _html_window(journey),
            journey_charts(journey),
            _html_cohorts(journey) if journey.cohorts else "",
            _html_breakdown(journey),
            _html_funnel(journey),
            _html_variants(journey) if journey.variants else "",
        ]
    )


def _html_breakdown(journey: JourneyReport) -> str:
    rows = [
        "<h3>By locale</h3><table><tr><th>locale</th><th>converted</th><th>rate (ended)</th>"
        "<th></th></tr>"
    ]
    rows.extend(
        f"<tr><td>{_e(locale)}</td><td>{g.converted}/{g.ended}</td><td>{_percent(g.rate)}</td>"
        f"<td>{_bar(g.converted, g.ended, 'good')}</td></tr>"
        for locale, g in journey.by_locale.items()
    )
    rows.append("</table><h3>By channel</h3><table><tr><th>channel</th>")
    rows.extend(f"<th>{_e(s.replace('_', ' '))}</th>" for s in MESSAGE_COUNTS)
    rows.append("</tr>")
    rows.extend(
        f"<tr><td>{_e(channel)}</td>"
        + "".join(f"<td>{counts[s] or ''}</td>" for s in MESSAGE_COUNTS)
        + "</tr>"
        for channel, counts in journey.by_channel.items()
    )
    return "".join(rows) + "</table>"


def _html_cohorts(journey: JourneyReport) -> str:
    rows = [
        "<h3>Entries by the week they began</h3><table><tr><th>week</th><th>entered</th>"
        "<th>active</th><th>converted</th><th>rate (ended)</th><th></th></tr>"
    ]
    rows.extend(
        f"<tr><td>{c.label}</td><td>{c.entered}</td><td>{c.active}</td>"
        f"<td>{c.treated.converted}/{c.treated.ended}</td><td>{_percent(c.treated.rate)}</td>"
        f"<td>{_bar(c.treated.converted, c.treated.ended, 'good')}</td></tr>"
        for c in journey.cohorts
    )
    return "".join(rows) + "</table>"


def _html_funnel(journey: JourneyReport) -> str:
    head = "".join(f"<th>{_e(s.replace('_', ' '))}</th>" for s in MESSAGE_COUNTS)
    rows = [
        "<h3>Steps</h3><table><tr><th>step</th><th class=l>kind</th><th>reached</th><th></th>"
        f"<th>here now</th>{head}<th class=l>ended here</th></tr>"
    ]
    for step in (step for step in journey.steps if step.shown):
        cells = "".join(f"<td>{step.messages[s] or ''}</td>" for s in MESSAGE_COUNTS)
        ended = _e(_counts(step.exits.most_common())) if step.exits else ""
        rows.append(
            f"<tr><td>{_e(step.step)}</td><td class=l>{_e(step.kind)}</td><td>{step.reached}</td>"
            f"<td>{_bar(step.reached, journey.entered)}</td><td>{step.active or ''}</td>"
            f"{cells}<td class=l>{ended}</td></tr>"
        )
    return "".join(rows) + "</table>"


def _html_variants(journey: JourneyReport) -> str:
    holdouts = {v.split: v for v in journey.variants if v.variant == HOLDOUT}
    best = max((v.rate or 0.0 for v in journey.variants), default=0.0)
    rows = [
        "<h3>Splits</h3><table><tr><th>split</th><th class=l>variant</th><th>customers</th>"
        "<th>converted</th><th>rate</th><th></th><th>vs holdout (95% interval)</th>"
        "<th class=l>verdict</th></tr>"
    ]
    for v in journey.variants:
        rows.append(_html_variant(v, holdouts.get(v.split), best))
    return "".join(rows) + "</table>"


def _html_variant(variant: VariantStats, holdout: VariantStats | None, best: float) -> str:
    css = "hold" if variant.variant == HOLDOUT else "good"
    against = versus(variant, holdout)
    return (
        f"<tr><td>{_e(variant.split)}</td><td class=l>{_e(variant.variant)}</td>"
        f"<td>{variant.customers}</td><td>{variant.converted}</td>"
        f"<td>{_percent(variant.rate)}</td><td>{_bar(variant.rate or 0.0, best, css)}</td>"
        f"<td>{_e(_points(against))}</td><td class=l>{_e(_verdict(against))}</td></tr>"
    )


def _html_temporal(report: Report) -> str:
    if report.temporal_error is None:
        return f'<p class="warn">{_e(report.here_now_note)}</p>' if report.here_now_note else ""
    return (
        f'<p class="warn">{_e(report.temporal_error)}: where running entries are now is not '
        "shown; everything else is from the store.</p>"
    )


def _html_window(journey: JourneyReport) -> str:
    if journey.window is None:
        return ""
    late = f"; {journey.late} reached it later and are not counted" if journey.late else ""
    return (
        f'<p class="muted">A conversion is the goal within '
        f"{_e(format_duration(journey.window))} of entering{late}.</p>"
    )


def _html_lifecycle(report: Report) -> str:
    rows = [
        "<h2>The lifecycle</h2>",
        lifecycle_chart(report),
        "<table><tr><th>stage</th><th>customers now</th><th>median time in stage</th>"
        "<th>stalled</th></tr>",
    ]
    rows.extend(
        f"<tr><td>{_e(s.stage)}</td><td>{s.customers}</td><td>{_e(_roughly(s.median_in_stage))}"
        f"</td><td>{s.stalled}</td></tr>"
        for s in report.stages_now
    )
    rows.append("</table>")
    if report.moves:
        rows.append(
            "<h3>Stage changes in the window</h3><table><tr><th>from</th><th>to</th>"
            "<th class=l>journey</th><th>customers</th></tr>"
        )
        rows.extend(
            f"<tr><td>{_e(m.from_stage or '(new)')}</td><td>{_e(m.to_stage)}</td>"
            f"<td class=l>{_e(m.journey or '-')}</td><td>{m.customers}</td></tr>"
            for m in report.moves
        )
        rows.append("</table>")
    return "".join(rows)
