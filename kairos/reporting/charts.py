"""The report's charts, drawn by plotly in the page itself.

plotly.js ships inside the plotly wheel and is written into the page once (about 4.6 MB), so
the HTML file is self-contained: it opens offline and fetches nothing. Every chart uses the same
colours for the same things: an outcome, a lifecycle stage, a split variant (the holdout is
always grey), so a marketer learns them once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from html import escape

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from kairos.language.plan import Stage
from kairos.reporting.experiments import wilson
from kairos.reporting.report import HOLDOUT, NO_STAGE, JourneyReport, Report, StageMove
from kairos.store.broadcasts import Reach

# One colour per outcome in every journey's chart: green is always converted, red always
# cancelled. An exit step's own outcome (``lapsed``, ``not_eligible``...) takes a colour from
# the rest by its name, so it too is the same wherever it appears.
OUTCOME_COLOURS = {
    "active": "#3d6fd9", "converted": "#2e9d5b", "completed": "#9aa3b2",
    "restarted": "#4bacc6", "cancelled": "#c0504d", "terminated": "#7f2a28",
    "failed": "#7f2a28", "timed_out": "#7f2a28",
}  # fmt: skip
OTHER_COLOURS = ("#e0a030", "#8064a2", "#b8860b", "#d2691e", "#6b8e23", "#9370db")
# The lifecycle, from first contact to loyalty, in one ramp; lapsed and no stage in greys.
STAGE_COLOURS = {
    Stage.awareness.value: "#9ecae1", Stage.consideration.value: "#6baed6",
    Stage.purchase.value: "#3182bd", Stage.retention.value: "#2e9d5b",
    Stage.advocacy.value: "#7b4fa0", Stage.lapsed.value: "#c0504d", NO_STAGE: "#c7ccd6",
}  # fmt: skip
HOLDOUT_COLOUR = "#9aa3b2"
_CONFIG = {"displaylogo": False, "responsive": True}
_LAYOUT = {
    "template": "plotly_white",
    "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13},
    "margin": {"l": 40, "r": 20, "t": 60, "b": 40},
    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
}


def _pick(name: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    return OTHER_COLOURS[digest[0] % len(OTHER_COLOURS)]


def outcome_colour(outcome: str) -> str:
    """The chart colour of ``outcome``, the same in every journey and every report."""
    return OUTCOME_COLOURS.get(outcome) or _pick(outcome)


def stage_colour(stage: str) -> str:
    return STAGE_COLOURS.get(stage) or _pick(stage)


def variant_colour(variant: str) -> str:
    return HOLDOUT_COLOUR if variant == HOLDOUT else _pick(f"variant {variant}")


def script() -> str:
    """plotly.js, once per page, inline."""
    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


def _html(figure: go.Figure, name: str, height: int) -> str:
    figure.update_layout(**_LAYOUT, height=height)
    body = figure.to_html(
        full_html=False, include_plotlyjs=False, config=_CONFIG, div_id=f"chart-{name}"
    )
    return f'<div class="chart" data-chart="{name}">{body}</div>'


def journeys_chart(journeys: Sequence[JourneyReport]) -> str:
    """Each journey's conversion rate beside its holdout's: the lift, at a glance."""
    shown = [j for j in journeys if j.treated.ended or (j.holdout and j.holdout.ended)]
    names = [j.journey for j in shown]
    figure = go.Figure()
    figure.add_bar(
        name="messaged", y=names, x=[j.treated.rate or 0 for j in shown], orientation="h",
        marker_color=outcome_colour("converted"),
        text=[f"{j.treated.converted}/{j.treated.ended}" for j in shown],
    )  # fmt: skip
    figure.add_bar(
        name="holdout", y=names, orientation="h", marker_color=HOLDOUT_COLOUR,
        x=[j.holdout.rate or 0 if j.holdout else None for j in shown],
        text=[f"{j.holdout.converted}/{j.holdout.ended}" if j.holdout else "" for j in shown],
    )  # fmt: skip
    figure.update_layout(
        title="Conversion rate of ended entries: messaged against holdout",
        barmode="group", xaxis_tickformat=".0%", yaxis_autorange="reversed",
    )  # fmt: skip
    return _html(figure, "journeys", 120 + 60 * max(1, len(shown)))


def lifecycle_chart(report: Report) -> str:
    """Customers per stage now (the stalled ones apart), and the moves between stages."""
    order = [s.stage for s in report.stages_now]
    figure = go.Figure()
    moving = [s.customers - s.stalled for s in report.stages_now]
    figure.add_bar(
        name="moved within the window", x=order, y=moving,
        marker_color=[stage_colour(s) for s in order],
    )  # fmt: skip
    figure.add_bar(
        name="stalled (no change in the window)", x=order,
        y=[s.stalled for s in report.stages_now], marker_color=[stage_colour(s) for s in order],
        marker_pattern_shape="/", marker_opacity=0.55,
    )  # fmt: skip
    figure.update_layout(title="Customers by lifecycle stage, now", barmode="stack")
    parts = [_html(figure, "stages", 340)]
    if report.moves:
        parts.append(_html(_flow(report.moves), "flow", 360))
    return "".join(parts)


def _flow(moves: Sequence[StageMove]) -> go.Figure:
    """A Sankey of the window's stage changes: from (left) to (right), by journey (hover)."""
    sources = sorted({m.from_stage or "(new)" for m in moves})
    targets = sorted({m.to_stage for m in moves})
    labels = [f"{s} " for s in sources] + targets
    node = {"label": labels, "color": [stage_colour(s.strip()) for s in labels], "pad": 18}
    link = {
        "source": [sources.index(m.from_stage or "(new)") for m in moves],
        "target": [len(sources) + targets.index(m.to_stage) for m in moves],
        "value": [m.customers for m in moves],
        "label": [m.journey or "(no journey)" for m in moves],
        "color": [stage_colour(m.to_stage) + "80" for m in moves],
    }
    figure = go.Figure(go.Sankey(node=node, link=link))
    figure.update_layout(title="Stage changes in the window (hover: the journey that made them)")
    return figure


def journey_charts(journey: JourneyReport) -> str:
    """Where a journey's entries are, its steps, its weekly cohorts, its split variants."""
    name = journey.journey
    parts = [_html(_outcomes(journey), f"{name}-outcomes", 170)]
    shown = [s for s in journey.steps if s.shown and s.reached]
    if shown:
        steps = go.Figure()
        steps.add_bar(
            x=[s.reached for s in shown], y=[s.step for s in shown], orientation="h",
            marker_color=outcome_colour("active"), name="reached",
        )  # fmt: skip
        steps.update_layout(title="Entries that reached each step", yaxis_autorange="reversed")
        parts.append(_html(steps, f"{name}-steps", 100 + 28 * len(shown)))
    if journey.cohorts:
        parts.append(_html(_cohorts(journey), f"{name}-cohorts", 320))
    if journey.variants:
        parts.append(_html(_variants(journey), f"{name}-variants", 320))
    return "".join(parts)


def _outcomes(journey: JourneyReport) -> go.Figure:
    figure = go.Figure()
    for outcome, count in [("active", journey.active), *journey.outcomes.most_common()]:
        if count:
            figure.add_bar(
                name=outcome, x=[count], y=["entries"], orientation="h",
                marker_color=outcome_colour(outcome), text=[count],
            )  # fmt: skip
    figure.update_layout(title="Where entries are", barmode="stack", showlegend=True)
    return figure


def _cohorts(journey: JourneyReport) -> go.Figure:
    weeks = [c.label for c in journey.cohorts]
    figure = go.Figure()
    figure.add_bar(
        name="entered", x=weeks, y=[c.entered for c in journey.cohorts],
        marker_color=outcome_colour("active"),
    )  # fmt: skip
    figure.add_scatter(
        name="conversion rate (ended, messaged)", x=weeks, yaxis="y2", mode="lines+markers",
        y=[c.treated.rate for c in journey.cohorts], line_color=outcome_colour("converted"),
    )  # fmt: skip
    figure.update_layout(
        title="Entries by the week they began",
        yaxis2={"overlaying": "y", "side": "right", "tickformat": ".0%", "rangemode": "tozero"},
    )
    return figure


def _variants(journey: JourneyReport) -> go.Figure:
    """Each variant's rate with its 95% (Wilson) interval; the holdout grey."""
    labels = [f"{v.split}: {v.variant}" for v in journey.variants]
    rates = [v.rate or 0.0 for v in journey.variants]
    bounds = [wilson(v.group) if v.ended else (0.0, 0.0) for v in journey.variants]
    above = [max(0.0, high - rate) for rate, (_, high) in zip(rates, bounds, strict=True)]
    below = [max(0.0, rate - low) for rate, (low, _) in zip(rates, bounds, strict=True)]
    figure = go.Figure()
    figure.add_bar(
        x=labels, y=rates, marker_color=[variant_colour(v.variant) for v in journey.variants],
        error_y={
            "type": "data", "symmetric": False,
            "array": above, "arrayminus": below,
        },
        text=[f"{v.converted}/{v.ended}" for v in journey.variants], name="conversion rate",
    )  # fmt: skip
    figure.update_layout(
        title="Split variants: conversion rate with its 95% interval", yaxis_tickformat=".0%"
    )
    return figure


def broadcasts_section(found: Sequence[Reach]) -> str:
    """Broadcast reach: each broadcast's members targeted, entered, messages sent, blocked
    (by reason) and runs converted, as a chart over a table (nothing when there are none)."""
    if not found:
        return ""
    names = [r.broadcast for r in found]
    figure = go.Figure()
    for label, values, colour in (
        ("targeted", [r.targeted for r in found], HOLDOUT_COLOUR),
        ("entered", [r.entered for r in found], outcome_colour("active")),
        ("sent", [r.sent for r in found], outcome_colour("restarted")),
        ("blocked", [sum(r.blocked.values()) for r in found], outcome_colour("cancelled")),
        ("converted", [r.converted for r in found], outcome_colour("converted")),
    ):
        figure.add_bar(name=label, y=names, x=values, orientation="h", marker_color=colour)
    figure.update_layout(title="Broadcast reach", barmode="group", yaxis_autorange="reversed")
    rows = "".join(_reach_row(r) for r in found)
    head = "".join(
        f"<th>{h}</th>"
        for h in ("broadcast", "segment", "began", "targeted", "entered", "sent", "blocked",
                  "converted")
    )  # fmt: skip
    return (
        '<section data-section="broadcasts"><h2>Broadcasts</h2>'
        + _html(figure, "broadcasts", 120 + 90 * len(found))
        + f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _reach_row(r: Reach) -> str:
    blocked = ", ".join(f"{n} {reason}" for reason, n in r.blocked.items()) or "0"
    began = r.created_at.strftime("%Y-%m-%d %H:%M UTC")
    cells = (r.broadcast, r.segment, began, r.targeted, r.entered, r.sent, blocked, r.converted)
    return "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in cells) + "</tr>"
