"""Customer-lifecycle analysis from Temporal itself: journeys, steps, variants and stages.

``kairos report`` reads Temporal's visibility (which runs of which journey started when, and
their status) and each run's own records: the ``state`` query for a running run (answered by a
worker), the completion result for a finished one (its close event; no worker needed), and for
a run that restarted (continued-as-new with no state) a query replayed by a worker.

What is counted:

* an *entry* is one customer going through the journey once; the runs a restart chains together
  (``entry: restart``) are one entry, and each restart is counted apart;
* per journey: entries, active, each outcome, converted (the goal in ``exit_on`` was reached)
  and the conversion rate (converted / entered), messages by status;
* per step: entries that reached it, entries waiting there now, messages sent / blocked /
  failed / deferred / held out there, and entries that ended there, by outcome;
* per split: customers, conversions and rate per variant, with the lift over the holdout;
* customers per lifecycle stage, now, from the customer entities' ``KairosStage``.

The window (``--since``) selects entries by the time their first run started. Only runs on the
configured task queue are counted, so staging and production can share a namespace.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHistoryEventFilterType,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError

from kairos.durations import DurationError, parse_duration
from kairos.messages import SendOutcome
from kairos.plan import JourneyPlan, SplitStep, Stage
from kairos.runtime import (
    CUSTOMER_WORKFLOW,
    JOURNEY_WORKFLOW,
    QUERY_STATE,
    SA_CUSTOMER,
    SA_JOURNEY,
    SA_STAGE,
    JourneyInput,
    JourneyResult,
    JourneyStatus,
    StepRecord,
)
from kairos.temporal import quote

DEFAULT_SINCE = "30d"
DEFAULT_MAX_RUNS = 10_000
CONVERTED = "converted"
HOLDOUT = "holdout"
NO_STAGE = "(none)"
END = "(end)"
# Reading runs: how many at once, and how long a query may wait for a worker.
_PARALLEL_READS = 16
_QUERY_TIMEOUT = timedelta(seconds=10)
MESSAGE_STATUSES = ("sent", "blocked", "failed", "deferred", "held_out")
_CLOSED_OUTCOMES = {
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
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


# --- what one run recorded ---------------------------------------------------------------------


@dataclass
class RunFacts:
    """One Temporal execution of a journey, with what it recorded (when it could be read)."""

    journey: str
    workflow_id: str
    customer_id: str
    run_id: str
    started: datetime
    status: WorkflowExecutionStatus | None
    outcome: str | None = None
    converted: bool = False
    step: str | None = None
    records: list[StepRecord] = field(default_factory=list)
    messages: list[SendOutcome] = field(default_factory=list)
    readable: bool = True
    restarted: bool = False


async def read_runs(
    client: Client,
    task_queue: str,
    *,
    journey: str | None,
    since: datetime | None,
    max_runs: int = DEFAULT_MAX_RUNS,
) -> tuple[list[RunFacts], bool]:
    """Every journey run in the window, read in parallel; and whether ``max_runs`` cut it short."""
    executions = [
        e
        async for e in client.list_workflows(runs_query(task_queue, journey, since), limit=max_runs)
    ]
    gate = asyncio.Semaphore(_PARALLEL_READS)

    async def read(execution: WorkflowExecution) -> RunFacts:
        async with gate:
            return await read_run(client, execution)

    facts = await asyncio.gather(*(read(e) for e in executions))
    return list(facts), len(executions) >= max_runs


def runs_query(task_queue: str, journey: str | None, since: datetime | None) -> str:
    """The visibility query for journey runs on ``task_queue`` (and ``journey``, ``since``)."""
    clauses = [f"WorkflowType = '{JOURNEY_WORKFLOW}'", f"TaskQueue = '{quote(task_queue)}'"]
    if journey:
        clauses.append(f"{SA_JOURNEY.name} = '{quote(journey)}'")
    if since is not None:
        clauses.append(f"StartTime > '{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'")
    return " AND ".join(clauses)


async def read_run(client: Client, execution: WorkflowExecution) -> RunFacts:
    """What one run recorded: from its result when completed, else from its ``state`` query."""
    attributes = execution.typed_search_attributes
    facts = RunFacts(
        journey=attributes.get(SA_JOURNEY) or execution.id.split(":")[1],
        workflow_id=execution.id,
        customer_id=attributes.get(SA_CUSTOMER) or execution.id.split(":", 2)[-1],
        run_id=execution.run_id,
        started=execution.start_time,
        status=execution.status,
    )
    try:
        await _fill(client, facts)
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        facts.readable = False
    return facts


async def _fill(client: Client, facts: RunFacts) -> None:
    status = facts.status
    if status is WorkflowExecutionStatus.COMPLETED:
        handle = client.get_workflow_handle(
            facts.workflow_id, run_id=facts.run_id, result_type=JourneyResult
        )
        result = await handle.result(follow_runs=False, rpc_timeout=_QUERY_TIMEOUT)
        facts.outcome, facts.converted = result.outcome, result.converted
        facts.records, facts.messages = result.records, result.messages
        return
    if status is WorkflowExecutionStatus.CONTINUED_AS_NEW:
        facts.restarted = await _restarted(client, facts)
        if not facts.restarted:
            return  # continued with its state: the next run carries these records
    if status in _CLOSED_OUTCOMES:
        facts.outcome = _CLOSED_OUTCOMES[status]
    await _query(client, facts)


async def _restarted(client: Client, facts: RunFacts) -> bool:
    """True when the run continued-as-new without its state: a restart, not a long history."""
    handle = client.get_workflow_handle(facts.workflow_id, run_id=facts.run_id)
    events = handle.fetch_history_events(
        event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT, rpc_timeout=_QUERY_TIMEOUT
    )
    async for event in events:
        attributes = event.workflow_execution_continued_as_new_event_attributes
        decoded = await client.data_converter.decode(attributes.input.payloads, [JourneyInput])
        return bool(decoded) and decoded[0].state is None
    return False


async def _query(client: Client, facts: RunFacts) -> None:
    handle = client.get_workflow_handle(facts.workflow_id, run_id=facts.run_id)
    state = await handle.query(QUERY_STATE, result_type=JourneyStatus, rpc_timeout=_QUERY_TIMEOUT)
    facts.step, facts.records, facts.messages = state.step, state.records, state.messages


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
        status = self.last.status
        return status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.CONTINUED_AS_NEW)

    @property
    def readable(self) -> bool:
        return all(run.readable for run in self.runs)

    @property
    def restarts(self) -> int:
        return sum(run.restarted for run in self.runs)

    def records(self) -> list[StepRecord]:
        """Every step record of the chain, once (a continued run repeats its predecessor's)."""
        seen: set[tuple[str, str, datetime, str]] = set()
        unique: list[StepRecord] = []
        for record in (r for run in self.runs for r in run.records):
            key = (record.step, record.kind, record.at, record.outcome)
            if key not in seen:
                seen.add(key)
                unique.append(record)
        return unique

    def messages(self) -> list[SendOutcome]:
        """Every message of the chain, once (by message key)."""
        unique: dict[str, SendOutcome] = {}
        for message in (m for run in self.runs for m in run.messages):
            unique[message.key] = message
        return list(unique.values())


def entries(runs: Iterable[RunFacts]) -> list[Entry]:
    """Runs grouped into entries: continued-as-new runs belong to the run that follows them."""
    by_workflow: dict[str, list[RunFacts]] = defaultdict(list)
    for run in runs:
        by_workflow[run.workflow_id].append(run)
    found: list[Entry] = []
    for chain in by_workflow.values():
        pending: list[RunFacts] = []
        for run in sorted(chain, key=lambda r: r.started):
            pending.append(run)
            if run.status is not WorkflowExecutionStatus.CONTINUED_AS_NEW:
                found.append(Entry(pending))
                pending = []
        if pending:  # the run that followed started before the window or past max-runs
            found.append(Entry(pending))
    return found


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


@dataclass
class VariantStats:
    """One variant (or the holdout) of one split step."""

    split: str
    variant: str
    customers: int = 0
    converted: int = 0

    @property
    def rate(self) -> float | None:
        return self.converted / self.customers if self.customers else None


@dataclass
class JourneyReport:
    """Everything the report says about one journey."""

    journey: str
    entered: int = 0
    active: int = 0
    converted: int = 0
    restarts: int = 0
    unreadable: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    steps: list[StepStats] = field(default_factory=list)
    variants: list[VariantStats] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.converted / self.entered if self.entered else None


def lift(variant: VariantStats, holdout: VariantStats | None) -> float | None:
    """Relative lift of ``variant``'s conversion rate over the holdout's (0.25 = +25%)."""
    if holdout is None or variant is holdout or not holdout.rate or variant.rate is None:
        return None
    return variant.rate / holdout.rate - 1


def analyse(journey: str, found: Sequence[Entry], plan: JourneyPlan | None) -> JourneyReport:
    """The journey's numbers from its entries; ``plan`` orders the steps and names the splits."""
    report = JourneyReport(journey=journey, entered=len(found))
    steps = _StepTable(plan)
    variants = _VariantTable(plan)
    for entry in found:
        _count_entry(report, entry)
        steps.add(entry)
        variants.add(entry)
    report.messages = sum((s.messages for s in steps.rows.values()), Counter())
    report.steps = steps.ordered()
    report.variants = variants.ordered()
    return report


def _count_entry(report: JourneyReport, entry: Entry) -> None:
    report.restarts += entry.restarts
    report.unreadable += not entry.readable
    if entry.active:
        report.active += 1
        return
    outcome = entry.last.outcome or "unknown"
    report.outcomes[outcome] += 1
    report.converted += entry.last.converted or outcome == CONVERTED


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
        for message in entry.messages():
            self.row(_message_step(message.key), "send").messages[message.status] += 1
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
        converted = entry.last.converted or entry.last.outcome == CONVERTED
        for split, variant in chosen.items():
            row = self._row(split, variant)
            row.customers += 1
            row.converted += converted

    def ordered(self) -> list[VariantStats]:
        return list(self.rows.values())


def _message_step(key: str) -> str:
    """The step id in a message key ``journey:customer:run:step:visit``."""
    parts = key.rsplit(":", 2)
    return parts[1] if len(parts) == 3 else key


# --- stages ------------------------------------------------------------------------------------


async def stage_counts(client: Client, task_queue: str) -> dict[str, int]:
    """Customers per lifecycle stage now (running customer entities on ``task_queue``)."""
    base = (
        f"WorkflowType = '{CUSTOMER_WORKFLOW}' AND ExecutionStatus = 'Running' "
        f"AND TaskQueue = '{quote(task_queue)}'"
    )
    total = (await client.count_workflows(base)).count
    counts: dict[str, int] = {}
    for stage in Stage:
        query = f"{base} AND {SA_STAGE.name} = '{stage.value}'"
        counts[stage.value] = (await client.count_workflows(query)).count
    counts[NO_STAGE] = max(total - sum(counts.values()), 0)
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
        client, task_queue, journey=journey, since=since, max_runs=max_runs
    )
    by_journey: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries(runs):
        by_journey[entry.last.journey].append(entry)
    names = [journey] if journey else sorted({*plans, *by_journey})
    journeys = [analyse(name, by_journey.get(name, []), plans.get(name)) for name in names]
    return Report(
        generated=datetime.now(UTC),
        since=since,
        task_queue=task_queue,
        journeys=journeys,
        stages=await stage_counts(client, task_queue),
        truncated=truncated,
    )


def _journey_json(report: JourneyReport) -> dict[str, Any]:
    holdouts = {v.split: v for v in report.variants if v.variant == HOLDOUT}
    return {
        "journey": report.journey,
        "entered": report.entered,
        "active": report.active,
        "converted": report.converted,
        "conversion_rate": report.rate,
        "restarts": report.restarts,
        "unreadable": report.unreadable,
        "outcomes": dict(report.outcomes),
        "messages": {s: report.messages[s] for s in MESSAGE_STATUSES},
        "steps": [
            {
                "step": s.step,
                "kind": s.kind,
                "reached": s.reached,
                "active": s.active,
                "messages": {k: s.messages[k] for k in MESSAGE_STATUSES if s.messages[k]},
                "exits": dict(s.exits),
            }
            for s in report.steps
        ],
        "variants": [
            {
                "split": v.split,
                "variant": v.variant,
                "customers": v.customers,
                "converted": v.converted,
                "conversion_rate": v.rate,
                "lift_vs_holdout": lift(v, holdouts.get(v.split)),
            }
            for v in report.variants
        ],
    }
