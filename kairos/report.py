"""Customer-lifecycle analysis: journeys, steps, variants and stages.

``kairos report`` reads the customer store for what it records about every run: which runs of
which journey started when, how each ended, and every message the send ledger decided. From
Temporal it reads only what the store does not keep, each run's step records: the completion
result of a finished run (its close event; no worker needed), the ``state`` query of a running,
cancelled or failed one (answered by a worker).

What is counted:

* an *entry* is one customer going through the journey once. A restart (``entry: restart``)
  ends the running run as ``restarted`` and starts the next run; the runs a restart chains
  together are one entry, and each restart is counted apart;
* per journey: entries, active, each outcome, converted (the goal in ``exit_on`` was reached)
  and the conversion rate: converted of the *ended* entries the journey messaged (a holdout
  is kept apart and compared, see ``kairos.experiments``), messages by status: sent,
  blocked and failed as the send ledger decided them, held out (a holdout group's sends,
  which never reach the ledger) and deferred (each time quiet hours or a frequency cap put a
  send off) from the runs' records; and of the sent emails, how many SendGrid's event webhook
  said were delivered, opened and clicked (each message once, however often it was opened);
* per step (a generated step, ``branch_1`` or ``set_lead_score_7``, only when something
  happened there: the journey file's own ``id:`` names are what a marketer reads): entries
  that reached it, entries waiting there now, messages sent / delivered /
  opened / clicked / blocked / failed / deferred / held out there, and entries that ended
  there, by outcome;
* per journey, of its messaged entries that converted: the median and 90th-percentile time from
  entering to the goal; and entries by the ISO week they began (cohorts), with their rate;
* per journey, the messaged entries' conversion by the customer's locale (their profile's,
  now), and messages by channel and status;
* revenue: the numeric ``total`` (in its ``currency``) of each goal event that converted an
  entry (``order_placed`` carries both), summed per currency, and per ended entry for the
  messaged entries and the holdout, so the two can be compared;
* per split: customers, ended, conversions and rate per variant, each against the holdout
  with the difference, its 95% interval and a verdict in words;
* customers per lifecycle stage, now, from the store.

The window (``--since``) selects entries by the time their first run started.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowHistoryEventFilterType,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError

from kairos.durations import DurationError, parse_duration
from kairos.experiments import Comparison, Group, compare
from kairos.messages import SendOutcome
from kairos.plan import JourneyPlan, SplitStep, Stage
from kairos.runtime import (
    QUERY_STATE,
    JourneyResult,
    JourneyStatus,
    StepRecord,
    journey_workflow_id,
)
from kairos.store import Database

DEFAULT_SINCE = "30d"
DEFAULT_MAX_RUNS = 10_000
CONVERTED = "converted"
RESTARTED = "restarted"
HOLDOUT = "holdout"
NO_STAGE = "(none)"
UNKNOWN_LOCALE = "(unknown)"
END = "(end)"
# Reading runs: how many at once, and how long a query may wait for a worker.
_PARALLEL_READS = 16
_QUERY_TIMEOUT = timedelta(seconds=10)
MESSAGE_COUNTS = (
    "sent", "delivered", "opened", "clicked", "blocked", "failed", "deferred", "held_out",
)  # fmt: skip
# SendGrid's feedback (kairos serve's event webhook), counted once per message.
ENGAGEMENT = {"email_delivered": "delivered", "email_opened": "opened", "email_clicked": "clicked"}
# The send ledger's statuses the report counts. A message still being sent, or waiting for
# quiet hours or a cap, is counted once decided (its deferrals come from the run's records); one
# withdrawn because support cancelled its run (``cancelled``) is not a message but the run's
# outcome, which is counted.
_LEDGER_STATUSES = ("sent", "blocked", "failed")
# How a run that the store still thinks open ended, when Temporal says it closed without
# telling the store (terminated from the Temporal UI, failed, timed out).
_CLOSED_OUTCOMES = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: "cancelled",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: "terminated",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: "failed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: "timed_out",
}


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


# --- what the store and one run recorded ------------------------------------------------------


@dataclass
class RunFacts:
    """One run of a journey: what the store knows of it, and what it recorded (when read)."""

    journey: str
    customer_id: str
    run_no: int
    entry_no: int
    started: datetime
    ended: datetime | None
    outcome: str | None
    # The send ledger's decisions about this run's messages: (step, status), and the same
    # as (channel, status).
    sends: list[tuple[str, str]] = field(default_factory=list)
    channels: list[tuple[str, str]] = field(default_factory=list)
    locale: str = ""  # the customer's locale (their profile's, now)
    step: str | None = None
    records: list[StepRecord] = field(default_factory=list)
    messages: list[SendOutcome] = field(default_factory=list)
    readable: bool = True
    # The converting event's ``total`` and ``currency`` (an order's), when it had them.
    revenue: tuple[str, Decimal] | None = None

    @property
    def workflow_id(self) -> str:
        return journey_workflow_id(self.journey, self.customer_id, self.run_no)

    @property
    def open(self) -> bool:
        return self.ended is None

    @property
    def restarted(self) -> bool:
        return self.outcome == RESTARTED


# Every run, numbered into entries: a run starts a new entry unless the run before it (of the
# same customer and journey) ended restarted. Entries are selected by when their first run
# started, newest first.
_RUNS_SQL = """
WITH chained AS (
    SELECT customer_id, journey, run_no, started_at, ended_at, outcome,
           lag(outcome) OVER w IS DISTINCT FROM 'restarted' AS first_of_entry
    FROM runs WHERE (%(journey)s::text IS NULL OR journey = %(journey)s)
    WINDOW w AS (PARTITION BY customer_id, journey ORDER BY run_no)
), numbered AS (
    SELECT *, sum(first_of_entry::int) OVER w AS entry_no
    FROM chained WINDOW w AS (PARTITION BY customer_id, journey ORDER BY run_no)
), entered AS (
    SELECT *, min(started_at) OVER (PARTITION BY customer_id, journey, entry_no) AS entered_at
    FROM numbered
)
SELECT customer_id, journey, run_no, entry_no, started_at, ended_at, outcome FROM entered
WHERE (%(since)s::timestamptz IS NULL OR entered_at > %(since)s)
ORDER BY entered_at DESC, customer_id, journey, run_no
LIMIT %(limit)s
"""
_SENDS_SQL = """
SELECT m.customer_id, m.journey, m.run_no, m.step, m.status, m.channel FROM messages m
JOIN unnest(%s::text[], %s::text[], %s::int[]) AS r (customer_id, journey, run_no)
  ON m.customer_id = r.customer_id AND m.journey = r.journey AND m.run_no = r.run_no
WHERE m.status = ANY(%s)
"""
_LOCALES_SQL = """
SELECT id, coalesce(profile ->> 'locale', '') AS locale FROM customers WHERE id = ANY(%s)
"""
# What each converted run's goal event was worth: its numeric ``total`` in its ``currency``.
_REVENUE_SQL = """
SELECT r.customer_id, r.journey, r.run_no, e.properties ->> 'total' AS total,
       coalesce(e.properties ->> 'currency', '') AS currency
FROM runs r
JOIN unnest(%s::text[], %s::text[], %s::int[]) AS w (customer_id, journey, run_no)
  ON r.customer_id = w.customer_id AND r.journey = w.journey AND r.run_no = w.run_no
JOIN events e ON e.customer_id = r.customer_id AND e.id = r.goal_event
WHERE r.outcome = 'converted' AND jsonb_typeof(e.properties -> 'total') = 'number'
"""
# The distinct messages of the runs that SendGrid said were delivered, opened or clicked: the
# feedback events carry the message key the send gave SendGrid (``kairos_key``).
_ENGAGEMENT_SQL = """
SELECT DISTINCT m.customer_id, m.journey, m.run_no, m.step, m.key, e.name FROM events e
JOIN messages m ON m.customer_id = e.customer_id AND m.key = e.properties ->> 'key'
JOIN unnest(%s::text[], %s::text[], %s::int[]) AS r (customer_id, journey, run_no)
  ON m.customer_id = r.customer_id AND m.journey = r.journey AND m.run_no = r.run_no
WHERE e.customer_id = ANY(%s) AND e.name = ANY(%s)
"""


async def read_runs(
    database: Database,
    client: Client,
    *,
    journey: str | None,
    since: datetime | None,
    max_runs: int = DEFAULT_MAX_RUNS,
) -> tuple[list[RunFacts], bool]:
    """Every run of the entries in the window with its sends, from the store, and its records
    from Temporal (read in parallel); and whether ``max_runs`` cut the list short."""
    rows = await database.fetch_all(
        _RUNS_SQL, {"journey": journey, "since": since, "limit": max_runs + 1}
    )
    runs = [
        RunFacts(
            journey=r["journey"], customer_id=r["customer_id"], run_no=r["run_no"],
            entry_no=int(r["entry_no"]), started=r["started_at"], ended=r["ended_at"],
            outcome=r["outcome"],
        )
        for r in rows[:max_runs]
    ]  # fmt: skip
    await _add_sends(database, runs)
    gate = asyncio.Semaphore(_PARALLEL_READS)

    async def read(run: RunFacts) -> None:
        async with gate:
            await read_run(client, run)

    await asyncio.gather(*(read(run) for run in runs))
    return runs, len(rows) > max_runs


async def _add_sends(database: Database, runs: list[RunFacts]) -> None:
    by_run = {(r.customer_id, r.journey, r.run_no): r for r in runs}
    if not by_run:
        return
    customers, journeys, numbers = (list(column) for column in zip(*by_run, strict=True))
    rows = await database.fetch_all(
        _SENDS_SQL, (customers, journeys, numbers, list(_LEDGER_STATUSES))
    )
    for row in rows:
        run = by_run[(row["customer_id"], row["journey"], row["run_no"])]
        run.sends.append((row["step"], row["status"]))
        run.channels.append((row["channel"], row["status"]))
    for row in await database.fetch_all(_REVENUE_SQL, (customers, journeys, numbers)):
        run = by_run[(row["customer_id"], row["journey"], row["run_no"])]
        run.revenue = (row["currency"], Decimal(row["total"]))
    rows = await database.fetch_all(
        _ENGAGEMENT_SQL,
        (customers, journeys, numbers, sorted(set(customers)), list(ENGAGEMENT)),
    )
    for row in rows:
        run = by_run[(row["customer_id"], row["journey"], row["run_no"])]
        run.sends.append((row["step"], ENGAGEMENT[row["name"]]))
        run.channels.append(("email", ENGAGEMENT[row["name"]]))
    rows = await database.fetch_all(_LOCALES_SQL, (sorted(set(customers)),))
    locales = {row["id"]: row["locale"] for row in rows}
    for run in runs:
        run.locale = locales.get(run.customer_id, "")


async def read_run(client: Client, run: RunFacts) -> None:
    """Add what one run recorded: from its result when it completed, else from its ``state``
    query. A run Temporal no longer has, or that no worker answers for, is unreadable."""
    try:
        await _fill(client, run)
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        run.readable = False


async def _fill(client: Client, run: RunFacts) -> None:
    handle = client.get_workflow_handle(run.workflow_id)
    # The close event only, without waiting: none while the run is still going.
    events = handle.fetch_history_events(
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT, rpc_timeout=_QUERY_TIMEOUT
    )
    async for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            payloads = event.workflow_execution_completed_event_attributes.result.payloads
            decoded = await client.data_converter.decode(payloads, [JourneyResult])
            result: JourneyResult = decoded[0]
            run.records, run.messages = result.records, result.messages
            return
        if run.open and event.event_type in _CLOSED_OUTCOMES:
            # Closed without telling the store (terminated in the Temporal UI, ...).
            run.ended, run.outcome = (
                event.event_time.ToDatetime(UTC),
                _CLOSED_OUTCOMES[event.event_type],
            )
    state = await handle.query(QUERY_STATE, result_type=JourneyStatus, rpc_timeout=_QUERY_TIMEOUT)
    run.step, run.records, run.messages = state.step, state.records, state.messages


# --- from runs to entries ----------------------------------------------------------------------


@dataclass
class Entry:
    """One customer's pass through a journey: the runs a restart chained, oldest first."""

    runs: list[RunFacts]

    @property
    def last(self) -> RunFacts:
        return self.runs[-1]

    @property
    def active(self) -> bool:
        return self.last.open

    @property
    def readable(self) -> bool:
        return all(run.readable for run in self.runs)

    @property
    def restarts(self) -> int:
        return sum(run.restarted for run in self.runs)

    @property
    def converted(self) -> bool:
        return self.last.outcome == CONVERTED

    @property
    def entered(self) -> datetime:
        return self.runs[0].started

    @property
    def revenue(self) -> tuple[str, Decimal] | None:
        return self.last.revenue if self.converted else None

    @property
    def time_to_convert(self) -> timedelta | None:
        """From entering (the first run's start) to the goal; None unless converted."""
        ended = self.last.ended
        return ended - self.entered if self.converted and ended is not None else None

    @property
    def held_out(self) -> bool:
        """The entry went the holdout way of a split: the journey's control group."""
        return any(
            r.kind == "split" and r.outcome.removeprefix("variant ") == HOLDOUT
            for r in self.records()
        )

    def records(self) -> list[StepRecord]:
        """Every step record of the chain, oldest first."""
        return [record for run in self.runs for record in run.records]

    def messages(self) -> list[tuple[str, str]]:
        """Every message of the chain as (step, status): the ledger's decisions, and the sends
        a holdout group skipped (which never reach the ledger)."""
        found = [send for run in self.runs for send in run.sends]
        found += [
            (_message_step(m.key), m.status)
            for run in self.runs
            for m in run.messages
            if m.status == "held_out"
        ]
        return found


def entries(runs: Iterable[RunFacts]) -> list[Entry]:
    """Runs grouped into entries, each entry's runs in order."""
    grouped: dict[tuple[str, str, int], list[RunFacts]] = defaultdict(list)
    for run in runs:
        grouped[(run.customer_id, run.journey, run.entry_no)].append(run)
    return [Entry(sorted(chain, key=lambda r: r.run_no)) for chain in grouped.values()]


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
class JourneyReport:
    """Everything the report says about one journey."""

    journey: str
    stage: Stage | None = None  # the lifecycle stage the journey says it serves
    entered: int = 0
    active: int = 0
    converted: int = 0
    restarts: int = 0
    unreadable: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    steps: list[StepStats] = field(default_factory=list)
    variants: list[VariantStats] = field(default_factory=list)
    # Ended entries outside and inside the holdout, and their conversions.
    treated: Group = field(default_factory=lambda: Group(0, 0))
    holdout: Group | None = None  # None: the journey has no holdout
    # Entry to goal, of the converted entries the journey messaged, sorted.
    times_to_convert: list[timedelta] = field(default_factory=list)
    cohorts: list[Cohort] = field(default_factory=list)
    # What the goal events were worth, by currency: of the messaged entries, of the holdout's.
    revenue: dict[str, Decimal] = field(default_factory=dict)
    holdout_revenue: dict[str, Decimal] = field(default_factory=dict)
    # Ended messaged entries by the customer's locale; messages by channel and status.
    by_locale: dict[str, Group] = field(default_factory=dict)
    by_channel: dict[str, Counter[str]] = field(default_factory=dict)

    def time_to_convert(self, share: float) -> timedelta | None:
        """The time within which ``share`` of converted entries converted (0.5: the median)."""
        times = self.times_to_convert
        if not times:
            return None
        return times[min(len(times) - 1, max(0, math.ceil(share * len(times)) - 1))]

    @property
    def rate(self) -> float | None:
        """The journey's conversion rate: converted of the ended entries it messaged (the
        holdout, which it did not message, is compared with it, not mixed in)."""
        return self.treated.rate

    @property
    def versus_holdout(self) -> Comparison | None:
        """The headline of a journey with a holdout: how it does against doing nothing."""
        return compare(self.treated, self.holdout) if self.holdout is not None else None


def _grouped(found: Iterable[Entry], key: Callable[[Entry], str]) -> dict[str, list[Entry]]:
    groups: dict[str, list[Entry]] = defaultdict(list)
    for entry in found:
        groups[key(entry)].append(entry)
    return groups


def _revenue(found: Iterable[Entry]) -> dict[str, Decimal]:
    total: dict[str, Decimal] = defaultdict(Decimal)
    for entry in found:
        if (worth := entry.revenue) is not None:
            total[worth[0]] += worth[1]
    return dict(sorted(total.items()))


def per_entry(revenue: Mapping[str, Decimal], group: Group) -> dict[str, Decimal]:
    """Revenue per ended entry, by currency: comparable between a journey and its holdout."""
    if not group.ended:
        return {}
    return {currency: amount / group.ended for currency, amount in revenue.items()}


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


def cohorts(found: Sequence[Entry]) -> list[Cohort]:
    """Entries by the week they began, oldest first: is the journey doing better lately?"""
    weeks: dict[date, list[Entry]] = defaultdict(list)
    for entry in found:
        day = entry.entered.astimezone(UTC).date()
        weeks[day - timedelta(days=day.weekday())].append(entry)
    result = []
    for week in sorted(weeks):
        group = weeks[week]
        ended = [e for e in group if not e.active and not e.held_out]
        result.append(
            Cohort(
                week=week,
                entered=len(group),
                active=sum(e.active for e in group),
                treated=Group(len(ended), sum(e.converted for e in ended)),
            )
        )
    return result


def versus(variant: VariantStats, holdout: VariantStats | None) -> Comparison | None:
    """``variant`` against its split's holdout; None for the holdout itself or without one."""
    if holdout is None or variant is holdout:
        return None
    return compare(variant.group, holdout.group)


def analyse(journey: str, found: Sequence[Entry], plan: JourneyPlan | None) -> JourneyReport:
    """The journey's numbers from its entries; ``plan`` orders the steps and names the splits."""
    report = JourneyReport(journey=journey, stage=plan.stage if plan else None, entered=len(found))
    has_holdout = plan is not None and any(
        isinstance(step, SplitStep) and step.holdout_percent for step in plan.steps.values()
    )
    steps = _StepTable(plan)
    variants = _VariantTable(plan)
    for entry in found:
        _count_entry(report, entry)
        steps.add(entry)
        variants.add(entry)
    report.messages = sum((s.messages for s in steps.rows.values()), Counter())
    report.steps = steps.ordered()
    if plan is not None and plan.named_steps:
        for row in report.steps:
            row.named = row.step in plan.named_steps
    report.variants = variants.ordered()
    ended = [entry for entry in found if not entry.active]
    treated = [entry for entry in ended if not entry.held_out]
    held = [entry for entry in ended if entry.held_out]
    report.treated = Group(len(treated), sum(entry.converted for entry in treated))
    report.by_locale = {
        locale or UNKNOWN_LOCALE: Group(len(group), sum(e.converted for e in group))
        for locale, group in sorted(_grouped(treated, lambda e: e.last.locale).items())
    }
    channels: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in found:
        for run in entry.runs:
            for channel, status in run.channels:
                channels[channel][status] += 1
    report.by_channel = dict(sorted(channels.items()))
    report.revenue = _revenue(treated)
    report.holdout_revenue = _revenue(held)
    report.times_to_convert = sorted(
        t for entry in treated if (t := entry.time_to_convert) is not None
    )
    report.cohorts = cohorts(found)
    if has_holdout or held:
        report.holdout = Group(len(held), sum(entry.converted for entry in held))
    return report


def _count_entry(report: JourneyReport, entry: Entry) -> None:
    report.restarts += entry.restarts
    report.unreadable += not entry.readable
    if entry.active:
        report.active += 1
        return
    report.outcomes[entry.last.outcome or "unknown"] += 1
    report.converted += entry.converted


class _StepTable:
    """Per-step counters, in plan order, with any step the plan no longer has at the end."""

    def __init__(self, plan: JourneyPlan | None) -> None:
        self.rows: dict[str, StepStats] = {}
        for step in plan.steps.values() if plan else ():
            self.rows[step.id] = StepStats(step.id, step.kind)

    def row(self, step: str, kind: str = "") -> StepStats:
        if step not in self.rows:
            self.rows[step] = StepStats(step, kind)
        return self.rows[step]

    def add(self, entry: Entry) -> None:
        records = entry.records()
        for step in dict.fromkeys(r.step for r in records):
            kind = next(r.kind for r in records if r.step == step)
            self.row(step, kind).reached += 1
        for record in records:
            if record.kind == "send" and record.outcome.startswith("deferred"):
                self.row(record.step, "send").messages["deferred"] += 1
        for step, status in entry.messages():
            self.row(step, "send").messages[status] += 1
        if entry.active:
            here = entry.last.step
            if here:
                self.row(here).active += 1
                # Waits record when they end: someone waiting there has reached it all the same.
                self.row(here).reached += here not in {r.step for r in records}
            return
        where = entry.last.step or (records[-1].step if records else END)
        self.row(where).exits[entry.last.outcome or "unknown"] += 1

    def ordered(self) -> list[StepStats]:
        return list(self.rows.values())


class _VariantTable:
    """Customers and conversions per split variant, from the split steps' records."""

    def __init__(self, plan: JourneyPlan | None) -> None:
        self.rows: dict[tuple[str, str], VariantStats] = {}
        for step in plan.steps.values() if plan else ():
            if isinstance(step, SplitStep):
                for variant in step.variants:
                    self._row(step.id, variant.name)
                if step.holdout_percent:
                    self._row(step.id, HOLDOUT)

    def _row(self, split: str, variant: str) -> VariantStats:
        key = (split, variant)
        if key not in self.rows:
            self.rows[key] = VariantStats(split, variant)
        return self.rows[key]

    def add(self, entry: Entry) -> None:
        chosen: dict[str, str] = {}
        for record in entry.records():
            if record.kind == "split":
                chosen[record.step] = record.outcome.removeprefix("variant ")
        for split, variant in chosen.items():
            row = self._row(split, variant)
            row.customers += 1
            row.ended += not entry.active
            row.converted += entry.converted

    def ordered(self) -> list[VariantStats]:
        return list(self.rows.values())


def _message_step(key: str) -> str:
    """The step id in a message key ``journey:customer:run:step:visit``."""
    parts = key.rsplit(":", 2)
    return parts[1] if len(parts) == 3 else key


# --- stages ------------------------------------------------------------------------------------


async def stage_counts(database: Database) -> dict[str, int]:
    """Customers per lifecycle stage now, every stage listed, from the store."""
    rows = await database.fetch_all(
        "SELECT stage, count(*) AS customers FROM customers GROUP BY stage"
    )
    found = {row["stage"]: int(row["customers"]) for row in rows}
    counts = {stage.value: found.pop(stage.value, 0) for stage in Stage}
    counts[NO_STAGE] = sum(found.values())
    return counts


# --- the whole report ----------------------------------------------------------------------------


@dataclass
class Report:
    """Journeys (with their steps and variants) and stages, for one window."""

    generated: datetime
    since: datetime | None
    task_queue: str
    journeys: list[JourneyReport]
    stages: dict[str, int]
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``kairos report --json``)."""
        return {
            "generated": self.generated.isoformat(timespec="seconds"),
            "since": self.since.isoformat(timespec="seconds") if self.since else None,
            "task_queue": self.task_queue,
            "truncated": self.truncated,
            "journeys": [_journey_json(j) for j in self.journeys],
            "stages": self.stages,
        }


async def build_report(
    database: Database,
    client: Client,
    task_queue: str,
    plans: Mapping[str, JourneyPlan],
    *,
    journey: str | None = None,
    since: datetime | None = None,
    max_runs: int = DEFAULT_MAX_RUNS,
) -> Report:
    """Read every run in the window and count; journeys with no runs are listed with zeros."""
    runs, truncated = await read_runs(
        database, client, journey=journey, since=since, max_runs=max_runs
    )
    by_journey: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries(runs):
        by_journey[entry.last.journey].append(entry)
    names = [journey] if journey else sorted({*plans, *by_journey})
    journeys = in_lifecycle_order(
        analyse(name, by_journey.get(name, []), plans.get(name)) for name in names
    )
    return Report(
        generated=datetime.now(UTC),
        since=since,
        task_queue=task_queue,
        journeys=journeys,
        stages=await stage_counts(database),
        truncated=truncated,
    )


def in_lifecycle_order(journeys: Iterable[JourneyReport]) -> list[JourneyReport]:
    """By the stage each journey declares it serves (awareness first), then by name; a
    journey without a stage last."""
    order = list(Stage)
    return sorted(
        journeys, key=lambda j: (order.index(j.stage) if j.stage else len(order), j.journey)
    )


def _journey_json(report: JourneyReport) -> dict[str, Any]:
    holdouts = {v.split: v for v in report.variants if v.variant == HOLDOUT}
    return {
        "journey": report.journey,
        "stage": report.stage.value if report.stage else None,
        "entered": report.entered,
        "active": report.active,
        "converted": report.converted,
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
        "unreadable": report.unreadable,
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
