"""The report's figures: per journey (entries, steps, variants, cohorts, revenue), the lifecycle,
and how they are written out for BI tools (``--json``, ``--csv``).

What the figures mean is said in :mod:`kairos.reporting.report`; how they are counted, in
:mod:`kairos.reporting.queries`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from kairos.language.plan import Stage
from kairos.reporting.experiments import Comparison, Group, compare

CONVERTED = "converted"
HOLDOUT = "holdout"
NO_STAGE = "(none)"
UNKNOWN_LOCALE = "(unknown)"
END = "(end)"
MESSAGE_COUNTS = (
    "sent", "delivered", "opened", "clicked", "blocked", "failed", "deferred", "held_out",
)  # fmt: skip
# SendGrid's feedback (kairos serve's event webhook), counted once per message.


# --- the numbers ---------------------------------------------------------------------------------


@dataclass
class StepStats:
    """How entries fared at one step."""

    step: str
    kind: str
    reached: int = 0
    active: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    exits: Counter[str] = field(default_factory=Counter)
    named: bool = True  # the journey file names it (``id:``), or nobody can tell

    @property
    def shown(self) -> bool:
        """Whether a marketer's table lists it: a step they named, or a generated one where
        something happened (a message, someone waiting, someone leaving)."""
        return self.named or bool(self.messages or self.active or self.exits)


@dataclass
class VariantStats:
    """One variant (or the holdout) of one split step."""

    split: str
    variant: str
    customers: int = 0
    ended: int = 0
    converted: int = 0

    @property
    def rate(self) -> float | None:
        """Converted of the ended entries: one still in the journey has not had its chance."""
        return self.converted / self.ended if self.ended else None

    @property
    def group(self) -> Group:
        return Group(self.ended, self.converted)


@dataclass
class Cohort:
    """Entries that began in one ISO week (Monday 00:00 UTC), messaged or not."""

    week: date
    entered: int = 0
    active: int = 0
    treated: Group = field(default_factory=lambda: Group(0, 0))

    @property
    def label(self) -> str:
        year, week, _ = self.week.isocalendar()
        return f"{year}-W{week:02d}"


@dataclass
class JourneyReport:
    """Everything the report says about one journey."""

    journey: str
    stage: Stage | None = None  # the lifecycle stage the journey says it serves
    window: int | None = None  # its conversion window in seconds; None: while the run lasts
    entered: int = 0
    active: int = 0
    converted: int = 0  # within the conversion window
    late: int = 0  # reached the goal after the window: not a conversion
    restarts: int = 0
    unrecorded: int = 0  # ended entries whose runs left no step records (before migration 3)
    outcomes: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    steps: list[StepStats] = field(default_factory=list)
    variants: list[VariantStats] = field(default_factory=list)
    # Ended entries outside and inside the holdout, and their conversions.
    treated: Group = field(default_factory=lambda: Group(0, 0))
    holdout: Group | None = None  # None: the journey has no holdout
    # Entry to goal, of the converted entries the journey messaged: share -> time.
    to_convert: dict[float, timedelta] = field(default_factory=dict)
    cohorts: list[Cohort] = field(default_factory=list)
    # What the goal events were worth, by currency: of the messaged entries, of the holdout's.
    revenue: dict[str, Decimal] = field(default_factory=dict)
    holdout_revenue: dict[str, Decimal] = field(default_factory=dict)
    # Ended messaged entries by the customer's locale; messages by channel and status.
    by_locale: dict[str, Group] = field(default_factory=dict)
    by_channel: dict[str, Counter[str]] = field(default_factory=dict)
    # Running in Temporal now (None: Temporal could not be asked).
    running: int | None = None

    def time_to_convert(self, share: float) -> timedelta | None:
        """The time within which ``share`` of converted entries converted (0.5: the median)."""
        return self.to_convert.get(share)

    @property
    def rate(self) -> float | None:
        """The journey's conversion rate: converted of the ended entries it messaged (the
        holdout, which it did not message, is compared with it, not mixed in)."""
        return self.treated.rate

    @property
    def versus_holdout(self) -> Comparison | None:
        """The headline of a journey with a holdout: how it does against doing nothing."""
        return compare(self.treated, self.holdout) if self.holdout is not None else None

    @property
    def stale(self) -> int:
        """Entries the store thinks running that Temporal does not run (terminated from its
        UI, or lost): 0 when Temporal could not be asked."""
        return max(0, self.active - self.running) if self.running is not None else 0


def per_entry(revenue: Mapping[str, Decimal], group: Group) -> dict[str, Decimal]:
    """Revenue per ended entry, by currency: comparable between a journey and its holdout."""
    if not group.ended:
        return {}
    return {currency: amount / group.ended for currency, amount in revenue.items()}


def versus(variant: VariantStats, holdout: VariantStats | None) -> Comparison | None:
    """``variant`` against its split's holdout; None for the holdout itself or without one."""
    if holdout is None or variant is holdout:
        return None
    return compare(variant.group, holdout.group)


# --- the lifecycle -------------------------------------------------------------------------------


@dataclass
class StageNow:
    """Customers in one stage now, and how long they have been there."""

    stage: str
    customers: int = 0
    median_in_stage: timedelta | None = None
    stalled: int = 0  # in it longer than the report's window: they are not moving


@dataclass
class StageMove:
    """Customers a stage change moved from one stage to another in the window."""

    from_stage: str  # "" for a customer's first stage
    to_stage: str
    journey: str  # "" when no journey made it
    customers: int


# --- the whole report ----------------------------------------------------------------------------


@dataclass
class Report:
    """Journeys (with their steps and variants) and the lifecycle, for one window."""

    generated: datetime
    since: datetime | None
    task_queue: str
    journeys: list[JourneyReport]
    stages: dict[str, int]
    stages_now: list[StageNow] = field(default_factory=list)
    moves: list[StageMove] = field(default_factory=list)
    # Why Temporal could not say where running entries are (None: it did).
    temporal_error: str | None = None
    # Why the steps' counts of running entries are partial (None: they are not).
    here_now_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``kairos report --json``)."""
        return {
            "generated": self.generated.isoformat(timespec="seconds"),
            "since": self.since.isoformat(timespec="seconds") if self.since else None,
            "task_queue": self.task_queue,
            "temporal_error": self.temporal_error,
            "here_now_note": self.here_now_note,
            "journeys": [_journey_json(j) for j in self.journeys],
            "stages": self.stages,
            "lifecycle": {
                "now": [
                    {
                        "stage": s.stage,
                        "customers": s.customers,
                        "median_seconds_in_stage": _seconds(s.median_in_stage),
                        "stalled": s.stalled,
                    }
                    for s in self.stages_now
                ],
                "moves": [
                    {
                        "from": m.from_stage or None,
                        "to": m.to_stage,
                        "journey": m.journey or None,
                        "customers": m.customers,
                    }
                    for m in self.moves
                ],
            },
        }


def in_lifecycle_order(journeys: Iterable[JourneyReport]) -> list[JourneyReport]:
    """By the stage each journey declares it serves (awareness first), then by name; a
    journey without a stage last."""
    order = list(Stage)
    return sorted(
        journeys, key=lambda j: (order.index(j.stage) if j.stage else len(order), j.journey)
    )


# What names an item of a list in the CSV rows (a step by its id, a cohort by its week, ...).
_ITEM_KEYS = ("step", "week", "stage")


def csv_rows(report: Report) -> list[tuple[str, str, str]]:
    """Every figure of the JSON report as (journey, figure, value) rows: ``journey`` is empty
    for the lifecycle's figures, ``figure`` is a dotted path (``steps.first_reminder.reached``,
    ``variants.offer_split.a.conversion_rate``)."""
    data = report.to_json()
    rows: list[tuple[str, str, str]] = []

    def walk(journey: str, path: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(journey, f"{path}.{key}" if path else str(key), inner)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(journey, f"{path}.{_item_name(item, index)}", item)
        elif value is not None:
            rows.append(
                (journey, path, str(value).lower() if isinstance(value, bool) else str(value))
            )

    for journey in data["journeys"]:
        name = journey["journey"]
        walk(name, "", {k: v for k, v in journey.items() if k != "journey"})
    walk("", "stages", data["stages"])
    walk("", "lifecycle", data["lifecycle"])
    return rows


def _item_name(item: Any, index: int) -> str:
    if isinstance(item, dict):
        if "split" in item and "variant" in item:
            return f"{item['split']}.{item['variant']}"
        if "from" in item and "to" in item:
            return f"{item['from'] or '(new)'}>{item['to']}>{item['journey'] or '-'}"
        for key in _ITEM_KEYS:
            if key in item:
                return str(item[key])
    return str(index)


def _journey_json(report: JourneyReport) -> dict[str, Any]:
    holdouts = {v.split: v for v in report.variants if v.variant == HOLDOUT}
    return {
        "journey": report.journey,
        "stage": report.stage.value if report.stage else None,
        "entered": report.entered,
        "active": report.active,
        "running": report.running,
        "stale": report.stale,
        "converted": report.converted,
        "late": report.late,
        "conversion_window_seconds": report.window,
        "conversion_rate": report.rate,
        "messaged": _group_json(report.treated),
        "holdout": _group_json(report.holdout) if report.holdout else None,
        "versus_holdout": _comparison_json(report.versus_holdout),
        "revenue": {c: str(a) for c, a in report.revenue.items()},
        "by_locale": {locale: _group_json(g) for locale, g in report.by_locale.items()},
        "by_channel": {channel: dict(c) for channel, c in report.by_channel.items()},
        "revenue_per_ended_entry": {
            "messaged": _money_json(per_entry(report.revenue, report.treated)),
            "holdout": _money_json(per_entry(report.holdout_revenue, report.holdout))
            if report.holdout
            else None,
        },
        "time_to_convert_seconds": {
            "median": _seconds(report.time_to_convert(0.5)),
            "p90": _seconds(report.time_to_convert(0.9)),
        },
        "cohorts": [
            {
                "week": c.label,
                "entered": c.entered,
                "active": c.active,
                "messaged": _group_json(c.treated),
            }
            for c in report.cohorts
        ],
        "restarts": report.restarts,
        "unrecorded": report.unrecorded,
        "outcomes": dict(report.outcomes),
        "messages": {s: report.messages[s] for s in MESSAGE_COUNTS},
        "steps": [
            {
                "step": s.step,
                "kind": s.kind,
                "named": s.named,
                "reached": s.reached,
                "active": s.active,
                "messages": {k: s.messages[k] for k in MESSAGE_COUNTS if s.messages[k]},
                "exits": dict(s.exits),
            }
            for s in report.steps
        ],
        "variants": [
            {
                "split": v.split,
                "variant": v.variant,
                "customers": v.customers,
                "ended": v.ended,
                "converted": v.converted,
                "conversion_rate": v.rate,
                "versus_holdout": _comparison_json(versus(v, holdouts.get(v.split))),
            }
            for v in report.variants
        ],
    }


def _money_json(amounts: Mapping[str, Decimal]) -> dict[str, str]:
    return {currency: str(round(amount, 2)) for currency, amount in amounts.items()}


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _group_json(group: Group) -> dict[str, Any]:
    return {"ended": group.ended, "converted": group.converted, "conversion_rate": group.rate}


def _comparison_json(comparison: Comparison | None) -> dict[str, Any] | None:
    if comparison is None:
        return None
    return {
        "difference": comparison.difference,
        "interval_95": [comparison.low, comparison.high] if comparison.low is not None else None,
        "p_value": comparison.p_value,
        "verdict": comparison.verdict,
        "more_needed_per_group": comparison.more_needed,
        "says": comparison.says,
    }
