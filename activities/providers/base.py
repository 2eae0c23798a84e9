"""What every delivery provider shares: the sender protocols and how failures are reported.

A provider turns a message into a ``Receipt`` or raises a Temporal ``ApplicationError`` whose
``type`` is one of the constants below. The type decides whether Temporal retries the activity:
rate limits and outages are retried (honouring the provider's Retry-After), while a bad recipient,
an opted-out recipient, bad credentials or a rejected payload are not, because sending the same
request again cannot succeed. A request that went out and got no answer is neither: its outcome
is unknown, and only the provider's feedback can say whether to send it again.

Error messages are shown in the Temporal UI, so they name the provider, the HTTP status, the
provider's error code and what it means, with the recipient masked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol

from temporalio.exceptions import ApplicationError

from kairos.messages.models import EmailMessage, Receipt, SmsMessage

RATE_LIMITED = "RateLimited"
"""Retryable: the provider asked us to slow down; ``next_retry_delay`` follows Retry-After."""
PROVIDER_UNAVAILABLE = "ProviderUnavailable"
"""Retryable: 5xx, or the request never reached the provider (connection refused, DNS, a
timeout while connecting): the provider does not have the message."""
OUTCOME_UNKNOWN = "OutcomeUnknown"
"""Retryable, carefully: the request was sent but no answer came (a timeout while waiting for
it, a dropped connection). The provider may have the message; the send protocol waits for its
feedback before sending again (kairos.runtime.delivery)."""
INVALID_RECIPIENT = "InvalidRecipient"
"""Non-retryable: the address or number cannot receive this message."""
RECIPIENT_OPTED_OUT = "RecipientOptedOut"
"""Non-retryable: the recipient opted out at the provider (Twilio 21610, replied STOP)."""
PROVIDER_AUTH = "ProviderAuth"
"""Non-retryable: the provider refused our credentials (401, 403)."""
PAYLOAD_REJECTED = "PayloadRejected"
"""Non-retryable: the provider rejected the request itself (413, other 4xx)."""

NON_RETRYABLE = frozenset({INVALID_RECIPIENT, RECIPIENT_OPTED_OUT, PROVIDER_AUTH, PAYLOAD_REJECTED})

# A malformed or hostile Retry-After must not park a message for days; past this the activity's
# own retry policy takes over again.
MAX_RETRY_DELAY = timedelta(hours=1)

# X-RateLimit-Reset is an epoch timestamp at SendGrid but a number of seconds elsewhere; no
# sensible delay in seconds is this large, and no epoch timestamp this small.
_EPOCH_THRESHOLD = 1_000_000_000


class Sender(Protocol):
    """What every sender says of itself. ``name`` is the provider's name in receipts and
    settings.

    ``deduplicates``: the provider itself delivers one message per key, however often it is
    asked, so after an unknown outcome sending again is safe (the outbox); SendGrid and Twilio
    do not, and the send protocol waits for their feedback instead.
    """

    name: str
    deduplicates: bool


class EmailSender(Sender, Protocol):
    """Delivers one email."""

    async def send_email(self, message: EmailMessage) -> Receipt:
        """Deliver ``message`` or raise an ``ApplicationError`` typed as above."""
        ...


class SmsSender(Sender, Protocol):
    """Delivers one SMS."""

    async def send_sms(self, message: SmsMessage) -> Receipt:
        """Deliver ``message`` or raise an ``ApplicationError`` typed as above."""
        ...


def provider_error(
    kind: str,
    message: str,
    details: Mapping[str, object],
    *,
    retry_after: timedelta | None = None,
) -> ApplicationError:
    """Build the ``ApplicationError`` for a failed send.

    Args:
        kind: One of the error type constants in this module.
        message: What support reads in the Temporal UI; must not contain personal data.
        details: Machine-readable facts (provider, status, code, key); no personal data.
        retry_after: How long the provider asked us to wait, for rate limits.

    Returns:
        The error to raise; retryable unless ``kind`` is in ``NON_RETRYABLE``.
    """
    return ApplicationError(
        message,
        dict(details),
        type=kind,
        non_retryable=kind in NON_RETRYABLE,
        next_retry_delay=retry_after,
    )


def retry_delay(
    retry_after: str | None, rate_limit_reset: str | None = None, *, now: float
) -> timedelta | None:
    """How long a rate-limited provider asked us to wait, from its response headers.

    Args:
        retry_after: The Retry-After header: delay seconds or an HTTP date.
        rate_limit_reset: An X-RateLimit-Reset header: an epoch timestamp or delay seconds.
        now: The current time as an epoch timestamp.

    Returns:
        The longer of the two waits (so neither limit is broken), at most ``MAX_RETRY_DELAY``,
        or None when neither header gives a wait in the future.
    """
    waits = [
        wait
        for wait in (_retry_after_seconds(retry_after, now), _reset_seconds(rate_limit_reset, now))
        if wait is not None and wait > 0
    ]
    if not waits:
        return None
    return min(timedelta(seconds=max(waits)), MAX_RETRY_DELAY)


def _retry_after_seconds(value: str | None, now: float) -> float | None:
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return parsedate_to_datetime(value).timestamp() - now
    except (TypeError, ValueError):
        return None


def _reset_seconds(value: str | None, now: float) -> float | None:
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    if number is None:
        return None
    return number - now if number >= _EPOCH_THRESHOLD else number


def mask_email(address: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``: enough for support, not an address."""
    local, at, domain = address.strip().rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def mask_phone(number: str) -> str:
    """``+358401234567`` -> ``+35840***67``: country and operator prefix, never the subscriber."""
    number = number.strip()
    if len(number) < 7:
        return "***"
    head = 6 if len(number) >= 10 else 3
    return f"{number[:head]}***{number[-2:]}"


def scrub(text: str, secret: str, masked: str) -> str:
    """Replace every occurrence of ``secret`` (e.g. a recipient) in a provider's text."""
    if not secret:
        return text
    return re.sub(re.escape(secret), masked, text, flags=re.IGNORECASE)
