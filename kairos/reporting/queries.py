"""How ``kairos report`` counts: a fixed handful of SQL queries over the store's report rollups.

The rollups (migration 10, ``kairos/store/sql/schema.sql``) are kept at write time, in the
transaction that changes a run, its step records, a message or a customer's locale: per
customer and journey the *parts* (each entry as the report counts it, its steps, its messages)
and, summed by journey and the UTC day the entry began, the *day rollups*. A report reads:

* the day rollups for whole days of the window (thousands of rows, however many entries);
* the parts for what the rollups cannot answer exactly: the entries of the window's first,
  partial day (``--since 30d`` begins mid-day), and every entry of the window when a journey's
  conversion window is not a bucket edge of the time to convert (see :func:`on_bucket_edge`);
  that is the exact scan, as slow as the window is long.

Each query is the union of both, grouped alike (a key whose appended differences cancel out is
left out), so the number of queries does not depend on
how many customers, runs, journeys or days there are.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from kairos.language.plan import JourneyPlan, SplitStep, Stage
from kairos.reporting.experiments import Group
from kairos.reporting.model import (
    END,
    HOLDOUT,
    NO_STAGE,
    UNKNOWN_LOCALE,
    Cohort,
    JourneyReport,
    StageMove,
    StageNow,
    StepStats,
    VariantStats,
)
from kairos.store.database import Connection

# SendGrid's feedback (kairos serve's event webhook), counted once per message.
_ENGAGED = (("delivered", "delivered"), ("opened", "opened"), ("clicked", "clicked"))
# The time-to-convert percentiles the report gives.
SHARES = (0.5, 0.9)
# The bucket edges of the time to convert in the rollups (kairos_report_bucket): every whole
# minute up to an hour, whole hour up to three days, whole day up to a year.
_BUCKET_STEPS = ((3600, 60), (3 * 86400, 3600), (365 * 86400, 86400))


def on_bucket_edge(window: int | None) -> bool:
    """Whether the rollups answer a conversion window exactly (no window, 30m, 48h, 7d, 90d;
    not 90s or 400d): "converted within it" is then a sum of whole buckets."""
    if window is None:
        return True
    return any(window <= upto and window % step == 0 for upto, step in _BUCKET_STEPS)


@dataclass(frozen=True)
class Span:
    """Which entries the report reads from where: day rollups for ``day_from`` on, parts for
    entries that began after ``parts_from`` and before ``parts_to`` (bounds as PostgreSQL
    reads them: a timestamp, ``-infinity`` or ``infinity``)."""

    day_from: str
    parts_from: str
    parts_to: str
    exact: bool  # parts give the exact time to convert (the rollups are not read at all)

    @classmethod
    def of(cls, since: datetime | None, windows: Mapping[str, int | None]) -> Span:
        """Rollups where they answer; the exact scan of the parts where they cannot."""
        start = since.isoformat() if since is not None else "-infinity"
        if not all(on_bucket_edge(window) for window in windows.values()):
            return cls("infinity", start, "infinity", exact=True)
        if since is None:
            return cls("-infinity", "-infinity", "-infinity", exact=False)
        first = since.astimezone(UTC).date() + timedelta(days=1)
        edge = datetime.combine(first, time(), UTC)
        return cls(first.isoformat(), start, edge.isoformat(), exact=False)

    def params(self, journey: str | None) -> dict[str, Any]:
        return {
            "journey": journey,
            "day_from": self.day_from,
            "parts_from": self.parts_from,
            "parts_to": self.parts_to,
            "exact": self.exact,
        }


_JOURNEY = "(%(journey)s::text IS NULL OR journey = %(journey)s)"
_DAYS = f"day >= %(day_from)s::date AND {_JOURNEY}"
_PARTS = (
    "entered_at > %(parts_from)s::timestamptz AND entered_at < %(parts_to)s::timestamptz"
    f" AND {_JOURNEY}"
)
# The time to convert as the rows give it: a bucket edge, or exact from the parts.
_TO_CONVERT = (
    "CASE WHEN %(exact)s THEN to_convert ELSE kairos_report_bucket(to_convert)::float8 END"
)

# Entries by journey, the week they began and everything a journey's figures split them by.
# ``outcome`` is null for an entry still running.
_ENTRIES_SQL = f"""
SELECT journey, week, held_out, outcome, last_step, locale, currency, to_convert,
       sum(entries) AS entries, sum(restarts) AS restarts, sum(unrecorded) AS unrecorded,
       sum(total) AS total
FROM (
    SELECT journey, date_trunc('week', day)::date AS week, held_out, outcome, last_step, locale,
           currency, to_convert::float8 AS to_convert, entries, restarts, unrecorded, total
    FROM report_entry_days WHERE {_DAYS}
    UNION ALL
    SELECT journey, date_trunc('week', entered_at AT TIME ZONE 'UTC')::date, held_out, outcome,
           last_step, locale, currency, {_TO_CONVERT}, 1, restarts, unrecorded, total
    FROM report_entry_parts WHERE {_PARTS}
) cells
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 HAVING sum(entries) <> 0
"""
# What the ended entries' runs recorded of their steps: entries that reached each, deferrals,
# held-out sends; and at each split step, the entries that took each variant (or the holdout),
# with their time to convert so that their conversions count in the window. A running entry's
# steps are recorded when it ends; until then it is counted where Temporal says it is now.
_STEPS_SQL = f"""
SELECT journey, step, kind, took, to_convert, sum(reached) AS reached,
       sum(deferred) AS deferred, sum(held_out) AS held_out
FROM (
    SELECT journey, step, kind, took, to_convert::float8 AS to_convert, reached, deferred,
           held_out
    FROM report_step_days WHERE {_DAYS}
    UNION ALL
    SELECT journey, step, kind, took, CASE WHEN took IS NOT NULL THEN {_TO_CONVERT} END, 1,
           deferred, held_out
    FROM report_step_parts WHERE {_PARTS}
) cells
GROUP BY 1, 2, 3, 4, 5 HAVING sum(reached) <> 0 OR sum(deferred) <> 0 OR sum(held_out) <> 0
"""
# The send ledger's decisions, and of them how many SendGrid said were delivered, opened or
# clicked (each message once: the ledger keeps when the provider first said so).
_MESSAGES_SQL = f"""
SELECT journey, step, channel, status, sum(messages) AS messages,
       sum(delivered) AS delivered, sum(opened) AS opened, sum(clicked) AS clicked
FROM (
    SELECT journey, step, channel, status, messages, delivered, opened, clicked
    FROM report_message_days WHERE {_DAYS}
    UNION ALL
    SELECT journey, step, channel, status, messages, delivered, opened, clicked
    FROM report_message_parts WHERE {_PARTS}
) cells
GROUP BY 1, 2, 3, 4 HAVING sum(messages) <> 0
"""
# Customers per stage now by the UTC day they entered it (their last stage change, or when they
# were created), from the stage rollup; and, counted from the stage parts, those of the day the
# stall limit falls in who entered before it, so that "stalled" is exact.
_STAGES_SQL = """
SELECT stage, day, sum(customers) AS customers, false AS edge
FROM report_stage_days GROUP BY stage, day HAVING sum(customers) <> 0
UNION ALL
SELECT stage, NULL, count(*), true FROM report_stage_parts
WHERE since >= %(cut_day)s AND since < %(cut)s GROUP BY stage
"""
# Stage changes in the window: from where to where, and which journey made them.
_FLOW_SQL = """
SELECT coalesce(from_stage, '') AS from_stage, to_stage, coalesce(journey, '') AS journey,
       count(*) AS customers
FROM stage_changes WHERE %(since)s::timestamptz IS NULL OR at > %(since)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


class JourneyCount:
    """One journey's report while the query results are added to it."""

    def __init__(self, name: str, plan: JourneyPlan | None) -> None:
        self.report = JourneyReport(
            journey=name,
            stage=plan.stage if plan else None,
            window=plan.goal_window if plan else None,
        )
        self.plan = plan
        self.steps: dict[str, StepStats] = {}
        self.variants: dict[tuple[str, str], VariantStats] = {}
        self.has_holdout = False
        self.treated = [0, 0]
        self.held = [0, 0]
        self.locales: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.cohorts: dict[date, Cohort] = {}
        # Time to convert (seconds) -> converted entries the journey messaged.
        self.to_convert: Counter[float] = Counter()
        for step in plan.steps.values() if plan else ():
            self.steps[step.id] = StepStats(step.id, step.kind)
            if isinstance(step, SplitStep):
                for each in step.variants:
                    self.variant(step.id, each.name)
                if step.holdout_percent:
                    self.has_holdout = True
                    self.variant(step.id, HOLDOUT)

    def step(self, step: str, kind: str = "") -> StepStats:
        if step not in self.steps:
            self.steps[step] = StepStats(step, kind)
        return self.steps[step]

    def variant(self, split: str, name: str) -> VariantStats:
        if (split, name) not in self.variants:
            self.variants[(split, name)] = VariantStats(split, name)
        return self.variants[(split, name)]

    def add_entries(self, row: Mapping[str, Any]) -> None:
        """A summary row: entries of one kind (held out or not, active or ended, ...)."""
        report, count = self.report, int(row["entries"])
        report.entered += count
        report.restarts += int(row["restarts"])
        if row["active"]:
            report.active += count
            return
        report.unrecorded += int(row["unrecorded"])
        report.outcomes[row["outcome"] or "unknown"] += count
        report.converted += count if row["converted"] else 0
        report.late += count if row["late"] else 0
        self.step(row["last_step"] or END).exits[row["outcome"] or "unknown"] += count
        group = self.held if row["held_out"] else self.treated
        group[0] += count
        group[1] += count if row["converted"] else 0
        if not row["held_out"]:
            locale = self.locales[row["locale"] or UNKNOWN_LOCALE]
            locale[0] += count
            locale[1] += count if row["converted"] else 0

    def converts(self, outcome: str | None, to_convert: float | None) -> tuple[bool, bool]:
        """Whether an entry that ended so converted within the journey's window, and whether
        it reached the goal only after it (late)."""
        if outcome != "converted" or to_convert is None:
            return False, False
        window = self.report.window
        within = window is None or to_convert <= window
        return within, not within

    def add_cell(self, row: Mapping[str, Any]) -> None:
        """An entries row of the query: entries of one kind, in one week."""
        count = int(row["entries"])
        active = row["outcome"] is None
        converted, late = self.converts(row["outcome"], row["to_convert"])
        self.add_entries({**row, "active": active, "converted": converted, "late": late})
        cohort = self.cohorts.setdefault(row["week"], Cohort(week=row["week"]))
        cohort.entered += count
        if active:
            cohort.active += count
        elif not row["held_out"]:
            won = count if converted else 0
            cohort.treated = Group(cohort.treated.ended + count, cohort.treated.converted + won)
        if converted and row["total"] is not None:
            report = self.report
            into = report.holdout_revenue if row["held_out"] else report.revenue
            into[row["currency"]] = into.get(row["currency"], Decimal(0)) + Decimal(row["total"])
        if converted and not row["held_out"]:
            self.to_convert[row["to_convert"]] += count

    def finish(self) -> JourneyReport:
        report = self.report
        report.cohorts = [self.cohorts[week] for week in sorted(self.cohorts)]
        report.to_convert = percentiles(self.to_convert, SHARES)
        report.treated = Group(*self.treated)
        if self.has_holdout or self.held[0]:
            report.holdout = Group(*self.held)
        report.by_locale = {k: Group(*v) for k, v in sorted(self.locales.items())}
        report.steps = list(self.steps.values())
        named = self.plan.named_steps if self.plan is not None else None
        if named:
            for row in report.steps:
                row.named = row.step in named
        report.messages = sum((s.messages for s in report.steps), Counter())
        report.by_channel = dict(sorted(report.by_channel.items()))
        report.variants = list(self.variants.values())
        return report


def percentiles(counts: Mapping[float, int], shares: tuple[float, ...]) -> dict[float, timedelta]:
    """``percentile_disc`` of values given with their counts: for each share, the smallest
    value that at least that share of all values is at or below."""
    total = sum(counts.values())
    found: dict[float, timedelta] = {}
    if total <= 0:
        return found
    seen = 0
    ordered = iter(sorted(counts.items()))
    for share in sorted(shares):
        while seen < share * total or seen == 0:
            value, count = next(ordered)
            seen += count
        found[share] = timedelta(seconds=value)
    return found


async def count_journeys(
    conn: Connection,
    plans: Mapping[str, JourneyPlan],
    journey: str | None,
    since: datetime | None,
) -> dict[str, JourneyCount]:
    """The window's entries, steps and messages by journey: three queries, rollups and parts."""
    in_scope = [journey] if journey else list(plans)
    span = Span.of(since, {name: plans[name].goal_window for name in in_scope if name in plans})
    params = span.params(journey)
    # Grouping the parts of a long window (the exact scan) in memory, not on disk.
    await conn.execute("SET LOCAL work_mem = '256MB'")
    found: dict[str, JourneyCount] = {}

    def of(name: str) -> JourneyCount:
        if name not in found:
            found[name] = JourneyCount(name, plans.get(name))
        return found[name]

    for row in await _rows(conn, _ENTRIES_SQL, params):
        of(row["journey"]).add_cell(row)
    for row in await _rows(conn, _MESSAGES_SQL, params):
        counted = of(row["journey"])
        step = counted.step(row["step"], "send")
        channels = counted.report.by_channel.setdefault(row["channel"], Counter())
        for status, column in ((row["status"], "messages"), *_ENGAGED):
            if row[column]:
                step.messages[status] += int(row[column])
                channels[status] += int(row[column])
    for row in await _rows(conn, _STEPS_SQL, params):
        counted = of(row["journey"])
        step = counted.step(row["step"], row["kind"])
        step.reached += int(row["reached"])
        for status in ("deferred", "held_out"):
            if row[status]:
                step.messages[status] += int(row[status])
        if row["took"] is not None:
            stats = counted.variant(row["step"], _variant_taken(row["took"]))
            stats.customers += int(row["reached"])
            stats.ended += int(row["reached"])
            converted, _ = counted.converts("converted", row["to_convert"])
            stats.converted += int(row["reached"]) if converted else 0
    return found


async def _rows(conn: Connection, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    cursor = await conn.execute(query, params)
    return list(await cursor.fetchall())


# A stage without a change for this long, when the report's window is "all".
_STALL_DEFAULT = timedelta(days=30)


def _variant_taken(outcome: str) -> str:
    """The variant a split step's record says the run took: ``variant a``, or ``holdout``."""
    return outcome.removeprefix("variant ") if outcome.startswith("variant ") else HOLDOUT


def _median_days(entered: Mapping[date, int], today: date) -> timedelta | None:
    """The median of whole days since each customer entered (``percentile_disc(0.5)``)."""
    found = percentiles({float((today - day).days): n for day, n in entered.items()}, (0.5,))
    return timedelta(days=found[0.5].total_seconds()) if found else None


async def lifecycle(
    conn: Connection, since: datetime | None, now: datetime
) -> tuple[list[StageNow], list[StageMove]]:
    stall = (now - since) if since is not None else _STALL_DEFAULT
    cut = now - stall
    cut_day = cut.astimezone(UTC).date()
    params = {"cut": cut, "cut_day": datetime.combine(cut_day, time(), UTC)}
    days: dict[str, Counter[date]] = defaultdict(Counter)
    stalled: Counter[str] = Counter()
    for row in await _rows(conn, _STAGES_SQL, params):
        stage = row["stage"] or NO_STAGE
        if row["edge"]:
            stalled[stage] += int(row["customers"])
            continue
        days[stage][row["day"]] += int(row["customers"])
        if row["day"] < cut_day:
            stalled[stage] += int(row["customers"])
    today = now.astimezone(UTC).date()
    order = [stage.value for stage in Stage]
    stages = sorted(
        (
            StageNow(
                stage=stage,
                customers=sum(counts.values()),
                # In whole days: the rollup knows the day each customer entered their stage.
                median_in_stage=_median_days(counts, today),
                stalled=stalled[stage],
            )
            for stage, counts in days.items()
        ),
        key=lambda s: (order.index(s.stage) if s.stage in order else len(order), s.stage),
    )
    moves = [
        StageMove(
            from_stage=row["from_stage"],
            to_stage=row["to_stage"],
            journey=row["journey"],
            customers=int(row["customers"]),
        )
        for row in await _rows(conn, _FLOW_SQL, {"since": since})
    ]
    return stages, moves
