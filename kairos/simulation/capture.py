"""Senders that keep each rendered message instead of delivering it: the simulation's
provider, plugged in where SendGrid, Twilio or the outbox would be."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kairos.messages import EmailMessage, Receipt, SmsMessage
from kairos.plan import (
    Channel,
)

if TYPE_CHECKING:
    pass

PROVIDER = "simulation"


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
