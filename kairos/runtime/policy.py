"""Policy before every send, and local-time arithmetic: pure functions the workflows call.

This module is imported into workflows (passed through the sandbox), so it must stay pure:
every function takes ``now`` as an argument and reads no clock, file or network. ``zoneinfo``
reads the IANA database shipped with the worker (the ``tzdata`` wheel), which is fixed for a
given deployment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kairos.language.durations import format_duration
from kairos.language.plan import Category, Channel, SplitVariant
from kairos.messages.models import PolicyDecision, Verdict

UTC = ZoneInfo("UTC")
# A message holding for a cap's last slot waits until the end of the minute it was due, plus
# this grace for contenders whose worker picked their send up a moment late.
CONTEST_GRACE = timedelta(seconds=5)


def zone(name: object) -> ZoneInfo:
    """The customer's timezone, or UTC when unknown or invalid."""
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return UTC
    return UTC


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def local_datetime(day: date, at: time, tz: ZoneInfo) -> datetime:
    """``day`` at wall-clock ``at`` in ``tz``, as UTC.

    Around DST changes a wall-clock time may not exist (spring forward: it is moved forward by
    the gap, so 03:30 becomes 04:30) or exist twice (fall back: the first occurrence is taken).
    PEP 495's ``fold=0`` gives exactly both.
    """
    return datetime.combine(day, at).replace(tzinfo=tz, fold=0).astimezone(UTC)


def next_time_of_day(now: datetime, hhmm: str, tz_name: object) -> datetime:
    """The next moment (strictly after ``now``) when the customer's clock shows ``hhmm``."""
    tz = zone(tz_name)
    at = _hhmm(hhmm)
    today = now.astimezone(tz).date()
    for offset in range(3):
        candidate = local_datetime(today + timedelta(days=offset), at, tz)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a time of day recurs within two days")


def in_quiet_hours(now: datetime, window: tuple[str, str], tz_name: object) -> datetime | None:
    """When ``now`` falls in the local quiet window, the UTC moment it ends; else None."""
    tz = zone(tz_name)
    local = now.astimezone(tz)
    start, end = _hhmm(window[0]), _hhmm(window[1])
    clock = local.time().replace(tzinfo=None)
    if start == end:
        return None
    if start < end:
        quiet = start <= clock < end
        end_day = local.date()
    else:  # wraps midnight, e.g. 21:00 -> 08:00
        quiet = clock >= start or clock < end
        end_day = local.date() + timedelta(days=1) if clock >= start else local.date()
    if not quiet:
        return None
    return local_datetime(end_day, end, tz)


def parse_datetime(value: object) -> datetime | None:
    """A profile value as an aware UTC datetime (dates are taken at midnight UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def bucket(*parts: str) -> int:
    """A stable number in 0..9999 for these parts: same customer, same bucket, every time."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10000


def choose_variant(
    customer_id: str, journey: str, step: str, variants: Sequence[SplitVariant], holdout: int
) -> SplitVariant | None:
    """The customer's variant, or None when they fall in the holdout percent."""
    point = bucket(customer_id, journey, step)
    if point < holdout * 100:
        return None
    total = sum(v.weight for v in variants)
    scaled = (point - holdout * 100) * total // (10000 - holdout * 100)
    for variant in variants:
        if scaled < variant.weight:
            return variant
        scaled -= variant.weight
    return variants[-1]


@dataclass(frozen=True)
class CapRule:
    """At most ``limit`` marketing messages per ``window_seconds`` on one channel."""

    channel: Channel
    limit: int
    window_seconds: int


@dataclass(frozen=True)
class Claim:
    """A message of the same customer holding for the last slot of a cap (the contest)."""

    key: str
    channel: Channel
    priority: int
    due_at: datetime


@dataclass(frozen=True)
class Recipient:
    """What the send transaction knows about the customer, at this moment.

    ``refused`` maps a consent topic (email, sms, marketing) the customer has not granted to
    why: "never given", or the source that withdrew it. ``suppressed`` maps a channel whose
    address is on the suppression list to the reason.
    """

    has_email: bool
    has_phone: bool
    refused: dict[str, str] = field(default_factory=dict)
    suppressed: dict[Channel, str] = field(default_factory=dict)
    suppressed_marketing: dict[Channel, str] = field(default_factory=dict)
    timezone: str | None = None


@dataclass(frozen=True)
class SendAsk:
    """One message to decide: its key, channels in order of preference, and when it was due.

    ``contest`` is true when the message already held for a cap's last slot and the minute it
    was due is over: now the slot goes to the highest priority among ``claims``.
    """

    key: str
    channels: tuple[Channel, ...]
    category: Category
    priority: int
    due_at: datetime
    quiet_hours: tuple[str, str] | None = None
    contest: bool = False


def _channel_block(channel: Channel, ask: SendAsk, recipient: Recipient) -> str | None:
    """Why this channel cannot carry the message, or None when it can."""
    if channel is Channel.email:
        if not recipient.has_email:
            return "no email address"
        if "email" in recipient.refused:
            return f"email consent {recipient.refused['email']}"
    else:
        if not recipient.has_phone:
            return "no phone number"
        if "sms" in recipient.refused:
            return f"SMS consent {recipient.refused['sms']}"
    if channel in recipient.suppressed:
        return f"address suppressed ({recipient.suppressed[channel]})"
    if ask.category is Category.marketing and channel in recipient.suppressed_marketing:
        return f"address suppressed for marketing ({recipient.suppressed_marketing[channel]})"
    return None


def _cap(
    channel: Channel,
    ask: SendAsk,
    caps: Sequence[CapRule],
    counted: Sequence[datetime],
    claims: Sequence[Claim],
    now: datetime,
) -> PolicyDecision | None:
    """The cap's say on this message: None to send now, or a hold or deferral.

    ``counted`` are the times this customer's marketing messages on ``channel`` took a slot.
    """
    for cap in caps:
        if cap.channel is not channel or ask.category is not Category.marketing:
            continue
        window = timedelta(seconds=cap.window_seconds)
        taken = sorted(at for at in counted if at > now - window)
        free = cap.limit - len(taken)
        what = f"{cap.limit} marketing {channel.value} per {format_duration(cap.window_seconds)}"
        if free <= 0:
            until = taken[len(taken) - cap.limit] + window
            return PolicyDecision(
                verdict=Verdict.defer,
                reason=f"frequency cap: {what} reached; deferred until a slot frees",
                defer_until=until,
            )
        if free > 1:
            continue
        if not ask.contest:
            minute_end = ask.due_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
            return PolicyDecision(
                verdict=Verdict.hold,
                reason=f"frequency cap: last slot of {what}; held until the end of the minute "
                "for any higher-priority message due then",
                defer_until=max(minute_end, now) + CONTEST_GRACE,
            )
        mine = [c for c in claims if c.channel is channel]
        ranked = sorted(mine, key=lambda c: (-c.priority, c.due_at, c.key))
        rank = next((i for i, c in enumerate(ranked) if c.key == ask.key), len(ranked))
        if rank >= free and ranked:
            winner = ranked[0]
            frees = min([*taken, now]) + window
            return PolicyDecision(
                verdict=Verdict.defer,
                reason=f"frequency cap: the last slot of {what} went to {winner.key} "
                f"(priority {winner.priority}); deferred until a slot frees",
                defer_until=frees,
            )
    return None


def decide(
    ask: SendAsk,
    recipient: Recipient,
    caps: Sequence[CapRule],
    counted: dict[Channel, list[datetime]],
    claims: Sequence[Claim],
    now: datetime,
) -> tuple[PolicyDecision, Channel | None]:
    """Consent, suppression, quiet hours and frequency caps, in that order, for the first
    channel that can carry the message. One reason string per outcome, for support."""
    if ask.category is Category.marketing and "marketing" in recipient.refused:
        reason = f"marketing consent {recipient.refused['marketing']}"
        return PolicyDecision(verdict=Verdict.blocked, reason=reason), None
    reasons: list[str] = []
    chosen: Channel | None = None
    for channel in ask.channels:
        why = _channel_block(channel, ask, recipient)
        if why is None:
            chosen = channel
            break
        reasons.append(f"{channel.value}: {why}")
    if chosen is None:
        return PolicyDecision(verdict=Verdict.blocked, reason="; ".join(reasons)), None
    if ask.quiet_hours and ask.category is Category.marketing:
        until = in_quiet_hours(now, ask.quiet_hours, recipient.timezone)
        if until is not None:
            local = until.astimezone(zone(recipient.timezone)).strftime("%H:%M %Z")
            window = f"{ask.quiet_hours[0]}-{ask.quiet_hours[1]}"
            decision = PolicyDecision(
                verdict=Verdict.defer,
                reason=f"quiet hours {window}; deferred to {local}",
                defer_until=until,
            )
            return decision, chosen
    capped = _cap(chosen, ask, caps, counted.get(chosen, []), claims, now)
    if capped is not None:
        return capped, chosen
    return PolicyDecision(verdict=Verdict.send), chosen
