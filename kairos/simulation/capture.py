"""Senders that keep each rendered message instead of delivering it: the simulation's
provider, plugged in where SendGrid, Twilio or the outbox would be."""

from __future__ import annotations

from dataclasses import dataclass

from kairos.language.plan import Channel
from kairos.messages.models import EmailMessage, Receipt, SmsMessage

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


class _Capturing:
    """What both capturing senders share: the one store of kept messages, keyed by message key."""

    name = PROVIDER
    deduplicates = True

    def __init__(self, store: dict[str, CapturedMessage]) -> None:
        """Keep messages in ``store`` (one for both channels)."""
        self.store = store


class CapturingEmailSender(_Capturing):
    """An :class:`EmailSender` that keeps each rendered email, keyed by message key."""

    async def send_email(self, message: EmailMessage) -> Receipt:
        """Keep ``message``; nothing leaves the process."""
        kept = CapturedMessage(
            message.key, Channel.email, message.to, message.subject, message.preheader,
            message.text,
        )  # fmt: skip
        return _keep(self.store, kept)


class CapturingSmsSender(_Capturing):
    """An :class:`SmsSender` that keeps each rendered SMS, keyed by message key."""

    async def send_sms(self, message: SmsMessage) -> Receipt:
        """Keep ``message``; nothing leaves the process."""
        kept = CapturedMessage(
            message.key, Channel.sms, message.to, text=message.body, segments=message.segments
        )
        return _keep(self.store, kept)


def _keep(store: dict[str, CapturedMessage], message: CapturedMessage) -> Receipt:
    store[message.key] = message
    return Receipt(
        provider=PROVIDER, provider_id=f"sim-{len(store)}", key=message.key,
        channel=message.channel, duplicate=False,
    )  # fmt: skip
