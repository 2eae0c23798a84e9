"""What crosses the boundary between rendering, policy and delivery.

These are plain pydantic models so they travel through Temporal's pydantic data converter and
show up readably in the Temporal UI.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from kairos.language.plan import Category, Channel


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmailContent(Model):
    """A rendered email, before addressing."""

    subject: str
    preheader: str = ""
    html: str
    text: str
    locale: str


class SmsContent(Model):
    """A rendered SMS, with the encoding and segment count a carrier will see."""

    body: str
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int
    locale: str


class EmailMessage(Model):
    """An email ready for a provider: addressed, keyed, with headers."""

    key: str
    to: str
    from_email: str
    from_name: str = ""
    subject: str
    preheader: str = ""
    html: str
    text: str
    headers: dict[str, str] = Field(default_factory=dict)
    categories: tuple[str, ...] = ()
    # Carried to the provider (SendGrid custom_args) so webhooks can be matched to the run.
    metadata: dict[str, str] = Field(default_factory=dict)
    category: Category = Category.marketing


class SmsMessage(Model):
    key: str
    to: str  # E.164
    body: str
    encoding: str
    segments: int
    metadata: dict[str, str] = Field(default_factory=dict)
    category: Category = Category.marketing


class Receipt(Model):
    """What a provider answered for an accepted message."""

    provider: str
    provider_id: str
    key: str
    channel: Channel
    duplicate: bool = False  # the provider already had this key: not sent again


class Verdict(StrEnum):
    """The send transaction's policy decision for one message.

    ``hold`` keeps a cap's last slot undecided until the minute the message was due is over,
    so that a higher-priority message due in the same minute can win it.
    """

    send = "send"
    defer = "defer"
    hold = "hold"
    blocked = "blocked"


class PolicyDecision(Model):
    verdict: Verdict
    reason: str = ""
    defer_until: datetime | None = None


class SendStatus(StrEnum):
    """What the send activity (or the run, for a holdout) answers for one send step."""

    sent = "sent"
    blocked = "blocked"
    deferred = "deferred"  # quiet hours or a cap: the run waits and asks again
    failed = "failed"
    held_out = "held_out"  # the customer is in the split's holdout group: nothing sent
    rerouted = "rerouted"  # the channel fell back: the run sends it on the other channel
    cancelled = "cancelled"  # the run was cancelled before the provider was called
    unknown = "unknown"  # the provider call's outcome was never seen


class LedgerStatus(StrEnum):
    """A message's status in the store's ledger (the ``messages`` table's CHECK)."""

    pending = "pending"  # held for a cap's last slot until its minute is over
    deferred = "deferred"
    sending = "sending"  # reserved: the provider is (about to be) called
    sent = "sent"
    unknown = "unknown"
    blocked = "blocked"
    cancelled = "cancelled"
    failed = "failed"


class SendOutcome(Model):
    """What became of one send step's message: the result of the send activity."""

    key: str
    channel: Channel
    status: SendStatus
    reason: str = ""
    defer_until: datetime | None = None
    provider: str = ""
    provider_id: str = ""
    subject: str = ""
