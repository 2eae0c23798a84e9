"""The runtime contract: workflow ids, signal and update names, and the payloads they carry.

Everything here is part of the public integration surface (docs/integration.md): a product
written in any language with a Temporal SDK can emit events by signal-with-start on
``customer:<id>`` with the ``event`` signal and an :class:`Event` as JSON.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from temporalio.common import SearchAttributeKey

from kairos.messages import PolicyDecision, SendOutcome
from kairos.plan import Category, Channel, JourneyPlan, Webhook

CUSTOMER_WORKFLOW = "Customer"
JOURNEY_WORKFLOW = "Journey"

# Signals, updates and queries, by the names other languages use.
SIGNAL_EVENT = "event"
SIGNAL_IDENTIFY = "identify"
SIGNAL_CONSENT = "consent"
SIGNAL_FORGET = "forget"
SIGNAL_PROFILE = "update_profile"
SIGNAL_RECORD = "record_message"
SIGNAL_TRIGGER = "trigger"
UPDATE_RESERVE = "reserve_send"
QUERY_STATE = "state"

# Custom search attributes: ids and names only, never personal data (stored unencrypted).
SA_CUSTOMER = SearchAttributeKey.for_keyword("KairosCustomerId")
SA_JOURNEY = SearchAttributeKey.for_keyword("KairosJourney")
SA_VERSION = SearchAttributeKey.for_keyword("KairosJourneyVersion")
SA_STEP = SearchAttributeKey.for_keyword("KairosStep")
SA_STAGE = SearchAttributeKey.for_keyword("KairosStage")
SA_OUTCOME = SearchAttributeKey.for_keyword("KairosOutcome")
SEARCH_ATTRIBUTES = (SA_CUSTOMER, SA_JOURNEY, SA_VERSION, SA_STEP, SA_STAGE, SA_OUTCOME)


def customer_workflow_id(customer_id: str) -> str:
    return f"customer:{customer_id}"


def journey_workflow_id(journey: str, customer_id: str) -> str:
    return f"journey:{journey}:{customer_id}"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Event(Model):
    """Something a customer did. ``id`` makes delivery idempotent: the same id is handled once."""

    id: str
    name: str
    properties: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime | None = None


class Consent(Model):
    """Opt-ins per channel and per category. Transactional messages ignore ``marketing``."""

    email: bool = True
    sms: bool = True
    marketing: bool = True
    transactional: bool = True


class LedgerEntry(Model):
    """One message the entity decided on: sent, blocked, deferred or failed, and why."""

    key: str
    journey: str
    step: str
    channel: Channel
    category: Category
    status: str
    reason: str = ""
    at: datetime


class CustomerState(Model):
    """What the customer entity carries across continue-as-new."""

    profile: dict[str, Any] = Field(default_factory=dict)
    stage: str | None = None
    consent: Consent = Field(default_factory=Consent)
    ledger: list[LedgerEntry] = Field(default_factory=list)
    seen_event_ids: list[str] = Field(default_factory=list)
    entered: dict[str, datetime] = Field(default_factory=dict)
    pending: list[Event] = Field(default_factory=list)


# Continue-as-new well before Temporal's limits (50K events / 50 MB), keeping replays fast.
MAX_HISTORY_EVENTS = 10_000


class CustomerInput(Model):
    customer_id: str
    state: CustomerState | None = None
    max_history: int = MAX_HISTORY_EVENTS


class ConsentChange(Model):
    """Opt a customer in or out of a channel (email, sms) or category (marketing)."""

    topic: str
    granted: bool
    source: str = ""


class ProfileChange(Model):
    """A journey's ``set`` step, applied by the entity."""

    attributes: dict[str, Any] = Field(default_factory=dict)
    increment: dict[str, float] = Field(default_factory=dict)
    stage: str | None = None


class MessageRecord(Model):
    """A failure after a send was allowed, recorded in the entity's ledger for support."""

    key: str
    status: str
    reason: str = ""


class CapRule(Model):
    channel: Channel
    limit: int
    window_seconds: int


class SendRequest(Model):
    """Ask the entity whether a message may go out now (and on which channel)."""

    key: str
    journey: str
    step: str
    channels: tuple[Channel, ...]
    category: Category
    priority: int = 50
    quiet_hours: tuple[str, str] | None = None
    caps: tuple[CapRule, ...] = ()
    email_attribute: str | None = None
    phone_attribute: str | None = None
    timezone_attribute: str | None = None


class ReserveResult(Model):
    """The decision, and the channel chosen when a fallback was possible."""

    decision: PolicyDecision
    channel: Channel | None = None


class CustomerView(Model):
    """The answer to the entity's ``state`` query: what support sees."""

    customer_id: str
    profile: dict[str, Any]
    stage: str | None
    consent: Consent
    ledger: list[LedgerEntry]
    entered: dict[str, datetime]
    forgotten: bool = False


class StepRecord(Model):
    """One step a run took: when, and what came of it."""

    step: str
    kind: str
    at: datetime
    outcome: str = ""


class RoutedEvent(Model):
    """An event as a running journey receives it, with the profile as the entity knows it."""

    event: Event
    profile: dict[str, Any] = Field(default_factory=dict)


class ActionRequest(Model):
    """Input of the action activity: a registered action or a webhook, arguments rendered."""

    key: str
    customer_id: str
    journey: str
    step: str
    action: str | None = None
    webhook: Webhook | None = None
    args: dict[str, Any] = Field(default_factory=dict)


class JourneyState(Model):
    """A run's place, carried across continue-as-new."""

    step: str | None
    run_key: str = ""
    records: list[StepRecord] = Field(default_factory=list)
    vars: dict[str, Any] = Field(default_factory=dict)
    visits: dict[str, int] = Field(default_factory=dict)
    variant: str | None = None
    held_out: bool = False
    event: Event | None = None
    started_at: datetime | None = None


class JourneyInput(Model):
    """Start a journey: the plan (pinning the run to its version), whom for, and why."""

    plan: JourneyPlan
    customer_id: str
    profile: dict[str, Any] = Field(default_factory=dict)
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
    step: str | None
    waiting: str
    variant: str | None
    held_out: bool
    records: list[StepRecord]
    messages: list[SendOutcome]


class DeliverRequest(Model):
    """Input of the send activity: everything it needs to reserve, render and deliver."""

    key: str
    customer_id: str
    journey: str
    journey_version: str
    step: str
    channel: Channel
    fallback: Channel | None = None
    template: str
    category: Category
    priority: int = 50
    quiet_hours: tuple[str, str] | None = None
    ignore_quiet_hours: bool = False
    default_locale: str = "en"
    context: dict[str, Any] = Field(default_factory=dict)


class RouteRequest(Model):
    """Input of the routing activity: one event, and what the entity knows."""

    customer_id: str
    event: Event
    profile: dict[str, Any]
    stage: str | None
    consent: Consent
    entered: dict[str, datetime]


class RouteResult(Model):
    """What routing did: profile attributes the event sets, journeys started and signalled."""

    profile_updates: dict[str, Any] = Field(default_factory=dict)
    started: list[str] = Field(default_factory=list)
    signalled: list[str] = Field(default_factory=list)
    rejected: str = ""
