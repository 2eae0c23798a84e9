"""Dry-run one journey for one customer on a private, time-skipping Temporal: weeks in seconds.

``kairos simulate`` starts a private PostgreSQL (deleted afterwards) and the Temporal test
server in-process, and runs the real worker (the real journey workflow, the real send
transaction and policy, the real rendering) with senders that keep each rendered message
instead of delivering it. It seeds the customer through the customer store as the customer
file declares them (profile, the consent they gave, stage), fires the journey's trigger, and
hands any scheduled events to a workflow whose timers accept each at its offset. Then it lets
simulated time run to the horizon. The timeline is rebuilt from what the journey's runs
recorded (their step records and message outcomes: a restart ends a run and starts the next),
the captured messages, and the store's message ledger.

The test server's clock starts at the real "now". To make a simulation independent of when it
runs, it first skips forward to a chosen local start time (09:00 in the customer's timezone by
default), and profile or event dates may be written relative to the simulated time (``now``,
``now-60d``, ``now+2h``).

Only the simulated journey is registered in the simulation's store, so other journeys neither
start nor count against frequency caps. ``simulate_project`` registers every journey instead:
the customer's events start whatever they trigger, and caps and priorities apply between the
journeys as in production.

Why this module is ~700 lines: most of it is ``_Simulation``, one simulation's life from
server to timeline (seed, fire, skip time, settle, read back); its steps share the server, the
store and the clock, and splitting them would pass that state around instead of holding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.testing import WorkflowEnvironment

from activities.providers.base import EmailSender, SmsSender
from kairos.language.catalogue import Catalogue
from kairos.language.durations import format_duration
from kairos.language.plan import (
    ActionStep,
    ApiTrigger,
    DateTrigger,
    EventTrigger,
    JourneyPlan,
    SegmentTrigger,
    SendStep,
    StepKind,
)
from kairos.language.project import Project
from kairos.messages.models import SendOutcome, SendStatus
from kairos.runtime.client import Kairos, KairosError
from kairos.runtime.config import Settings
from kairos.runtime.contract import (
    QUERY_STATE,
    Event,
    JourneyResult,
    JourneyStatus,
    ProfileChange,
    RunOutcome,
    StepRecord,
)
from kairos.runtime.temporal import register_search_attributes, unless_gone, with_keys
from kairos.simulation.capture import CapturedMessage, CapturingEmailSender, CapturingSmsSender
from kairos.simulation.customers import (
    DATE_TYPES,
    DEFAULT_START,
    ScheduledEvent,
    SimCustomer,
    SimulationError,
    customer_timezone,
    resolve_relative,
    resolve_start,
)
from kairos.simulation.timeline import (
    ProjectTimeline,
    Timeline,
    TimelineEntry,
    describe_record,
    format_offset,
)
from kairos.store.database import Database, ensure_database
from kairos.store.embedded import temporary_server
from kairos.store.facade import Store
from kairos.store.runs import RunRecord, runs_of
from kairos.store.support import CustomerRecord, customer_record
from kairos.tools.dev import temporal_binary
from kairos.worker import build_worker, dispatcher
from workflows import schedule
from workflows.schedule import EventScheduleWorkflow

if TYPE_CHECKING:
    from typing_extensions import Unpack

DEFAULT_DAYS = 30
# How long (in real time) a send that began at the horizon may take to finish.
_SETTLE_POLLS = 100
_POLL_SECONDS = 0.05
# How often, in simulated time, the worker's time sweep runs when segments trigger journeys:
# production sweeps every minute; an hour keeps a month's simulation to seconds, and an entry
# that the clock alone decides ("no order for 60 days") lands within the hour it is due.
SWEEP_STEP = timedelta(hours=1)


class _ServerClock:
    """The simulated time, for what the store counts from (segment windows, days_since,
    expiring points): the test server's time when last read, running on in real time since,
    as the server's own clock does between skips."""

    def __init__(self, at: datetime) -> None:
        self.set(at)

    def set(self, at: datetime) -> None:
        self.at, self.read = at, time.monotonic()

    def __call__(self) -> datetime:
        return self.at + timedelta(seconds=time.monotonic() - self.read)


@lru_cache(maxsize=1)
def _quiet_runtime() -> Runtime:
    """A Temporal runtime that logs only errors: the simulator's output is the timeline."""
    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


class SimulationOptions(TypedDict, total=False):
    """How to simulate; every key is optional.

    Keys:
        events: More scheduled events (``--event``), merged with the customer file's.
        days: How long to simulate after the start (default 30).
        start: ``HH:MM`` (next such local time, default 09:00), ``now``, or a local ISO
            date-time to come.
        call_webhooks: Let webhook actions call their URLs. Off, a journey with webhooks is
            refused: the simulation would call them for real.
        database_url: An empty database of the simulation's own (tests pass one); by default
            a private PostgreSQL is started for the simulation and deleted afterwards.
    """

    events: tuple[ScheduledEvent, ...]
    days: int
    start: str
    call_webhooks: bool
    database_url: str | None


async def simulate(
    project: Project,
    settings: Settings,
    journey: str,
    customer: SimCustomer,
    **options: Unpack[SimulationOptions],
) -> Timeline:
    """Run ``journey`` for ``customer`` and return the timeline.

    Args:
        project: The compiled project; only ``journey`` is run.
        settings: Quiet hours, caps and sender details; providers, task queue and database are
            replaced.
        journey: The journey's name.
        customer: Profile, consent, event properties and scheduled events.
        options: See :class:`SimulationOptions`.

    Raises:
        SimulationError: The journey is unknown, calls webhooks, or the customer or events
            are not valid.
        StoreUnavailable: The simulation's PostgreSQL did not start.
    """
    plan = project.plans.get(journey)
    if plan is None:
        known = ", ".join(sorted(project.plans)) or "none"
        raise SimulationError(f"no journey named {journey!r} (journeys: {known})")
    [timeline] = await _simulate(project, settings, {plan.name: plan}, customer, False, options)
    return timeline


async def simulate_project(
    project: Project,
    settings: Settings,
    customer: SimCustomer,
    **options: Unpack[SimulationOptions],
) -> ProjectTimeline:
    """Run every journey of the project together for ``customer``: the events start whichever
    journeys they trigger (a date in the profile starts a date-triggered one), and frequency
    caps and priorities apply between the journeys as they would in production.

    Arguments and errors as :func:`simulate`. No event or date that starts a journey is no
    error: the timeline then shows that nothing started.
    """
    timelines = await _simulate(project, settings, dict(project.plans), customer, True, options)
    first = timelines[0]
    return ProjectTimeline(
        customer_id=customer.id,
        timezone=first.timezone,
        start=first.start,
        horizon=first.horizon,
        journeys=tuple(timelines),
    )


async def _simulate(
    project: Project,
    settings: Settings,
    plans: dict[str, JourneyPlan],
    customer: SimCustomer,
    whole: bool,
    options: SimulationOptions,
) -> list[Timeline]:
    """The simulation of ``plans`` (one journey entered by its trigger, or the ``whole``
    project entered by the events): a timeline for each, in name order."""
    if not plans:
        raise SimulationError("the project has no journeys to simulate")
    for plan in plans.values():
        hooks = [s.id for s in plan.steps.values() if isinstance(s, ActionStep) and s.webhook]
        if hooks and not options.get("call_webhooks", False):
            raise SimulationError(
                f"{plan.name} calls webhooks ({', '.join(hooks)}), which a simulation would "
                "call for real: point them at a test endpoint and pass --call-webhooks"
            )
    days = options.get("days", DEFAULT_DAYS)
    start = options.get("start", DEFAULT_START)
    database_url = options.get("database_url")
    events = (*customer.schedule, *options.get("events", ()))
    schedule = _schedule(project.catalogue, events, days)
    with contextlib.ExitStack() as stack:
        if database_url is None:
            admin = await asyncio.to_thread(
                stack.enter_context, temporary_server(Path(tempfile.gettempdir()))
            )
            database_url = await ensure_database(admin, "simulation")
        try:
            return await _simulate_on(
                project, settings, plans, customer, schedule, days, start, database_url, whole
            )
        finally:
            # Stopping the private server is blocking work: keep it off the event loop.
            await asyncio.to_thread(stack.close)


async def _simulate_on(
    project: Project,
    settings: Settings,
    plans: dict[str, JourneyPlan],
    customer: SimCustomer,
    schedule: tuple[ScheduledEvent, ...],
    days: int,
    start: str,
    database_url: str,
    whole: bool,
) -> list[Timeline]:
    async with await Database.open(database_url, check_schema=False) as database:
        await database.upgrade()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_binary("temporal-test-server")),
        runtime=_quiet_runtime(),
    )
    async with env:
        await register_search_attributes(env.client)
        timezone = customer_timezone(project.catalogue, customer)
        begin = resolve_start(start, await env.get_current_time(), timezone)
        await sleep_until(env, begin)
        begin = await env.get_current_time()
        with tempfile.TemporaryDirectory(prefix="kairos-simulate-") as scratch:
            private = dataclasses.replace(
                settings,
                outbox_dir=Path(scratch),
                task_queue="kairos-simulate",
                database_url=database_url,
            )
            # Only the simulated journeys: others neither start nor count against caps.
            store = await Store.open(private, dataclasses.replace(project, plans=plans))
            try:
                run = _Simulation(env, store, private, plans, customer, schedule, begin, whole)
                return await run.run(days)
            finally:
                await store.close()


def _schedule(
    catalogue: Catalogue, events: tuple[ScheduledEvent, ...], days: int
) -> tuple[ScheduledEvent, ...]:
    """The events in time order, once checked to be declared and within the simulation."""
    if days < 1:
        raise SimulationError("--days must be at least 1")
    unknown = sorted({e.name for e in events} - set(catalogue.events))
    if unknown:
        known = ", ".join(sorted(catalogue.events))
        raise SimulationError(f"unknown events {', '.join(unknown)} (declared events: {known})")
    late = [e for e in events if e.offset_seconds > days * 86400]
    if late:
        names = ", ".join(f"{e.name}@{format_offset(e.offset_seconds)}" for e in late)
        raise SimulationError(f"{names}: after the end of the simulation (--days {days})")
    return tuple(sorted(events, key=lambda e: e.offset_seconds))


async def sleep_until(env: WorkflowEnvironment, at: datetime) -> None:
    """Skip the test server's clock forward to ``at`` (never back)."""
    remaining = at - await env.get_current_time()
    if remaining > timedelta(0):
        await env.sleep(remaining)


@dataclass
class _Run:
    """What one run of the journey recorded, as seen at the horizon."""

    run_no: int
    started: datetime
    records: list[StepRecord]
    messages: list[SendOutcome]
    closed: datetime | None = None
    outcome: str | None = None
    converted: bool = False
    waiting: str = ""
    step: str | None = None


class _Simulation:
    """One simulation: a private server and store, a worker, one customer, one journey."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        store: Store,
        settings: Settings,
        plans: dict[str, JourneyPlan],
        customer: SimCustomer,
        schedule: tuple[ScheduledEvent, ...],
        start: datetime,
        whole: bool = False,
    ) -> None:
        self.env = env
        # The test server's connection, encrypting with this simulation's keys.
        self.client: Client = with_keys(env.client, store.keys)
        self.store = store
        self.catalogue: Catalogue = store.catalogue
        self.settings = settings
        self.plans = plans
        # The journey this view of the simulation is about (see _about); with one journey,
        # the one that is entered by its trigger.
        self.plan = next(iter(plans.values()))
        self.whole = whole
        self.customer = customer
        self.schedule = schedule
        self.captured: dict[str, CapturedMessage] = {}
        self.emitted: list[TimelineEntry] = []
        self.timezone = customer_timezone(self.catalogue, customer)
        self.start = start
        # Segment conditions and points count from the simulated time, not the machine's.
        self.clock = _ServerClock(start)
        store.ingest.clock = self.clock
        store.ingest.stamped_clock = True

    async def run(self, days: int) -> list[Timeline]:
        horizon = self.start + timedelta(days=days)
        email: EmailSender = CapturingEmailSender(self.captured)
        sms: SmsSender = CapturingSmsSender(self.captured)
        worker = build_worker(
            self.client,
            self.settings,
            self.store,
            email=email,
            sms=sms,
            extra_workflows=[EventScheduleWorkflow],
        )
        async with worker:
            kairos = Kairos(
                self.store,
                dispatcher(self.store, self.client, self.settings.task_queue),
                self.settings,
            )
            await self._enter(kairos)
            await self._play_schedule()
            await self._pass_time(kairos, horizon)
            views = [self._about(plan) for _, plan in sorted(self.plans.items())]
            for view in views:
                await view._settle()
            runs = [await view._runs() for view in views]
        record = await customer_record(
            self.store.database, self.customer.id, runs=1000, messages=1000
        )
        return [view._timeline(horizon, r, record) for view, r in zip(views, runs, strict=True)]

    def _about(self, plan: JourneyPlan) -> _Simulation:
        """This simulation, seen from one of its journeys (its runs, its timeline)."""
        view = copy.copy(self)
        view.plan = plan
        return view

    async def _now(self) -> datetime:
        return await self.env.get_current_time()

    async def _pass_time(self, kairos: Kairos, horizon: datetime) -> None:
        """Let simulated time run to the horizon. When segments trigger journeys, stop every
        SWEEP_STEP to run the worker's time sweep at that simulated moment (points that
        expired, segments entered or left with time alone), as a worker would each minute."""
        if not self.store.ingest.membership.segments:
            await sleep_until(self.env, horizon)
            return
        moment = await self._now()
        while moment < horizon:
            await sleep_until(self.env, min(moment + SWEEP_STEP, horizon))
            moment = await self._now()
            self.clock.set(moment)
            expired = await self.store.expire_points(moment)
            swept = await self.store.sweep_segments(moment)
            await kairos.dispatcher.run([*expired.signalled, *swept.customers])

    # --- the customer and their events -------------------------------------------------------

    async def _enter(self, kairos: Kairos) -> None:
        """Seed the customer through the store and fire the journey's trigger."""
        profile = self._profile()
        trigger = self.plan.trigger
        if isinstance(trigger, DateTrigger) and not self.whole:
            self._require_date(trigger, profile)
        try:
            await self._seed(kairos, profile)
            if self.whole:
                return  # the scheduled events (and profile dates) start what they trigger
            match trigger:
                case EventTrigger():
                    await self._emit(kairos, ScheduledEvent(trigger.event, 0))
                case ApiTrigger():
                    await kairos.enter(self.plan.name, self.customer.id)
                case DateTrigger() | SegmentTrigger():
                    # Identifying the customer (in _seed) set the date, or put them in the
                    # segment: that started it (and their events may, later).
                    pass
        except KairosError as err:
            raise SimulationError(f"{self.customer.source}: {err}") from None

    def _profile(self) -> dict[str, Any]:
        profile = resolve_relative(self.customer.profile, self.catalogue.profile, self.start)
        problems = self.catalogue.validate_profile(profile)
        if problems:
            raise SimulationError(f"{self.customer.source}: " + "; ".join(problems))
        return profile

    async def _seed(self, kairos: Kairos, profile: dict[str, Any]) -> None:
        """The customer as the file declares them: profile and consent (opt-in: only what the
        file grants), recorded with the file as the source; then their stage."""
        await kairos.identify(
            self.customer.id,
            profile,
            consent=dict(self.customer.consent) or None,
            source=f"customer file {self.customer.source}",
        )
        if self.customer.stage:
            await self.store.change_profile(
                ProfileChange(
                    key=f"simulation:{self.customer.id}:stage",
                    customer_id=self.customer.id,
                    journey="",
                    run_no=0,
                    stage=self.customer.stage,
                )
            )

    def _require_date(self, trigger: DateTrigger, profile: dict[str, Any]) -> None:
        if profile.get(trigger.attribute) is None:
            offset = format_duration(trigger.offset_seconds)
            raise SimulationError(
                f"{self.customer.source}: {self.plan.name} starts {offset} after "
                f"customer.{trigger.attribute}: give the profile a {trigger.attribute} "
                f"(for example `now-{offset}` to start it at once)"
            )

    async def _emit(self, kairos: Kairos, event: ScheduledEvent) -> None:
        """The trigger, accepted at the start as product code would emit it."""
        at = await self._now()
        await kairos.record(
            self.customer.id,
            event.name,
            self._event_properties(event, at),
            event_id=f"simulation:{event.name}:0",
            timestamp=at,
        )
        what = f"event {event.name} (the trigger)"
        self.emitted.append(TimelineEntry(at, self._offset(at), "event", "", what))

    async def _play_schedule(self) -> None:
        """Hand the scheduled events to a workflow whose timers accept each at its moment, so
        every event arrives on the server's clock, never racing its time skipping."""
        if not self.schedule:
            return
        items = []
        for number, event in enumerate(self.schedule, start=1):
            at = self.start + timedelta(seconds=event.offset_seconds)
            properties = self._event_properties(event, at)
            items.append(
                schedule.ScheduledEvent(
                    after_seconds=event.offset_seconds,
                    event=Event(
                        id=f"simulation:{event.name}:{event.offset_seconds}:{number}",
                        name=event.name,
                        properties=properties,
                    ),
                )
            )
            self.emitted.append(
                TimelineEntry(at, event.offset_seconds, "event", "", f"event {event.name}")
            )
        await self.client.start_workflow(
            EventScheduleWorkflow.run,
            schedule.EventSchedule(customer_id=self.customer.id, events=items),
            id=f"simulation-schedule:{self.customer.id}",
            task_queue=self.settings.task_queue,
        )

    def _event_properties(self, event: ScheduledEvent, at: datetime) -> dict[str, Any]:
        """File properties, then dates at the event's time, then values from the profile."""
        spec = self.catalogue.events[event.name]
        given = {**self.customer.events.get(event.name, {}), **event.properties}
        profile = self.customer.profile
        properties = dict(given)
        for name, attr in spec.properties.items():
            if name in given:
                continue
            target = attr.profile_attribute(name)
            if attr.type in DATE_TYPES:
                properties[name] = "now"
            elif target is not None and profile.get(target) is not None:
                properties[name] = profile[target]
        properties = resolve_relative(properties, spec.properties, at)
        problems = self.catalogue.validate_event(event.name, properties)
        if problems:
            raise SimulationError(
                f"{'; '.join(problems)} (give them under events.{event.name} in "
                f"{self.customer.source})"
            )
        return properties

    # --- what the runs recorded --------------------------------------------------------------

    async def _settle(self) -> None:
        """Let a send or action that began at the horizon finish before the worker stops."""
        for run in await self._store_runs():
            handle = self.client.get_workflow_handle(run.workflow_id)
            for _ in range(_SETTLE_POLLS):
                described = await unless_gone(handle.describe())
                if described is None or not described.raw_description.pending_activities:
                    break
                await asyncio.sleep(_POLL_SECONDS)

    async def _store_runs(self) -> list[RunRecord]:
        found = await runs_of(
            self.store.database, customer_id=self.customer.id, journey=self.plan.name, limit=1000
        )
        return sorted(found, key=lambda r: r.run_no)

    async def _runs(self) -> list[_Run]:
        """Every run of the journey for the customer, oldest first, as Temporal has them."""
        runs = []
        for record in await self._store_runs():
            seen = await self._run(record)
            if seen is not None:
                runs.append(seen)
        return runs

    async def _run(self, record: RunRecord) -> _Run | None:
        handle = self.client.get_workflow_handle(record.workflow_id)
        described = await unless_gone(handle.describe())
        if described is None:
            return None  # decided in the store, never started in Temporal
        latest = self.client.get_workflow_handle(
            record.workflow_id, run_id=described.run_id, result_type=JourneyResult
        )
        if described.status is WorkflowExecutionStatus.COMPLETED:
            result: JourneyResult = await latest.result(follow_runs=False)
            return _Run(
                record.run_no,
                _started(described.start_time, result.records),
                result.records,
                result.messages,
                closed=described.close_time,
                outcome=result.outcome,
                converted=result.converted,
            )
        status = await latest.query(QUERY_STATE, result_type=JourneyStatus)
        outcome = None
        if described.status not in (WorkflowExecutionStatus.RUNNING, None):
            outcome = described.status.name.lower()
        return _Run(
            record.run_no,
            _started(described.start_time, status.records),
            status.records,
            status.messages,
            closed=described.close_time,
            outcome=outcome,
            waiting=status.waiting,
            step=status.step,
        )

    # --- building the timeline ---------------------------------------------------------------

    def _offset(self, at: datetime) -> int:
        return int((at - self.start).total_seconds())

    def _timeline(
        self, horizon: datetime, runs: list[_Run], record: CustomerRecord | None
    ) -> Timeline:
        # Within a second: events first, then each run's entries in the order it recorded
        # them, so an old run's last steps come before the run that restarted it (which
        # Temporal started a few milliseconds earlier).
        keyed: list[tuple[int, int, int, int, TimelineEntry]] = [
            (e.offset_seconds, 0, 0, i, e) for i, e in enumerate(self.emitted)
        ]
        previous: _Run | None = None
        ended = 0  # when the run before ended: a restart cannot be shown before that
        for run in runs:
            mine = list(self._run_entries(run, previous))
            for i, entry in enumerate(mine):
                # A loaded machine can take a second or more between starting the new run and
                # the old one recording its end: order by the story, not by that lag.
                keyed.append((max(entry.offset_seconds, ended), 1, run.run_no, i, entry))
            ended = max((e.offset_seconds for e in mine), default=ended)
            previous = run
        keyed.sort(key=lambda k: k[:4])
        entries = [k[4] for k in keyed]
        entries.append(self._last_entry(horizon, runs))
        last = runs[-1] if runs else None
        ledger = tuple(m for m in record.messages if m.journey == self.plan.name) if record else ()
        return Timeline(
            journey=self.plan.name,
            version=self.plan.version,
            customer_id=self.customer.id,
            timezone=self.timezone,
            start=self.start,
            horizon=horizon,
            entries=tuple(entries),
            outcome=last.outcome if last else None,
            converted=any(r.converted for r in runs),
            stage=record.stage if record else None,
            ledger=ledger,
            runs=len(runs),
        )

    def _run_entries(self, run: _Run, previous: _Run | None) -> Iterator[TimelineEntry]:
        if previous is None:
            yield self._entry(run.started, "start", "", f"entered {self._why()}")
        elif previous.outcome == RunOutcome.restarted:
            yield self._entry(run.started, "restart", "", self._restarted(run.run_no))
        else:
            yield self._entry(
                run.started, "start", "", f"entered {self._why()} again (run {run.run_no})"
            )
        yield from self._record_entries(run)

    def _restarted(self, run_no: int) -> str:
        trigger = self.plan.trigger
        on = f" on {trigger.event}" if isinstance(trigger, EventTrigger) else ""
        return f"restarted{on}: run {run_no} begins again"

    def _why(self) -> str:
        trigger = self.plan.trigger
        match trigger:
            case EventTrigger():
                return f"{self.plan.name} on {trigger.event}"
            case ApiTrigger():
                return f"{self.plan.name} (started by API)"
            case DateTrigger():
                offset = format_duration(trigger.offset_seconds)
                return f"{self.plan.name}, {offset} after customer.{trigger.attribute}"
            case SegmentTrigger():
                return f"{self.plan.name} on entering segment {trigger.segment}"

    def _record_entries(self, run: _Run) -> Iterator[TimelineEntry]:
        outcomes = iter(run.messages)
        for record in run.records:
            step = self.plan.steps.get(record.step)
            if record.kind == StepKind.send and isinstance(step, SendStep):
                deferred = record.outcome.startswith("deferred")
                outcome = None if deferred else next(outcomes, None)
                yield self._send_entry(record, step, outcome)
            elif record.kind == StepKind.exit and record.outcome.startswith(RunOutcome.restarted):
                what = f"run {run.run_no} ended: {record.outcome}"
                yield self._entry(record.at, "end", record.step, what)
            else:
                kind, what = describe_record(record, step)
                yield self._entry(record.at, kind, record.step, what)

    def _send_entry(
        self, record: StepRecord, step: SendStep, outcome: SendOutcome | None
    ) -> TimelineEntry:
        if outcome is None:
            what = f"{step.channel.value} {record.outcome}"
            return self._entry(record.at, "deferred", step.id, what)
        channel = outcome.channel.value
        kind = {SendStatus.sent: "send"}.get(outcome.status, outcome.status.value)
        if outcome.status == SendStatus.blocked and outcome.reason.startswith("frequency cap"):
            kind = "cap"
        detail = {
            SendStatus.sent: "sent",
            SendStatus.held_out: "not sent: holdout group",
        }.get(outcome.status, f"{outcome.status}: {outcome.reason}")
        what = f"{channel} {detail}"
        message = self.captured.get(outcome.key) if outcome.status == SendStatus.sent else None
        return self._entry(record.at, kind, step.id, what, message)

    def _last_entry(self, horizon: datetime, runs: list[_Run]) -> TimelineEntry:
        if not runs:
            at = self.emitted[0].at if self.emitted else self.start
            return self._entry(at, "not_entered", "", self._not_entered())
        last = runs[-1]
        if last.outcome is None:
            where = last.waiting or f"at step {last.step}"
            return self._entry(horizon, "horizon", last.step or "", f"still running: {where}")
        again = last.converted and last.outcome != RunOutcome.converted
        converted = " (converted)" if again else ""
        at = last.closed or (last.records[-1].at if last.records else last.started)
        return self._entry(at, "end", "", f"ended: {last.outcome}{converted}")

    def _not_entered(self) -> str:
        trigger = self.plan.trigger
        if isinstance(trigger, EventTrigger | DateTrigger) and trigger.when:
            return f"did not enter: the trigger condition `{trigger.when}` did not hold"
        return "did not enter: the journey's trigger did not start a run"

    def _entry(
        self, at: datetime, kind: str, step: str, what: str, message: CapturedMessage | None = None
    ) -> TimelineEntry:
        return TimelineEntry(at, self._offset(at), kind, step, what, message)


def _started(started: datetime | None, records: list[StepRecord]) -> datetime:
    """When a run began: its first execution's start (a long run continues as new)."""
    times = [t for t in (started, records[0].at if records else None) if t is not None]
    return min(times)
