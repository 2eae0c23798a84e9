"""Dry-run one journey for one customer on a private, time-skipping Temporal: weeks in seconds.

``kairos simulate`` starts the Temporal test server in-process, runs the real worker (the real
journey and customer workflows, the real policy and the real rendering) with senders that keep
each rendered message instead of delivering it, seeds the customer from a file, fires the
journey's trigger and any scheduled events at their offsets, and lets simulated time run to the
horizon. The timeline is rebuilt from what the run recorded (its step records and message
outcomes), the captured messages and the customer entity's ledger.

The test server's clock starts at the real "now". To make a simulation independent of when it
runs, it first skips forward to a chosen local start time (09:00 in the customer's timezone by
default), and profile or event dates may be written relative to the simulated time (``now``,
``now-60d``, ``now+2h``).

Only the simulated journey is compiled into the simulation's worker, so other journeys neither
start nor count against frequency caps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.providers.base import EmailSender, SmsSender
from kairos import policy
from kairos.catalogue import Attribute, AttrType, Catalogue
from kairos.client import Kairos, KairosError
from kairos.compiler import Project
from kairos.config import Settings
from kairos.dev import temporal_binary
from kairos.durations import DurationError, format_duration, parse_duration
from kairos.messages import EmailMessage, Receipt, SendOutcome, SmsMessage
from kairos.plan import (
    ActionStep,
    ApiTrigger,
    Channel,
    DateTrigger,
    EventTrigger,
    JourneyPlan,
    PlanStep,
    SendStep,
    SetStep,
    WaitForStep,
)
from kairos.runtime import (
    QUERY_STATE,
    SIGNAL_PROFILE,
    CustomerView,
    JourneyResult,
    JourneyStatus,
    LedgerEntry,
    ProfileChange,
    StepRecord,
    customer_workflow_id,
    journey_workflow_id,
)
from kairos.temporal import register_search_attributes
from worker import build_worker

DEFAULT_DAYS = 30
DEFAULT_START = "09:00"
PROVIDER = "simulation"
_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*(.+))?$", re.IGNORECASE)
_EVENT_SPEC = re.compile(r"^\s*([A-Za-z_$][\w$]*)\s*(?:@\s*\+?\s*(.+?))?\s*$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_DATES = (AttrType.datetime, AttrType.date)
_CONSENT_TOPICS = ("email", "sms", "marketing")
# Routing starts a journey asynchronously; this bounds (in real time) how long we wait for it.
_START_POLLS = 100
_POLL_SECONDS = 0.05


class SimulationError(Exception):
    """The simulation cannot run as asked: a bad customer file, event or start time."""


# --- the customer file -----------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledEvent:
    """An event the simulation sends ``offset_seconds`` after the start.

    ``properties`` override the properties given for this event in the customer file.
    """

    name: str
    offset_seconds: int
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SimCustomer:
    """Who the simulation is about, as read from a customer file."""

    id: str
    profile: Mapping[str, Any]
    consent: Mapping[str, bool] = field(default_factory=dict)
    stage: str | None = None
    events: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    schedule: tuple[ScheduledEvent, ...] = ()
    source: str = "customer file"


def parse_event_spec(text: str) -> ScheduledEvent:
    """``order_placed@+3h`` (or ``order_placed@3h``, or ``order_placed`` for +0) as an event.

    Raises:
        SimulationError: The text is not ``NAME@OFFSET`` with a duration such as 3h or 2d 4h.
    """
    match = _EVENT_SPEC.match(text)
    if not match:
        raise SimulationError(f"--event {text!r}: expected NAME@OFFSET such as order_placed@+3h")
    name, offset = match.group(1), match.group(2)
    try:
        seconds = parse_duration(offset) if offset else 0
    except DurationError as err:
        raise SimulationError(f"--event {text!r}: {err}") from None
    if seconds < 0:
        raise SimulationError(f"--event {text!r}: the offset must not be negative")
    return ScheduledEvent(name=name, offset_seconds=seconds)


def load_customer(path: Path) -> SimCustomer:
    """Read a customer file (YAML or JSON).

    The file holds ``id`` (default: the file name), ``profile``, optional ``consent``
    (``{sms: false}``), ``stage``, ``events`` (properties per event name, used whenever the
    simulation sends that event) and ``schedule`` (``order_placed@+3h`` strings, or mappings
    with ``event``, ``at`` and ``properties``).

    Raises:
        SimulationError: The file is missing, does not parse, or has the wrong shape.
    """
    shown = str(path)
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SimulationError(f"{shown}: cannot read the customer file ({err.strerror})") from None
    except YAMLError as err:
        raise SimulationError(f"{shown}: not valid YAML or JSON: {err}") from None
    if not isinstance(data, dict):
        raise SimulationError(f"{shown}: expected a mapping with profile, events and schedule")
    unknown = sorted(set(data) - {"id", "profile", "consent", "stage", "events", "schedule"})
    if unknown:
        raise SimulationError(
            f"{shown}: unknown keys {', '.join(unknown)} "
            "(expected id, profile, consent, stage, events, schedule)"
        )
    return SimCustomer(
        id=str(data.get("id") or path.stem),
        profile=_mapping(data.get("profile"), f"{shown}: profile"),
        consent=_consent(data.get("consent"), shown),
        stage=str(data["stage"]) if data.get("stage") else None,
        events={
            str(name): _mapping(props, f"{shown}: events.{name}")
            for name, props in _mapping(data.get("events"), f"{shown}: events").items()
        },
        schedule=tuple(_scheduled(item, shown) for item in _list(data.get("schedule"), shown)),
        source=shown,
    )


def _plain(value: Any) -> Any:
    """YAML dates and timestamps as ISO strings, so the profile is plain JSON."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SimulationError(f"{where}: expected a mapping")
    plain: dict[str, Any] = _plain(value)
    return plain


def _list(value: Any, shown: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SimulationError(f"{shown}: schedule: expected a list such as [order_placed@+3h]")
    return value


def _consent(value: Any, shown: str) -> dict[str, bool]:
    consent = _mapping(value, f"{shown}: consent")
    for topic, granted in consent.items():
        if topic not in _CONSENT_TOPICS or not isinstance(granted, bool):
            raise SimulationError(
                f"{shown}: consent.{topic}: expected email, sms or marketing set to true or false"
            )
    return consent


def _scheduled(item: Any, shown: str) -> ScheduledEvent:
    if isinstance(item, str):
        return parse_event_spec(item)
    if not isinstance(item, dict) or "event" not in item:
        raise SimulationError(
            f"{shown}: schedule: each entry is NAME@OFFSET or {{event: NAME, at: +3h}}"
        )
    spec = parse_event_spec(f"{item['event']}@{item.get('at') or 0}")
    properties = _mapping(item.get("properties"), f"{shown}: schedule: {item['event']}")
    return dataclasses.replace(spec, properties=properties)


# --- capturing senders -------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturedMessage:
    """A rendered message the simulation kept instead of delivering."""

    key: str
    channel: Channel
    to: str
    subject: str = ""
    preheader: str = ""
    text: str = ""
    segments: int = 0


class CapturingEmailSender:
    """An :class:`EmailSender` that keeps each rendered email, keyed by message key."""

    name = PROVIDER

    def __init__(self, store: dict[str, CapturedMessage]) -> None:
        """Keep messages in ``store`` (shared with the SMS sender)."""
        self.store = store

    async def send_email(self, message: EmailMessage) -> Receipt:
        """Keep ``message``; nothing leaves the process."""
        self.store[message.key] = CapturedMessage(
            key=message.key,
            channel=Channel.email,
            to=message.to,
            subject=message.subject,
            preheader=message.preheader,
            text=message.text,
        )
        return Receipt(
            provider=PROVIDER, provider_id=f"sim-{len(self.store)}", key=message.key,
            channel=Channel.email, duplicate=False,
        )  # fmt: skip


class CapturingSmsSender:
    """An :class:`SmsSender` that keeps each rendered SMS, keyed by message key."""

    name = PROVIDER

    def __init__(self, store: dict[str, CapturedMessage]) -> None:
        """Keep messages in ``store`` (shared with the email sender)."""
        self.store = store

    async def send_sms(self, message: SmsMessage) -> Receipt:
        """Keep ``message``; nothing leaves the process."""
        self.store[message.key] = CapturedMessage(
            key=message.key,
            channel=Channel.sms,
            to=message.to,
            text=message.body,
            segments=message.segments,
        )
        return Receipt(
            provider=PROVIDER, provider_id=f"sim-{len(self.store)}", key=message.key,
            channel=Channel.sms, duplicate=False,
        )  # fmt: skip


# --- the timeline ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened, ``offset_seconds`` after the simulation started.

    ``kind`` is one of: event, start, restart, branch, split, wait, wait_for, send, deferred,
    blocked, cap, failed, held_out, set, action, goto, goal, exit, end, horizon, not_entered.
    """

    at: datetime
    offset_seconds: int
    kind: str
    step: str
    what: str
    message: CapturedMessage | None = None


@dataclass(frozen=True)
class Timeline:
    """What one customer experienced in one journey, in order."""

    journey: str
    version: str
    customer_id: str
    timezone: str
    start: datetime
    horizon: datetime
    entries: tuple[TimelineEntry, ...]
    outcome: str | None
    converted: bool
    stage: str | None
    ledger: tuple[LedgerEntry, ...]

    def local(self, at: datetime) -> datetime:
        """``at`` in the customer's timezone."""
        return at.astimezone(policy.zone(self.timezone))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for tooling (``kairos simulate --json``)."""
        return {
            "journey": self.journey,
            "version": self.version,
            "customer_id": self.customer_id,
            "timezone": self.timezone,
            "start": _iso(self.local(self.start)),
            "horizon": _iso(self.local(self.horizon)),
            "outcome": self.outcome,
            "converted": self.converted,
            "stage": self.stage,
            "timeline": [self._entry_json(e) for e in self.entries],
            "ledger": [e.model_dump(mode="json") for e in self.ledger],
        }

    def _entry_json(self, entry: TimelineEntry) -> dict[str, Any]:
        data: dict[str, Any] = {
            "after": format_offset(entry.offset_seconds),
            "offset_minutes": round(entry.offset_seconds / 60),
            "local_time": _iso(self.local(entry.at)),
            "kind": entry.kind,
            "step": entry.step,
            "what": entry.what,
        }
        if entry.message is not None:
            data["message"] = dataclasses.asdict(entry.message) | {
                "channel": entry.message.channel.value
            }
        return data


def format_offset(seconds: int) -> str:
    """Time since the start as ``+2d 03:15`` (to the minute)."""
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 24 * 60)
    return f"+{days}d {rest // 60:02d}:{rest % 60:02d}"


def _iso(at: datetime) -> str:
    return at.replace(second=0, microsecond=0).isoformat()


# --- the engine ------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _quiet_runtime() -> Runtime:
    """A Temporal runtime that logs only errors: the simulator's output is the timeline."""
    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


async def simulate(
    project: Project,
    settings: Settings,
    journey: str,
    customer: SimCustomer,
    *,
    events: tuple[ScheduledEvent, ...] = (),
    days: int = DEFAULT_DAYS,
    start: str = DEFAULT_START,
    call_webhooks: bool = False,
) -> Timeline:
    """Run ``journey`` for ``customer`` for ``days`` simulated days and return the timeline.

    Args:
        project: The compiled project; only ``journey`` is run.
        settings: Quiet hours, caps and sender details; providers and task queue are replaced.
        journey: The journey's name.
        customer: Profile, consent, event properties and scheduled events.
        events: More scheduled events (``--event``), merged with the customer file's.
        days: How long to simulate after the start.
        start: ``HH:MM`` (next such local time), ``now``, or a local ISO date-time to come.
        call_webhooks: Let webhook actions call their URLs. Off, a journey with webhooks is
            refused: the simulation would call them for real.

    Raises:
        SimulationError: The journey is unknown, calls webhooks, or the customer or events
            are not valid.
    """
    plan = project.plans.get(journey)
    if plan is None:
        known = ", ".join(sorted(project.plans)) or "none"
        raise SimulationError(f"no journey named {journey!r} (journeys: {known})")
    hooks = [s.id for s in plan.steps.values() if isinstance(s, ActionStep) and s.webhook]
    if hooks and not call_webhooks:
        raise SimulationError(
            f"{journey} calls webhooks ({', '.join(hooks)}), which a simulation would call for "
            "real: point them at a test endpoint and pass --call-webhooks"
        )
    schedule = _schedule(project.catalogue, (*customer.schedule, *events), days)
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(temporal_binary("temporal-test-server")),
        data_converter=pydantic_data_converter,
        runtime=_quiet_runtime(),
    )
    async with env:
        await register_search_attributes(env.client)
        timezone = customer_timezone(project.catalogue, customer)
        begin = resolve_start(start, await env.get_current_time(), timezone)
        await sleep_until(env, begin)
        begin = await env.get_current_time()
        run = _Simulation(env, project, settings, plan, customer, schedule, begin)
        return await run.run(days)


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


def customer_timezone(catalogue: Catalogue, customer: SimCustomer) -> str:
    """The customer's IANA timezone from their profile; UTC when they have none."""
    attribute = catalogue.attribute_of_type(AttrType.timezone)
    value = customer.profile.get(attribute) if attribute else None
    return value if isinstance(value, str) and value else "UTC"


async def sleep_until(env: WorkflowEnvironment, at: datetime) -> None:
    """Skip the test server's clock forward to ``at`` (never back)."""
    remaining = at - await env.get_current_time()
    if remaining > timedelta(0):
        await env.sleep(remaining)


@dataclass
class _Run:
    """What one run (one Temporal execution) of the journey recorded, as last seen."""

    run_id: str
    started: datetime
    records: list[StepRecord]
    messages: list[SendOutcome]
    closed: datetime | None = None
    outcome: str | None = None
    converted: bool = False
    waiting: str = ""
    step: str | None = None


class _Simulation:
    """One simulation: a private server, a worker, one customer, one journey."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        project: Project,
        settings: Settings,
        plan: JourneyPlan,
        customer: SimCustomer,
        schedule: tuple[ScheduledEvent, ...],
        start: datetime,
    ) -> None:
        self.env = env
        self.client: Client = env.client
        self.project = dataclasses.replace(project, plans={plan.name: plan})
        self.catalogue: Catalogue = project.catalogue
        self.settings = settings
        self.plan = plan
        self.customer = customer
        self.schedule = schedule
        self.captured: dict[str, CapturedMessage] = {}
        self.runs: dict[str, _Run] = {}
        self.emitted: list[TimelineEntry] = []
        self.timezone = customer_timezone(project.catalogue, customer)
        self.start = start

    async def run(self, days: int) -> Timeline:
        horizon = self.start + timedelta(days=days)
        with tempfile.TemporaryDirectory(prefix="kairos-simulate-") as scratch:
            settings = dataclasses.replace(
                self.settings, outbox_dir=Path(scratch), task_queue="kairos-simulate"
            )
            email: EmailSender = CapturingEmailSender(self.captured)
            sms: SmsSender = CapturingSmsSender(self.captured)
            worker = build_worker(self.client, settings, self.project, email=email, sms=sms)
            async with worker:
                kairos = Kairos(self.client, settings, self.project)
                entered = await self._enter(kairos)
                if entered:
                    await self._play_schedule(kairos, horizon)
                await self._sleep_until(horizon)
                if entered:
                    await self._settle()
                    await self._snapshot()
                view = await self._customer_view()
        return self._timeline(horizon, entered, view)

    # --- time --------------------------------------------------------------------------------

    async def _now(self) -> datetime:
        return await self.env.get_current_time()

    async def _sleep_until(self, at: datetime) -> None:
        await sleep_until(self.env, at)

    # --- the customer and their events -------------------------------------------------------

    async def _enter(self, kairos: Kairos) -> bool:
        """Seed the customer and fire the journey's trigger; False when it did not start."""
        profile = self._profile()
        trigger = self.plan.trigger
        if isinstance(trigger, DateTrigger):
            self._require_date(trigger, profile)
        try:
            await self._seed(kairos, profile)
            match trigger:
                case EventTrigger():
                    await self._emit(kairos, ScheduledEvent(trigger.event, 0), trigger=True)
                case ApiTrigger():
                    await kairos.start(self.plan.name, self.customer.id, profile)
                case DateTrigger():
                    pass  # identifying the customer (in _seed) set the date: routing started it
        except KairosError as err:
            raise SimulationError(f"{self.customer.source}: {err}") from None
        return await self._await_start()

    def _profile(self) -> dict[str, Any]:
        profile = resolve_relative(self.customer.profile, self.catalogue.profile, self.start)
        problems = self.catalogue.validate_profile(profile)
        if problems:
            raise SimulationError(f"{self.customer.source}: " + "; ".join(problems))
        return profile

    async def _seed(self, kairos: Kairos, profile: dict[str, Any]) -> None:
        await kairos.identify(self.customer.id, profile)
        for topic, granted in self.customer.consent.items():
            await kairos.unsubscribe(self.customer.id, topic, granted=granted, source="simulation")
        if self.customer.stage:
            entity = self.client.get_workflow_handle(customer_workflow_id(self.customer.id))
            await entity.signal(SIGNAL_PROFILE, ProfileChange(stage=self.customer.stage))

    def _require_date(self, trigger: DateTrigger, profile: dict[str, Any]) -> None:
        if profile.get(trigger.attribute) is None:
            offset = format_duration(trigger.offset_seconds)
            raise SimulationError(
                f"{self.customer.source}: {self.plan.name} starts {offset} after "
                f"customer.{trigger.attribute}: give the profile a {trigger.attribute} "
                f"(for example `now-{offset}` to start it at once)"
            )

    async def _await_start(self) -> bool:
        handle = self._journey_handle()
        for _ in range(_START_POLLS):
            try:
                await handle.describe()
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
                await asyncio.sleep(_POLL_SECONDS)
                continue
            return True
        return False

    async def _settle(self) -> None:
        """Let a send or action that began at the horizon finish before the worker stops.

        A stopping worker no longer runs the customer entity that a send is waiting for.
        """
        handle = self._journey_handle()
        for _ in range(_START_POLLS):
            described = await handle.describe()
            if not described.raw_description.pending_activities:
                return
            await asyncio.sleep(_POLL_SECONDS)

    def _journey_handle(self) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(
            journey_workflow_id(self.plan.name, self.customer.id)
        )

    async def _play_schedule(self, kairos: Kairos, horizon: datetime) -> None:
        for event in self.schedule:
            at = self.start + timedelta(seconds=event.offset_seconds)
            if at > horizon:
                break
            await self._sleep_until(at)
            # Before the event: a restart would begin a new run and drop this one's records.
            await self._snapshot()
            try:
                await self._emit(kairos, event)
            except KairosError as err:
                where = f"{event.name}@{format_offset(event.offset_seconds)}"
                raise SimulationError(f"{where}: {err}") from None

    async def _emit(self, kairos: Kairos, event: ScheduledEvent, *, trigger: bool = False) -> None:
        at = await self._now()
        properties = self._event_properties(event, at)
        await kairos.emit(
            self.customer.id,
            event.name,
            properties,
            event_id=f"simulation:{event.name}:{event.offset_seconds}",
            timestamp=at,
        )
        what = f"event {event.name}" + (" (the trigger)" if trigger else "")
        self.emitted.append(TimelineEntry(at, self._offset(at), "event", "", what))

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
            if attr.type in _DATES:
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

    # --- what the run recorded ---------------------------------------------------------------

    async def _snapshot(self) -> None:
        """Remember what the journey's latest run has recorded so far."""
        handle = self._journey_handle()
        try:
            described = await handle.describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return
            raise
        run_id, started = described.run_id, described.start_time
        if described.status is WorkflowExecutionStatus.COMPLETED:
            run = self.client.get_workflow_handle(
                handle.id, run_id=run_id, result_type=JourneyResult
            )
            result = await run.result(follow_runs=False)
            seen = _Run(
                run_id,
                started,
                result.records,
                result.messages,
                closed=described.close_time,
                outcome=result.outcome,
                converted=result.converted,
            )
        else:
            query = self.client.get_workflow_handle(handle.id, run_id=run_id)
            status = await query.query(QUERY_STATE, result_type=JourneyStatus)
            outcome = None
            if described.status not in (WorkflowExecutionStatus.RUNNING, None):
                outcome = described.status.name.lower()
            seen = _Run(
                run_id,
                started,
                status.records,
                status.messages,
                closed=described.close_time,
                outcome=outcome,
                waiting=status.waiting,
                step=status.step,
            )
        self.runs[run_id] = seen

    async def _customer_view(self) -> CustomerView | None:
        entity = self.client.get_workflow_handle(customer_workflow_id(self.customer.id))
        try:
            view: CustomerView = await entity.query(QUERY_STATE, result_type=CustomerView)
        except RPCError:
            return None
        return view

    # --- building the timeline ---------------------------------------------------------------

    def _offset(self, at: datetime) -> int:
        return int((at - self.start).total_seconds())

    def _timeline(self, horizon: datetime, entered: bool, view: CustomerView | None) -> Timeline:
        entries = list(self.emitted)
        entries.extend(self._run_entries())
        entries.append(self._last_entry(horizon, entered))
        order = {"event": 0, "start": 1, "restart": 1}
        entries.sort(key=lambda e: (e.at, order.get(e.kind, 2)))
        last = list(self.runs.values())[-1] if self.runs else None
        ledger = tuple(e for e in view.ledger if e.journey == self.plan.name) if view else ()
        return Timeline(
            journey=self.plan.name,
            version=self.plan.version,
            customer_id=self.customer.id,
            timezone=self.timezone,
            start=self.start,
            horizon=horizon,
            entries=tuple(entries),
            outcome=last.outcome if last else None,
            converted=any(r.converted for r in self.runs.values()),
            stage=view.stage if view else None,
            ledger=ledger,
        )

    def _run_entries(self) -> Iterator[TimelineEntry]:
        previous: _Run | None = None
        for run in self.runs.values():
            records, messages = run.records, run.messages
            # Continued-as-new with its state (a long history) carries the records over; a
            # restart begins with none.
            carried = (
                previous is not None
                and bool(previous.records)
                and records[: len(previous.records)] == previous.records
            )
            if previous is not None and carried:
                records = records[len(previous.records) :]
                messages = messages[len(previous.messages) :]
            elif previous is not None:
                yield self._entry(run.started, "restart", "", self._restarted())
            else:
                yield self._entry(run.started, "start", "", f"entered {self._why()}")
            yield from self._record_entries(records, messages)
            previous = run

    def _restarted(self) -> str:
        trigger = self.plan.trigger
        if isinstance(trigger, EventTrigger):
            return f"restarted on {trigger.event}: the journey begins again"
        return "restarted: the journey begins again"

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

    def _record_entries(
        self, records: list[StepRecord], messages: list[SendOutcome]
    ) -> Iterator[TimelineEntry]:
        outcomes = iter(messages)
        for record in records:
            step = self.plan.steps.get(record.step)
            if record.kind == "send" and isinstance(step, SendStep):
                deferred = record.outcome.startswith("deferred")
                outcome = None if deferred else next(outcomes, None)
                yield self._send_entry(record, step, outcome)
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
        kind = {"sent": "send", "held_out": "held_out"}.get(outcome.status, outcome.status)
        if outcome.status == "blocked" and outcome.reason.startswith("frequency cap"):
            kind = "cap"
        detail = {
            "sent": "sent",
            "held_out": "not sent: holdout group",
        }.get(outcome.status, f"{outcome.status}: {outcome.reason}")
        what = f"{channel} {detail}"
        message = self.captured.get(outcome.key) if outcome.status == "sent" else None
        return self._entry(record.at, kind, step.id, what, message)

    def _last_entry(self, horizon: datetime, entered: bool) -> TimelineEntry:
        if not entered:
            at = self.emitted[-1].at if self.emitted else self.start
            return self._entry(at, "not_entered", "", self._not_entered())
        last = list(self.runs.values())[-1]
        if last.outcome is None:
            where = last.waiting or f"at step {last.step}"
            return self._entry(horizon, "horizon", last.step or "", f"still running: {where}")
        converted = " (converted)" if last.converted and last.outcome != "converted" else ""
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


def describe_record(record: StepRecord, step: PlanStep | None) -> tuple[str, str]:
    """The timeline kind and a sentence for one step record (sends aside)."""
    match record.kind:
        case "wait":
            return "wait", f"waited: {record.outcome}"
        case "wait_for" if isinstance(step, WaitForStep):
            names = " or ".join(o.event for o in step.events)
            return "wait_for", f"wait {format_duration(step.timeout_seconds)} for {names}: " + (
                record.outcome
            )
        case "set" if isinstance(step, SetStep):
            return "set", set_text(step)
        case "action" if isinstance(step, ActionStep):
            return "action", f"action {record.outcome}"
        case "exit" if record.outcome.startswith("goal "):
            return "goal", f"goal reached: {record.outcome.removeprefix('goal ')} (converted)"
        case "exit":
            return "exit", f"exit: {record.outcome}"
        case "goto":
            return "goto", f"goto {record.outcome.removeprefix('to ')}"
        case kind:
            return kind, f"{kind}: {record.outcome}"


def set_text(step: SetStep) -> str:
    """``set stage → retention, onboarded = True, lead_score +10``."""
    parts = [f"stage → {step.stage.value}"] if step.stage else []
    parts += [f"{name} = {value}" for name, value in step.attributes.items()]
    parts += [f"{name} {amount:+g}" for name, amount in step.increment.items()]
    return "set " + ", ".join(parts)


def resolve_start(spec: str, now: datetime, timezone: str) -> datetime:
    """When the simulation starts, in UTC.

    Args:
        spec: ``now``; ``HH:MM`` for the next such time on the customer's clock; or a local
            date (``2030-03-04``, taken at 09:00) or date-time (``2030-03-04T09:00``) to come.
        now: The test server's current time.
        timezone: The customer's IANA timezone.

    Raises:
        SimulationError: The spec does not parse, or names a moment already past.
    """
    text = spec.strip()
    if text.lower() == "now":
        return now
    if _HHMM.match(text):
        return policy.next_time_of_day(now, text, timezone)
    try:
        parsed = datetime.fromisoformat(text if "T" in text else f"{text}T{DEFAULT_START}")
    except ValueError:
        raise SimulationError(
            f"--start {spec!r}: expected now, HH:MM (such as 09:00) or a local date-time "
            "such as 2030-03-04T09:00"
        ) from None
    at = parsed if parsed.tzinfo else parsed.replace(tzinfo=policy.zone(timezone))
    if at <= now:
        raise SimulationError(
            f"--start {spec!r} is in the past: the simulator's clock starts at the real now "
            "and only runs forward (use HH:MM, or a date to come)"
        )
    return at


def resolve_relative(
    values: Mapping[str, Any], spec: Mapping[str, Attribute], base: datetime
) -> dict[str, Any]:
    """Replace ``now``, ``now-60d``, ``now+2h`` in date attributes by ISO times from ``base``.

    Raises:
        SimulationError: A relative value has an unreadable duration.
    """
    resolved = dict(values)
    for name, value in values.items():
        attr = spec.get(name)
        if attr is None or attr.type not in _DATES or not isinstance(value, str):
            continue
        match = _RELATIVE.match(value.strip())
        if not match:
            continue
        sign, amount = match.group(1), match.group(2)
        try:
            seconds = parse_duration(amount) if amount else 0
        except DurationError as err:
            raise SimulationError(f"{name}: {value!r}: {err}") from None
        at = base + timedelta(seconds=-seconds if sign == "-" else seconds)
        resolved[name] = at.date().isoformat() if attr.type is AttrType.date else at.isoformat()
    return resolved
