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
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from temporalio.client import Client, WorkflowExecutionStatus
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
    SegmentTrigger,
    SendStep,
    SetStep,
    WaitForStep,
)
from kairos.runtime import (
    QUERY_STATE,
    Event,
    JourneyResult,
    JourneyStatus,
    ProfileChange,
    StepRecord,
)
from kairos.store import CustomerRecord, Database, MessageRecord, RunRecord, Store
from kairos.store.database import ensure_database
from kairos.store.embedded import temporary_server
from kairos.store.runs import runs_of
from kairos.store.support import customer_record
from kairos.temporal import register_search_attributes, with_keys
from kairos.yaml_source import load_data
from worker import build_worker, dispatcher
from workflows import schedule
from workflows.schedule import EventScheduleWorkflow

if TYPE_CHECKING:
    from typing_extensions import Unpack

DEFAULT_DAYS = 30
DEFAULT_START = "09:00"
PROVIDER = "simulation"
_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*(.+))?$", re.IGNORECASE)
_EVENT_SPEC = re.compile(r"^\s*([A-Za-z_$][\w$]*)\s*(?:@\s*\+?\s*(.+?))?\s*$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_DATES = (AttrType.datetime, AttrType.date)
_CONSENT_TOPICS = ("email", "sms", "marketing")
# How long (in real time) a send that began at the horizon may take to finish.
_SETTLE_POLLS = 100
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
        data = load_data(path.read_text(encoding="utf-8"), shown)
    except OSError as err:
        raise SimulationError(f"{shown}: cannot read the customer file ({err.strerror})") from None
    except ValueError as err:
        raise SimulationError(str(err)) from None
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
    deduplicates = True

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
    deduplicates = True

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
    ledger: tuple[MessageRecord, ...]
    runs: int = 0

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
            "runs": self.runs,
            "ledger": [_message_json(m) for m in self.ledger],
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


@dataclass(frozen=True)
class ProjectTimeline:
    """What one customer experienced from every journey of the project, run together."""

    customer_id: str
    timezone: str
    start: datetime
    horizon: datetime
    journeys: tuple[Timeline, ...]

    @property
    def entered(self) -> tuple[Timeline, ...]:
        """The journeys the customer entered, in name order."""
        return tuple(t for t in self.journeys if t.runs)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: each entered journey's timeline, and the names of the others."""
        zone = policy.zone(self.timezone)
        return {
            "customer_id": self.customer_id,
            "timezone": self.timezone,
            "start": _iso(self.start.astimezone(zone)),
            "horizon": _iso(self.horizon.astimezone(zone)),
            "journeys": [t.to_json() for t in self.entered],
            "not_entered": [t.journey for t in self.journeys if not t.runs],
        }


def _message_json(message: MessageRecord) -> dict[str, Any]:
    data = dataclasses.asdict(message) | {"channel": message.channel.value}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


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
            await sleep_until(self.env, horizon)
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

    # --- what the runs recorded --------------------------------------------------------------

    async def _settle(self) -> None:
        """Let a send or action that began at the horizon finish before the worker stops."""
        for run in await self._store_runs():
            handle = self.client.get_workflow_handle(run.workflow_id)
            for _ in range(_SETTLE_POLLS):
                try:
                    described = await handle.describe()
                except RPCError as err:
                    if err.status is not RPCStatusCode.NOT_FOUND:
                        raise
                    break
                if not described.raw_description.pending_activities:
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
        try:
            described = await handle.describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None  # decided in the store, never started in Temporal
            raise
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
        elif previous.outcome == "restarted":
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
            if record.kind == "send" and isinstance(step, SendStep):
                deferred = record.outcome.startswith("deferred")
                outcome = None if deferred else next(outcomes, None)
                yield self._send_entry(record, step, outcome)
            elif record.kind == "exit" and record.outcome.startswith("restarted"):
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

    def _last_entry(self, horizon: datetime, runs: list[_Run]) -> TimelineEntry:
        if not runs:
            at = self.emitted[0].at if self.emitted else self.start
            return self._entry(at, "not_entered", "", self._not_entered())
        last = runs[-1]
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


def _started(started: datetime | None, records: list[StepRecord]) -> datetime:
    """When a run began: its first execution's start (a long run continues as new)."""
    times = [t for t in (started, records[0].at if records else None) if t is not None]
    return min(times)


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
