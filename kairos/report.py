"""Customer-lifecycle analysis: journeys, steps, variants and stages.

``kairos report`` is a handful of SQL queries over the customer store, however many customers
went through the journeys: which runs of which journey started when and how each ended (a run
writes its step records, its split variant and the step it ended at to the store with its end),
every message the send ledger decided and the provider feedback about it, the goal events'
worth, and every stage change. From Temporal it asks one thing only the server knows, how many
entries are running and at which step: visibility queries, one Count per journey and, where the
server cannot count by step, one List of at most ``HERE_NOW_LIMIT`` workflows (no billable
action); without Temporal the report says it could not tell, and everything else stands.

What is counted:

* an *entry* is one customer going through the journey once. A restart (``entry: restart``)
  ends the running run as ``restarted`` and starts the next run; the runs a restart chains
  together are one entry, and each restart is counted apart;
* per journey: entries, active, each outcome, converted (the goal in ``exit_on`` was reached
  within the journey's conversion window, ``goal: {within: 7d}``; a goal reached later is
  counted apart as *late*) and the conversion rate: converted of the *ended* entries the
  journey messaged (a holdout is kept apart and compared, see ``kairos.experiments``),
  messages by status: sent, blocked and failed as the send ledger decided them, held out (a
  holdout group's sends, which never reach the ledger) and deferred (each time quiet hours or a
  frequency cap put a send off) from the runs' step records; and of the sent emails, how many
  SendGrid's event webhook said were delivered, opened and clicked (each message once, however
  often it was opened: the ledger keeps when SendGrid first said so);
* per step (a generated step, ``branch_1`` or ``set_lead_score_7``, only when something
  happened there: the journey file's own ``id:`` names are what a marketer reads): entries
  that reached it (ended entries by their records, running ones where they are now), entries
  there now, messages sent / delivered / opened / clicked / blocked / failed / deferred / held
  out there, and entries that ended there, by outcome;
* per journey, of its messaged entries that converted: the median and 90th-percentile time from
  entering to the goal; and entries by the ISO week they began (cohorts), with their rate;
* per journey, the messaged entries' conversion by the customer's locale (their profile's,
  now), and messages by channel and status;
* revenue: the numeric ``total`` (in its ``currency``) of each goal event that converted an
  entry (``order_placed`` carries both), summed per currency, and per ended entry for the
  messaged entries and the holdout, so the two can be compared;
* per split step (a journey may have several, with the same variant names): customers, ended,
  conversions and rate per variant, each against that split's holdout with the difference, its
  95% interval and a verdict in words;
* the lifecycle: customers per stage now, how long they have been there, and the stage changes
  in the window (from, to, and the journey that made each).

The window (``--since``) selects entries by the time their first run started, and stage changes
by when they happened.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError

from kairos.durations import DurationError, parse_duration
from kairos.experiments import Comparison, Group, compare
from kairos.plan import JourneyPlan, SplitStep, Stage
from kairos.runtime import SA_JOURNEY, SA_STEP
from kairos.store import Database
from kairos.store.database import Connection

DEFAULT_SINCE = "30d"
CONVERTED = "converted"
HOLDOUT = "holdout"
NO_STAGE = "(none)"
UNKNOWN_LOCALE = "(unknown)"
END = "(end)"
MESSAGE_COUNTS = (
    "sent", "delivered", "opened", "clicked", "blocked", "failed", "deferred", "held_out",
)  # fmt: skip
# SendGrid's feedback (kairos serve's event webhook), counted once per message.
_ENGAGED = (("delivered", "delivered"), ("opened", "opened"), ("clicked", "clicked"))
# The send ledger's statuses the report counts. A message still being sent, or waiting for
# quiet hours or a cap, is counted once decided (its deferrals come from the run's records); one
# withdrawn because support cancelled its run (``cancelled``) is not a message but the run's
# outcome, which is counted.
_LEDGER_STATUSES = ("sent", "blocked", "failed")
# The time-to-convert percentiles the report gives.
_SHARES = (0.5, 0.9)

# Running journey workflows listed to place them at their steps, when the server cannot count
# them by step itself; beyond it the report says its step counts of running entries are partial.
HERE_NOW_LIMIT = 10_000


class ReportError(Exception):
    """The report cannot be made as asked (an unreadable ``--since``)."""


def parse_since(text: str, now: datetime) -> datetime | None:
    """The start of the window: ``7d`` ago, an ISO date, or None for ``all``.

    Raises:
        ReportError: ``text`` is neither a duration, a date nor ``all``.
    """
    if text.strip().lower() == "all":
        return None
    try:
        return now - timedelta(seconds=parse_duration(text))
    except DurationError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(
            f"--since {text!r}: expected a duration such as 7d or 12h, a date such as "
            "2026-01-31, or all"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- the queries ---------------------------------------------------------------------------------
#
# One temporary table (dropped with the report's transaction) holds the window's entries; every
# figure is then one GROUP BY over it, or over it joined to the messages and step records of its
# runs. The number of queries does not depend on how many customers, runs or journeys there are.

# One row per entry. A run starts a new entry unless the run before it (of the same customer
# and journey) ended restarted, so the runs a restart chained are one entry, and its last run
# (the one not restarted, or the newest) says how it ended. Only the customers a restart
# chained runs of (``chains``, found by the partial index ``runs_restarted``) need the window
# functions that number entries; every other run is an entry by itself, which spares sorting a
# million runs.
# Then: whether it converted within the journey's window (``late``: after it), what the goal
# event was worth, the customer's locale. ``first_run`` identifies an entry (with its customer).
_ENTRIES_SQL = """
CREATE TEMP TABLE report_entries ON COMMIT DROP AS
WITH chains AS (
    SELECT DISTINCT customer_id, journey FROM runs
    WHERE outcome = 'restarted' AND (%(journey)s::text IS NULL OR journey = %(journey)s)
), chained AS (
    SELECT customer_id, journey, run_no, started_at, ended_at, outcome, goal_event, last_step,
           held_out, steps_recorded,
           lag(outcome) OVER w IS DISTINCT FROM 'restarted' AS first_of_entry,
           outcome IS DISTINCT FROM 'restarted' OR lead(run_no) OVER w IS NULL AS last_of_entry
    FROM runs JOIN chains USING (customer_id, journey)
    WINDOW w AS (PARTITION BY journey, customer_id ORDER BY run_no)
), numbered AS (
    SELECT *, sum(first_of_entry::int) OVER w AS entry_no
    FROM chained WINDOW w AS (PARTITION BY journey, customer_id ORDER BY run_no)
), entries AS (
    SELECT journey, customer_id, min(run_no) AS first_run, max(run_no) AS last_run,
           min(started_at) AS entered_at,
           bool_or(last_of_entry AND ended_at IS NULL) AS open,
           max(ended_at) FILTER (WHERE last_of_entry) AS ended_at,
           max(outcome) FILTER (WHERE last_of_entry) AS outcome,
           max(goal_event) FILTER (WHERE last_of_entry) AS goal_event,
           max(last_step) FILTER (WHERE last_of_entry) AS last_step,
           bool_or(held_out) AS held_out,
           count(*) FILTER (WHERE outcome = 'restarted') AS restarts,
           bool_and(steps_recorded OR ended_at IS NULL) AS recorded
    FROM numbered GROUP BY journey, customer_id, entry_no
    UNION ALL
    SELECT journey, customer_id, run_no, run_no, started_at, ended_at IS NULL, ended_at,
           outcome, goal_event, last_step, held_out, 0, steps_recorded OR ended_at IS NULL
    FROM runs r
    WHERE (%(journey)s::text IS NULL OR journey = %(journey)s)
      AND (%(since)s::timestamptz IS NULL OR started_at > %(since)s)
      AND NOT EXISTS (
          SELECT FROM chains c WHERE c.customer_id = r.customer_id AND c.journey = r.journey)
)
SELECT r.journey, r.customer_id, r.first_run, r.last_run, r.entered_at,
       CASE WHEN NOT r.open THEN r.ended_at END AS ended_at,
       CASE WHEN NOT r.open THEN r.outcome END AS outcome,
       r.last_step, r.held_out, r.restarts, r.recorded,
       date_trunc('week', r.entered_at AT TIME ZONE 'UTC')::date AS week,
       coalesce(c.profile ->> 'locale', '') AS locale,
       NOT r.open AND r.outcome = 'converted' AND (w.within IS NULL
           OR r.ended_at - r.entered_at <= w.within * interval '1 second') AS converted,
       NOT r.open AND r.outcome = 'converted' AND w.within IS NOT NULL
           AND r.ended_at - r.entered_at > w.within * interval '1 second' AS late,
       CASE WHEN jsonb_typeof(e.properties -> 'total') = 'number'
            THEN (e.properties ->> 'total')::numeric END AS total,
       coalesce(e.properties ->> 'currency', '') AS currency
FROM entries r
JOIN customers c ON c.id = r.customer_id
LEFT JOIN unnest(%(journeys)s::text[], %(windows)s::bigint[]) AS w (journey, within)
  ON w.journey = r.journey
LEFT JOIN events e ON NOT r.open AND r.outcome = 'converted' AND e.customer_id = r.customer_id
  AND e.id = r.goal_event
WHERE %(since)s::timestamptz IS NULL OR r.entered_at > %(since)s
"""
# The planner's statistics of the entries, so that the joins below hash the smaller side.
_ANALYZE_SQL = "ANALYZE report_entries"
# Entries by journey and everything a journey's summary splits them by, with what the goal
# events of the converted ones were worth (by currency); and, in the same pass over the
# entries, by journey and the week they began (a cohort row: ``cohort`` is true, the summary's
# columns are null).
_SUMMARY_SQL = """
SELECT journey, held_out, ended_at IS NULL AS active, outcome, locale, converted, late,
       coalesce(last_step, '') AS last_step, currency, week, GROUPING(week) = 0 AS cohort,
       count(*) AS entries, sum(restarts) AS restarts,
       count(*) FILTER (WHERE NOT recorded) AS unrecorded,
       sum(total) FILTER (WHERE converted) AS total,
       count(*) FILTER (WHERE ended_at IS NULL) AS open,
       count(*) FILTER (WHERE ended_at IS NOT NULL AND NOT held_out) AS treated,
       count(*) FILTER (WHERE ended_at IS NOT NULL AND NOT held_out AND converted) AS won
FROM report_entries
GROUP BY GROUPING SETS ((journey, held_out, ended_at IS NULL, outcome, locale, converted, late,
                         coalesce(last_step, ''), currency), (journey, week))
"""
_TO_CONVERT_SQL = """
SELECT journey, percentile_disc(%(shares)s::float8[]) WITHIN GROUP
       (ORDER BY ended_at - entered_at) AS times
FROM report_entries WHERE converted AND NOT held_out GROUP BY journey
"""
# The send ledger's decisions, and of them how many SendGrid said were delivered, opened or
# clicked (each message once: the ledger keeps when the provider first said so).
_MESSAGES_SQL = """
SELECT m.journey, m.step, m.channel, m.status, count(*) AS messages,
       count(m.delivered_at) AS delivered, count(m.opened_at) AS opened,
       count(m.clicked_at) AS clicked
FROM report_entries e
JOIN messages m ON m.journey = e.journey AND m.customer_id = e.customer_id
  AND m.run_no BETWEEN e.first_run AND e.last_run
WHERE m.status = ANY(%(statuses)s) GROUP BY 1, 2, 3, 4
"""
# What the ended entries' runs recorded of their steps: entries that reached each, deferrals,
# held-out sends; and at each split step, the entries that took each variant (or the holdout)
# and how many of them converted: a journey may have several splits with the same variant
# names, told apart by the split step. (A running entry's steps are recorded when it ends;
# until then it is counted where Temporal says it is now.) Only an entry a restart chained from
# several runs can reach a step twice: the inner GROUP BY keeps those apart entry by entry (and
# every other entry in one group per step), so each entry counts once without sorting every row.
_STEPS_SQL = """
SELECT journey, step, max(kind) AS kind, took,
       sum(CASE WHEN customer_id IS NULL THEN reached ELSE 1 END) AS reached,
       sum(CASE WHEN customer_id IS NULL THEN converted ELSE sign(converted) END) AS converted,
       sum(deferred) AS deferred, sum(held_out) AS held_out
FROM (
    SELECT s.journey, s.step, max(s.kind) AS kind,
           CASE WHEN s.kind = 'split' THEN s.outcome END AS took,
           CASE WHEN e.restarts > 0 THEN e.customer_id END AS customer_id,
           CASE WHEN e.restarts > 0 THEN e.first_run END AS entry,
           count(*) AS reached, count(*) FILTER (WHERE e.converted) AS converted,
           sum(s.deferred) AS deferred, sum(s.held_out) AS held_out
    FROM report_entries e
    JOIN run_steps s ON s.journey = e.journey AND s.customer_id = e.customer_id
      AND s.run_no BETWEEN e.first_run AND e.last_run
    WHERE e.ended_at IS NOT NULL
    GROUP BY s.journey, s.step, 4, 5, 6
) per_entry
GROUP BY journey, step, took
"""
# Customers per stage now, and since when they have been in it (their last stage change).
_STAGES_SQL = """
SELECT c.stage, count(*) AS customers,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY now() - coalesce(s.at, c.created_at))
           AS median_in_stage,
       count(*) FILTER (WHERE coalesce(s.at, c.created_at)
           < now() - %(stall)s * interval '1 second') AS stalled
FROM customers c
LEFT JOIN (SELECT customer_id, max(at) AS at FROM stage_changes GROUP BY customer_id) s
  ON s.customer_id = c.id
GROUP BY c.stage
"""
# Stage changes in the window: from where to where, and which journey made them.
_FLOW_SQL = """
SELECT coalesce(from_stage, '') AS from_stage, to_stage, coalesce(journey, '') AS journey,
       count(*) AS customers
FROM stage_changes WHERE %(since)s::timestamptz IS NULL OR at > %(since)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


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


class _Journey:
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

    def finish(self) -> JourneyReport:
        report = self.report
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


# A stage without a change for this long, when the report's window is "all".
_STALL_DEFAULT = timedelta(days=30)


async def build_report(
    database: Database,
    client: Client | None,
    task_queue: str,
    plans: Mapping[str, JourneyPlan],
    *,
    journey: str | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
    here_now_limit: int = HERE_NOW_LIMIT,
) -> Report:
    """Count the window's entries in the store; journeys with none are listed with zeros.

    ``client`` (None: Temporal is not reachable) is asked how many entries are running and
    where (see :func:`_here_now`; at most ``here_now_limit`` workflows are listed).
    """
    generated = now or datetime.now(UTC)
    names = [journey] if journey else sorted(plans)
    async with database.transaction() as conn:
        found = await _journeys(conn, plans, journey, since)
        stages_now, moves = await _lifecycle(conn, since, generated)
    for name in found:
        if name not in names and journey is None:
            names.append(name)
    built = {name: found.get(name) or _Journey(name, plans.get(name)) for name in names}
    temporal_error = here_now_note = None
    if client is None:
        temporal_error = "Temporal is not reachable"
    else:
        try:
            here_now_note = await _here_now(client, task_queue, built, here_now_limit)
        except RPCError as err:
            temporal_error = f"Temporal did not answer: {err.message}"
    stages = {stage.value: 0 for stage in Stage}
    stages[NO_STAGE] = 0
    for row in stages_now:
        key = row.stage if row.stage in stages else NO_STAGE
        stages[key] += row.customers
    return Report(
        generated=generated,
        since=since,
        task_queue=task_queue,
        journeys=in_lifecycle_order(j.finish() for j in built.values()),
        stages=stages,
        stages_now=stages_now,
        moves=moves,
        temporal_error=temporal_error,
        here_now_note=here_now_note,
    )


async def _rows(conn: Connection, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    cursor = await conn.execute(query, params)
    return list(await cursor.fetchall())


async def _journeys(
    conn: Connection,
    plans: Mapping[str, JourneyPlan],
    journey: str | None,
    since: datetime | None,
) -> dict[str, _Journey]:
    windows = {name: plan.goal_window for name, plan in plans.items() if plan.goal_window}
    params: dict[str, Any] = {
        "journey": journey,
        "since": since,
        "journeys": list(windows),
        "windows": list(windows.values()),
        "shares": list(_SHARES),
        "statuses": list(_LEDGER_STATUSES),
    }
    # Sorting and hashing a million entries in memory, not on disk: for this transaction only.
    await conn.execute("SET LOCAL work_mem = '256MB'")
    await conn.execute(_ENTRIES_SQL, params)
    await conn.execute(_ANALYZE_SQL)
    found: dict[str, _Journey] = {}

    def of(name: str) -> _Journey:
        if name not in found:
            found[name] = _Journey(name, plans.get(name))
        return found[name]

    for row in await _rows(conn, _SUMMARY_SQL, params):
        counted = of(row["journey"])
        if row["cohort"]:
            counted.report.cohorts.append(
                Cohort(
                    week=row["week"],
                    entered=int(row["entries"]),
                    active=int(row["open"]),
                    treated=Group(int(row["treated"]), int(row["won"])),
                )
            )
            continue
        counted.add_entries(row)
        if row["total"] is not None:
            report = counted.report
            into = report.holdout_revenue if row["held_out"] else report.revenue
            into[row["currency"]] = into.get(row["currency"], Decimal(0)) + Decimal(row["total"])
    for row in await _rows(conn, _TO_CONVERT_SQL, params):
        of(row["journey"]).report.to_convert = dict(zip(_SHARES, row["times"], strict=True))
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
            stats.converted += int(row["converted"])
    for counted in found.values():
        counted.report.cohorts.sort(key=lambda cohort: cohort.week)
    return found


def _variant_taken(outcome: str) -> str:
    """The variant a split step's record says the run took: ``variant a``, or ``holdout``."""
    return outcome.removeprefix("variant ") if outcome.startswith("variant ") else HOLDOUT


async def _lifecycle(
    conn: Connection, since: datetime | None, now: datetime
) -> tuple[list[StageNow], list[StageMove]]:
    stall = (now - since) if since is not None else _STALL_DEFAULT
    order = [stage.value for stage in Stage]
    stages = sorted(
        (
            StageNow(
                stage=row["stage"] or NO_STAGE,
                customers=int(row["customers"]),
                median_in_stage=row["median_in_stage"],
                stalled=int(row["stalled"]),
            )
            for row in await _rows(conn, _STAGES_SQL, {"stall": stall.total_seconds()})
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


async def _here_now(
    client: Client, task_queue: str, journeys: Mapping[str, _Journey], limit: int
) -> str | None:
    """Where the running entries are, from Temporal's visibility (free, unlike a query to each
    run): how many run, one Count per journey; at which step, one Count grouped by the step
    where the server's visibility store can group by a search attribute (Elasticsearch), else
    one List of at most ``limit`` running workflows (SQL visibility, as the dev server's, groups
    by ExecutionStatus only). Returns what the report must say when that List was cut short."""
    running = f"ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"
    for name, counted in journeys.items():
        query = f"{running} AND {SA_JOURNEY.name} = '{name}'"
        counted.report.running = (await client.count_workflows(query)).count
    busy = {name: counted for name, counted in journeys.items() if counted.report.running}
    if not busy or await _count_by_step(client, running, busy):
        return None
    query = running
    if len(busy) == 1:
        query += f" AND {SA_JOURNEY.name} = '{next(iter(busy))}'"
    seen = placed = 0
    async for execution in client.list_workflows(query, limit=limit, page_size=1000):
        seen += 1
        attributes = execution.typed_search_attributes
        journey = attributes.get(SA_JOURNEY)
        if journey not in busy:
            continue
        placed += 1
        here = attributes.get(SA_STEP)
        if here:
            _place(busy[journey], here, 1)
    total = sum(counted.report.running or 0 for counted in busy.values())
    if seen < limit or placed >= total:
        return None
    return (
        f"{total:,} entries are running: the steps they are at now count the first "
        f"{placed:,} Temporal listed (the report lists at most {limit:,} running workflows; "
        "this server's visibility cannot count them by step)"
    )


async def _count_by_step(client: Client, running: str, busy: Mapping[str, _Journey]) -> bool:
    """Count each busy journey's running workflows by step on the server; False when its
    visibility store does not group by a search attribute."""
    for name, counted in busy.items():
        query = f"{running} AND {SA_JOURNEY.name} = '{name}' GROUP BY {SA_STEP.name}"
        try:
            found = await client.count_workflows(query)
        except RPCError as err:
            if "not supported" in err.message:
                return False
            raise
        for group in found.groups:
            here = group.group_values[0] if group.group_values else None
            if isinstance(here, str) and here:
                _place(counted, here, group.count)
    return True


def _place(counted: _Journey, here: str, entries: int) -> None:
    step = counted.step(here)
    step.active += entries
    step.reached += entries


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
