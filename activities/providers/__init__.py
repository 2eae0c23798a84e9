"""Delivery providers: one sender per channel, chosen by name from the settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from activities.providers.base import EmailSender, SmsSender
from activities.providers.outbox import OutboxEmailSender, OutboxSmsSender
from activities.providers.sendgrid import SendGridSender
from activities.providers.twilio import TwilioSender
from kairos.runtime.config import Settings
from kairos.runtime.delivery import EmailProvider, SmsProvider
from kairos.runtime.webhooks import TWILIO_STATUS_PATH


def _sendgrid(settings: Settings) -> EmailSender:
    return SendGridSender(
        settings.sendgrid_api_key,
        base_url=settings.sendgrid_base_url,
        asm_group_id=settings.sendgrid_asm_group_id,
        sandbox=settings.sendgrid_sandbox,
    )


def _twilio(settings: Settings) -> SmsSender:
    callback = settings.twilio_status_callback_url
    if callback.lower() == "off":
        callback = ""
    elif not callback:
        callback = f"{settings.public_url}{TWILIO_STATUS_PATH}"
    return TwilioSender(
        settings.twilio_account_sid,
        settings.twilio_auth_token,
        from_number=settings.twilio_from_number,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        status_callback_url=callback,
        base_url=settings.twilio_base_url,
    )


# One sender for every provider the settings accept (kairos.runtime.delivery names them).
EMAIL_PROVIDERS: dict[str, Callable[[Settings], EmailSender]] = {
    EmailProvider.outbox: lambda settings: OutboxEmailSender(settings.outbox_dir),
    EmailProvider.sendgrid: _sendgrid,
}
SMS_PROVIDERS: dict[str, Callable[[Settings], SmsSender]] = {
    SmsProvider.outbox: lambda settings: OutboxSmsSender(settings.outbox_dir),
    SmsProvider.twilio: _twilio,
}


def build_senders(settings: Settings) -> tuple[EmailSender, SmsSender]:
    """The email and SMS senders named by ``settings.email_provider`` and ``sms_provider``.

    Raises:
        ValueError: A provider name is unknown, or its credentials are missing.
    """
    return (
        _pick(EMAIL_PROVIDERS, "email", settings.email_provider)(settings),
        _pick(SMS_PROVIDERS, "SMS", settings.sms_provider)(settings),
    )


T = TypeVar("T")


def _pick(registry: dict[str, T], channel: str, name: str) -> T:
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise ValueError(f"unknown {channel} provider {name!r}: expected one of {known}") from None


__all__ = [
    "EMAIL_PROVIDERS",
    "SMS_PROVIDERS",
    "EmailSender",
    "OutboxEmailSender",
    "OutboxSmsSender",
    "SendGridSender",
    "SmsSender",
    "TwilioSender",
    "build_senders",
]
