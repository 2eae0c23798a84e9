"""The send protocol's decisions: pure functions of what the ledger holds and the time.

A provider call whose answer nobody saw (the request timed out, the connection dropped, the
worker died during the call) leaves its message ``unknown``: the provider may or may not have
it. The provider's own feedback decides (SendGrid's event webhook carries the message key in
its custom args, Twilio's status callback carries it in its URL), and the web front door
records that feedback in the ledger, which turns the message ``sent``. While none has come the
send activity looks again, less and less often, until the channel's wait is over; then its
:class:`UnknownPolicy` decides: resend once (the provider never saw it, or its feedback was
lost), or leave it ``unknown``, counted and reported.

Also here: the task queue each channel's sends run on (its rate limit), how long a journey's
send keeps trying before it gives up (its deadline), and the activity timeouts that decide how
soon a dead worker's send is retried.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from kairos.language.durations import DurationError, format_duration, parse_duration
from kairos.language.plan import Channel


class EmailProvider(StrEnum):
    """The email providers ``KAIROS_EMAIL_PROVIDER`` may name; each has a sender in
    ``activities.providers.EMAIL_PROVIDERS``."""

    outbox = "outbox"
    sendgrid = "sendgrid"


class SmsProvider(StrEnum):
    """The SMS providers ``KAIROS_SMS_PROVIDER`` may name; each has a sender in
    ``activities.providers.SMS_PROVIDERS``."""

    outbox = "outbox"
    twilio = "twilio"


def provider_choices(providers: Iterable[StrEnum]) -> str:
    """``auto, outbox or sendgrid``: what a provider setting may say, for error messages."""
    *first, last = ["auto", *(p.value for p in providers)]
    return f"{', '.join(first)} or {last}"


def send_queue(task_queue: str, channel: Channel) -> str:
    """The task queue a journey on ``task_queue`` sends ``channel`` messages on: one per channel,
    so Temporal can limit each channel's rate across all workers (``KAIROS_RATE_*``)."""
    return f"{task_queue}-{channel.value}"


DEFAULT_GIVE_UP_AFTER = 24 * 3600
"""Seconds a send keeps trying (provider outages, rate limits, waiting for feedback) before the
journey gives up on it and goes on, unless its step or journey says ``give_up_after``."""

# The first look for feedback after an unknown outcome, then doubling.
FIRST_CHECK = timedelta(seconds=30)


@dataclass(frozen=True)
class UnknownPolicy:
    """What a channel does when a call's outcome is unknown and no feedback came in ``wait``.

    ``resend``: call the provider once more (consent and suppression checked again); when
    false the message stays ``unknown`` and the journey goes on.
    """

    resend: bool
    wait_seconds: int

    def describe(self) -> str:
        action = "resend" if self.resend else "report"
        return f"{action} after {format_duration(self.wait_seconds)}"


DEFAULT_UNKNOWN = {
    Channel.email: UnknownPolicy(resend=True, wait_seconds=600),
    Channel.sms: UnknownPolicy(resend=False, wait_seconds=600),
}
_POLICY = re.compile(r"^\s*(resend|report)\s+after\s+(.+?)\s*$", re.IGNORECASE)


def parse_unknown_policy(text: str) -> UnknownPolicy:
    """``resend after 10m`` or ``report after 10m``.

    Raises:
        ValueError: ``text`` is neither, or its duration is not one.
    """
    match = _POLICY.match(text)
    if match is None:
        raise ValueError(f"{text!r}: expected 'resend after 10m' or 'report after 10m'")
    try:
        seconds = parse_duration(match.group(2))
    except DurationError as err:
        raise ValueError(f"{text!r}: {err}") from None
    if seconds <= 0:
        raise ValueError(f"{text!r}: the wait must be longer than 0s")
    return UnknownPolicy(resend=match.group(1).lower() == "resend", wait_seconds=seconds)


@dataclass(frozen=True)
class Wait:
    """No feedback yet: look again at ``until``."""

    until: datetime


@dataclass(frozen=True)
class Resend:
    """No feedback in the channel's wait: call the provider once more."""


@dataclass(frozen=True)
class Report:
    """No feedback, and no resend: the message stays ``unknown``, for the reason given."""

    reason: str


def after_unknown(
    *,
    since: datetime,
    now: datetime,
    policy: UnknownPolicy,
    resends: int,
    deadline: datetime | None,
    margin: timedelta,
) -> Wait | Resend | Report:
    """What to do about a message whose outcome has been unknown since ``since``.

    Args:
        since: When the call whose answer nobody saw was made (or found to have been).
        now: This attempt's time.
        policy: The channel's :class:`UnknownPolicy`.
        resends: How often the message was already sent again after no feedback (at most once).
        deadline: When the send gives up (its schedule-to-close), if it has one.
        margin: How long before the deadline the last decision must be made, so the journey
            records it instead of a timeout.
    """
    end = since + timedelta(seconds=policy.wait_seconds)
    if deadline is not None:
        end = min(end, deadline - margin)
    if now < end:
        # Feedback usually comes in seconds: look early, then less and less often.
        return Wait(until=min(now + max(FIRST_CHECK, now - since), end))
    waited = format_duration(max(int((now - since).total_seconds()), 0))
    if policy.resend and resends == 0:
        return Resend()
    if resends:
        return Report(f"outcome unknown: no feedback from the provider after a resend ({waited})")
    return Report(f"outcome unknown: no feedback from the provider in {waited}; not resent")


@dataclass(frozen=True)
class SendTimeouts:
    """The ``deliver`` activity's timeouts, which decide how soon a dead worker's send is
    retried (docs/operations.md, *The send guarantee*, weighs the choice).

    ``heartbeat_seconds``: a send that takes longer than half of this tells Temporal it is
    alive, and Temporal retries the send elsewhere this long after its worker fell silent; a
    send that ends sooner (almost all) costs no heartbeat.
    """

    start_to_close_seconds: int = 30
    heartbeat_seconds: int = 10
    first_retry_seconds: int = 1


SEND_TIMEOUTS = SendTimeouts()
"""Read by the journey interpreter at each send."""
