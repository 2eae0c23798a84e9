"""The runtime contract: workflow ids, signal and query names, and the payloads they carry.

Customers live in PostgreSQL (:mod:`kairos.store`); Temporal runs journeys. Product code in any
language sends events over HTTP (``POST /v1/track``, docs/integration.md), never to Temporal
directly: the store records each event once and makes the Temporal calls it decides on.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio.common import SearchAttributeKey

from kairos.language.plan import Category, Channel, JourneyPlan, StepKind, Webhook
from kairos.messages.models import SendOutcome, SendStatus

JOURNEY_WORKFLOW = "Journey"

# Signals and queries of a journey run.
SIGNAL_EVENT = "event"
QUERY_STATE = "state"

# Custom search attributes: ids and names only, never personal data (stored unencrypted).
SA_CUSTOMER = SearchAttributeKey.for_keyword("KairosCustomerId")
SA_JOURNEY = SearchAttributeKey.for_keyword("KairosJourney")
SA_VERSION = SearchAttributeKey.for_keyword("KairosJourneyVersion")
SA_STEP = SearchAttributeKey.for_keyword("KairosStep")
SA_STAGE = SearchAttributeKey.for_keyword("KairosStage")
SA_OUTCOME = SearchAttributeKey.for_keyword("KairosOutcome")
SEARCH_ATTRIBUTES = (SA_CUSTOMER, SA_JOURNEY, SA_VERSION, SA_STEP, SA_STAGE, SA_OUTCOME)
# A wait at least this long shows its step in KairosStep (one billable upsert), so support can
# find who waits there; a shorter one shows it in the run's current details only, which are
# free and which the Temporal UI and `kairos customer` show.
SEARCHABLE_WAIT_SECONDS = 3600
# What the send activity may answer that does not settle the message for good: deferred, sent
# by another channel, or the run cancelled. A send carrying the run's end records it otherwise.
UNSETTLED_SENDS = frozenset({SendStatus.rerouted, SendStatus.deferred, SendStatus.cancelled})


def journey_workflow_id(journey: str, customer_id: str, run_no: int) -> str:
    """The workflow id of a customer's ``run_no``-th run of a journey (1, 2, ...).

    One id per run, so starting a run is idempotent for good: a start repeated after a crash
    finds the run it already started, even when that run has ended.
    """
    return f"journey:{journey}:{customer_id}:{run_no}"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Event(Model):
    """Something a customer did. ``id`` makes delivery idempotent: the same id is handled once."""

    id: str
    name: str
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None


class Consent(Model):
    """Consent as conditions and policy see it. Opt-in: a customer has no marketing or SMS
    consent until an event or call grants it. Email needs none for transactional messages, so
    ``email`` is true until withdrawn (an opt-out or a bounce). Transactional messages ignore
    ``marketing``."""

    email: bool = True
    sms: bool = False
    marketing: bool = False
    transactional: bool = True


# Continue-as-new well before Temporal's limits (50K events / 50 MB), keeping replays fast.
MAX_HISTORY_EVENTS = 10_000


class RunOutcome(StrEnum):
    """How a run ended, as ``runs.outcome`` in the store and the run's end record hold it. An
    exit step ends a run with its own word instead (``exit: lapsed``), so an outcome read from
    the store is one of these or an exit's name."""

    completed = "completed"  # the plan ran to its end
    converted = "converted"  # the journey's goal event arrived
    restarted = "restarted"  # the trigger fired again and a new run took this one's place
    cancelled = "cancelled"  # support cancelled it (kairos cancel, forget)


class StepRecord(Model):
    """One step a run took: when, and what came of it."""

    step: str
    kind: StepKind
    at: datetime
    outcome: str = ""


class ProfileSnapshot(Model):
    """The profile attributes a run reads, as of store version ``version``.

    A run keeps the newest snapshot it has seen: a signal made from an older read never
    overwrites what a later ``set`` step wrote.
    """

    version: int = 0
    values: dict[str, Any] = Field(default_factory=dict)


class RunSignal(Model):
    """What the store tells a running journey: an event it listens to, a newer profile, or
    (``restart``) that its trigger fired again and a new run has taken its place."""

    event: Event | None = None
    profile: ProfileSnapshot | None = None
    restart: bool = False


class RunEnd(Model):
    """How a run ended, recorded in the store (which then lets ``after_exit`` enter again)."""

    customer_id: str
    journey: str
    run_no: int
    outcome: str
    problems: list[str] = Field(default_factory=list)
    goal_event: str | None = None  # the id of the event that converted it
    # What the report counts (kept in the store with the end): the run's step records (its
    # latest, when it looped for long), the split variant it took and whether that was the
    # holdout. A run recorded before these were sent has none.
    records: list[StepRecord] = Field(default_factory=list)
    variant: str | None = None
    held_out: bool = False
    # When a send's activity records the end: the records of the gotos and exit that follow
    # it, which go after the send's own record (known only once it is sent).
    tail: list[StepRecord] = Field(default_factory=list)

    def after(self, last: StepRecord) -> RunEnd:
        """This end with ``last``, the record of the step whose activity records it, in place."""
        return self.model_copy(update={"records": [*self.records, last, *self.tail], "tail": []})


def send_record(step: str, outcome: SendOutcome, at: datetime) -> StepRecord:
    """What a run records of a send step: the channel and what came of it."""
    detail = outcome.status if not outcome.reason else f"{outcome.status}: {outcome.reason}"
    return StepRecord(
        step=step, kind=StepKind.send, at=at, outcome=f"{outcome.channel.value} {detail}"
    )


class ActionRequest(Model):
    """Input of the action activity: a registered action or a webhook, arguments rendered."""

    key: str
    customer_id: str
    journey: str
    step: str
    action: str | None = None
    webhook: Webhook | None = None
    args: dict[str, Any] = Field(default_factory=dict)


class ProfileChange(Model):
    """A journey's ``set`` step, written to the store once per ``key``.

    ``reads`` are the attributes the run wants back, so a condition after the step sees the
    stored result (an increment applied to the current value, not to the run's copy).
    """

    key: str
    customer_id: str
    journey: str
    run_no: int
    attributes: dict[str, Any] = Field(default_factory=dict)
    increment: dict[str, float] = Field(default_factory=dict)
    stage: str | None = None
    reads: list[str] = Field(default_factory=list)
    # The run ends right after this step: the activity records the end too (one action less).
    end: RunEnd | None = None


class RunProblems(Model):
    """What a run could not evaluate or render (and did instead), recorded in the store."""

    customer_id: str
    journey: str
    run_no: int
    problems: list[str]


class EventRequest(Model):
    """An event to accept for a customer from inside Temporal (simulations and tests)."""

    customer_id: str
    event: Event


class JourneyState(Model):
    """A run's place, carried across continue-as-new."""

    step: str | None
    records: list[StepRecord] = Field(default_factory=list)
    messages: list[SendOutcome] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)
    visits: dict[str, int] = Field(default_factory=dict)
    variant: str | None = None
    held_out: bool = False
    event: Event | None = None
    started_at: datetime | None = None
    # Event ids this run has heard (a repeated signal is ignored), newest last, bounded.
    seen_events: list[str] = Field(default_factory=list)
    # Events that arrived and were not yet taken by a wait_for step.
    inbox: list[Event] = Field(default_factory=list)
    # Conditions or values the run could not evaluate, and how many the store has heard of.
    problems: list[str] = Field(default_factory=list)
    problems_reported: int = 0
    # A date trigger's first wait is over (or there is none to make).
    trigger_waited: bool = False
    # Continued as new in the middle of a wait: the step to resume, and the wait's deadline.
    resuming: bool = False
    deadline: datetime | None = None
    deadline_step: str | None = None


class JourneyInput(Model):
    """Start a journey: the plan (pinning the run to its version), whom for, and why."""

    plan: JourneyPlan
    customer_id: str
    run_no: int
    profile: ProfileSnapshot = Field(default_factory=ProfileSnapshot)
    trigger: Event | None = None
    state: JourneyState | None = None
    timezone_attribute: str | None = None
    max_history: int = MAX_HISTORY_EVENTS


class JourneyResult(Model):
    outcome: str
    converted: bool
    messages: list[SendOutcome] = Field(default_factory=list)
    records: list[StepRecord] = Field(default_factory=list)


class JourneyStatus(Model):
    """The answer to a run's ``state`` query."""

    journey: str
    version: str
    customer_id: str
    run_no: int
    step: str | None
    waiting: str
    variant: str | None
    held_out: bool
    records: list[StepRecord]
    messages: list[SendOutcome]


class DeliverRequest(Model):
    """Input of the send activity: everything it needs to decide, render and deliver."""

    key: str
    customer_id: str
    journey: str
    journey_version: str
    run_no: int
    step: str
    channel: Channel
    fallback: Channel | None = None
    template: str
    # The plan's pinned template tree (kairos.language.pinning); empty: the worker's current
    # templates.
    templates: str = ""
    category: Category
    priority: int = 50
    quiet_hours: tuple[str, str] | None = None
    ignore_quiet_hours: bool = False
    default_locale: str = "en"
    context: dict[str, Any] = Field(default_factory=dict)
    # The run ends right after this send: the activity records the end too once the message
    # is settled (sent, blocked, failed for good), not when it is deferred or rerouted.
    end: RunEnd | None = None


class FailedSend(Model):
    """A send the journey gave up on after its retries: recorded in the ledger as failed, or as
    unknown when a call may have reached the provider."""

    key: str
    customer_id: str
    reason: str
