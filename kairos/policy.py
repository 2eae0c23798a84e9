"""Policy before every send, and local-time arithmetic: pure functions the workflows call.

This module is imported into workflows (passed through the sandbox), so it must stay pure:
every function takes ``now`` as an argument and reads no clock, file or network. ``zoneinfo``
reads the IANA database shipped with the worker (the ``tzdata`` wheel), which is fixed for a
given deployment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kairos.durations import format_duration
from kairos.messages import PolicyDecision, Verdict
from kairos.plan import Category, Channel, SplitVariant
from kairos.runtime import Consent, LedgerEntry, SendRequest

UTC = ZoneInfo("UTC")
# Messages that count against frequency caps: what actually went (or is going) out.
COUNTED = ("sent",)


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


def _address(profile: dict[str, Any], attribute: str | None) -> bool:
    return bool(attribute and profile.get(attribute))


def _channel_block(
    channel: Channel, request: SendRequest, profile: dict[str, Any], consent: Consent
) -> str | None:
    """Why this channel cannot carry the message, or None when it can."""
    if channel is Channel.email:
        if not _address(profile, request.email_attribute):
            return "no email address"
        if not consent.email:
            return "opted out of email"
    else:
        if not _address(profile, request.phone_attribute):
            return "no phone number"
        if not consent.sms:
            return "opted out of SMS"
    return None


def _cap_block(
    channel: Channel, request: SendRequest, ledger: Iterable[LedgerEntry], now: datetime
) -> str | None:
    if request.category is Category.transactional:
        return None
    for cap in request.caps:
        if cap.channel is not channel:
            continue
        since = now - timedelta(seconds=cap.window_seconds)
        recent = sum(
            1
            for e in ledger
            if e.channel is channel
            and e.category is Category.marketing
            and e.status in COUNTED
            and e.at > since
        )
        if recent >= cap.limit:
            window = _human_window(cap.window_seconds)
            return f"frequency cap: {cap.limit} marketing {channel.value} per {window} reached"
    return None


def _human_window(seconds: int) -> str:
    return format_duration(seconds)


def decide(
    request: SendRequest,
    profile: dict[str, Any],
    consent: Consent,
    ledger: Sequence[LedgerEntry],
    now: datetime,
) -> tuple[PolicyDecision, Channel | None]:
    """Consent, frequency caps and quiet hours, in that order, for the first viable channel."""
    if request.category is Category.marketing and not consent.marketing:
        return PolicyDecision(verdict=Verdict.blocked, reason="unsubscribed from marketing"), None
    reasons: list[str] = []
    chosen: Channel | None = None
    for channel in request.channels:
        why = _channel_block(channel, request, profile, consent)
        if why is None:
            chosen = channel
            break
        reasons.append(f"{channel.value}: {why}")
    if chosen is None:
        return PolicyDecision(verdict=Verdict.blocked, reason="; ".join(reasons)), None
    capped = _cap_block(chosen, request, ledger, now)
    if capped:
        return PolicyDecision(verdict=Verdict.blocked, reason=capped), chosen
    if request.quiet_hours and request.category is Category.marketing:
        tz_value = profile.get(request.timezone_attribute) if request.timezone_attribute else None
        until = in_quiet_hours(now, request.quiet_hours, tz_value)
        if until is not None:
            local = until.astimezone(zone(tz_value)).strftime("%H:%M %Z")
            return (
                PolicyDecision(
                    verdict=Verdict.defer,
                    reason=f"quiet hours {request.quiet_hours[0]}-{request.quiet_hours[1]}; "
                    f"deferred to {local}",
                    defer_until=until,
                ),
                chosen,
            )
    return PolicyDecision(verdict=Verdict.send), chosen
