"""What the client checks at the door, before it connects to anything: the customer id, an
event's properties and a profile against the catalogue and the size limits, the journey's name;
and the errors a caller's mistake raises. The command line and the web front door use the same
checks, so a typo is refused the same way everywhere.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Any

from kairos.language.catalogue import CONSENT_TOPICS, Catalogue
from kairos.language.plan import JourneyPlan
from kairos.language.project import Project
from kairos.runtime.contract import Event

# Segment's own limit for one call: an event is a fact, not a document.
MAX_PROPERTIES_BYTES = 32 * 1024


class KairosError(Exception):
    """Base of every error the client raises for a caller's mistake."""


class InvalidEvent(KairosError):
    """The event is unknown to the catalogue, or its properties are wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class InvalidProfile(InvalidEvent):
    """Profile attributes that the catalogue does not declare, or of the wrong type."""


class InvalidCustomerId(KairosError):
    pass


class UnknownJourney(KairosError):
    pass


class JourneyAlreadyRunning(KairosError):
    """The journey's entry rule refused a new run (running, or entered once already)."""


class NoRunningJourney(KairosError):
    pass


class CustomerNotFound(KairosError):
    pass


# Beyond these, a value is a mistake or an attack, not customer data.
MAX_DEPTH = 32
MAX_STRING_CHARS = 10_000


def value_problems(values: Any, what: str) -> list[str]:
    """Why ``values`` (properties or attributes) cannot be accepted: nested deeper than
    MAX_DEPTH, a string longer than MAX_STRING_CHARS, or a number that is not finite."""
    problems: list[str] = []
    pending: list[tuple[Any, str, int]] = [(values, what, 0)]
    while pending and len(problems) < 10:
        value, where, depth = pending.pop()
        if depth > MAX_DEPTH:
            problems.append(f"{what} are nested deeper than {MAX_DEPTH} levels (at {where})")
            break
        if isinstance(value, dict):
            pending.extend((v, f"{where}.{k}" if depth else str(k), depth + 1)
                           for k, v in value.items())  # fmt: skip
        elif isinstance(value, list | tuple):
            pending.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(
                f"{where} is {value}: NaN or Infinity cannot be stored, send a finite number"
            )
        elif isinstance(value, str) and len(value) > MAX_STRING_CHARS:
            problems.append(
                f"{where} is {len(value):,} characters; at most {MAX_STRING_CHARS:,} fit in one "
                "value (send an id or a link instead of the content)"
            )
    return problems


def size_problems(values: dict[str, Any], what: str) -> list[str]:
    """Why ``values`` cannot be stored as one event: too deep, too long, too large, or numbers
    JSON cannot carry."""
    problems = value_problems(values, what)
    if problems:
        return problems
    try:
        size = len(json.dumps(values, allow_nan=False, default=str).encode())
    except ValueError:
        return [f"{what} contain NaN or Infinity, which JSON cannot carry: send a finite number"]
    if size > MAX_PROPERTIES_BYTES:
        return [
            f"{what} are {size:,} bytes; at most {MAX_PROPERTIES_BYTES // 1024} KB fit in one "
            "event (send an id or a link instead of the content)"
        ]
    return []


def check_customer_id(customer_id: object) -> str:
    """``customer_id`` if it is a usable customer id; InvalidCustomerId says what would be.

    Ids appear in workflow ids, search attributes and file names, which are not encrypted, and
    in Temporal's visibility queries: so they must be pseudonymous (never an email address or
    phone number) and free of quotes, backslashes, whitespace and control characters.
    """
    if not isinstance(customer_id, str) or not customer_id.strip():
        raise InvalidCustomerId("a customer id is required (a non-empty string such as 'c-42')")
    # The value itself is never echoed: it may be personal data.
    if "@" in customer_id:
        raise InvalidCustomerId(_PSEUDONYMOUS.format("looks like an email address"))
    if _PHONE_LIKE.fullmatch(customer_id):
        raise InvalidCustomerId(_PSEUDONYMOUS.format("looks like a phone number"))
    if len(customer_id) > MAX_ID_CHARS or any(_unsafe(c) for c in customer_id):
        raise InvalidCustomerId(
            f"customer ids are at most {MAX_ID_CHARS} characters, without quotes, backslashes, "
            "whitespace or control characters (such as 'c-42' or a UUID)"
        )
    return customer_id


MAX_ID_CHARS = 200
_PHONE_LIKE = re.compile(r"\+[\d\s().-]{6,}")
_PSEUDONYMOUS = (
    "customer ids must be pseudonymous: this one {}, and ids are stored unencrypted in "
    "Temporal (workflow ids, search attributes). Use your database's id or a UUID"
)


def _unsafe(char: str) -> bool:
    return char in "\"'\\`" or char.isspace() or unicodedata.category(char)[0] in "CZ"


def checked_event(
    catalogue: Catalogue,
    customer_id: str,
    event: str,
    properties: dict[str, Any] | None = None,
    *,
    event_id: str | None = None,
    timestamp: datetime | None = None,
) -> Event:
    """The event to accept, once the customer id and properties pass the catalogue.

    Needs no connection, so a command line can refuse a typo before connecting to anything.

    Raises:
        InvalidCustomerId: The customer id is not usable.
        InvalidEvent: The event is unknown or its properties are wrong (every problem listed).
    """
    check_customer_id(customer_id)
    moment = timestamp or datetime.now(UTC)
    values = catalogue.with_defaults(event, dict(properties or {}), moment)
    problems = size_problems(values, "the properties") or catalogue.validate_event(event, values)
    if problems:
        raise InvalidEvent(problems)
    return Event(id=event_id or str(uuid.uuid4()), name=event, properties=values, timestamp=moment)


def check_profile(
    catalogue: Catalogue,
    customer_id: str,
    attributes: dict[str, Any],
    consent: dict[str, bool] | None = None,
) -> None:
    """Raise InvalidCustomerId or InvalidProfile unless an identify call would be accepted."""
    check_customer_id(customer_id)
    problems = size_problems(attributes, "the attributes") or catalogue.validate_profile(attributes)
    problems += _consent_problems(consent or {})
    if problems:
        raise InvalidProfile(problems)


def check_journey(project: Project, journey: str) -> JourneyPlan:
    """The journey's plan; UnknownJourney names the journeys there are."""
    plan = project.plans.get(journey)
    if plan is None:
        known = ", ".join(sorted(project.plans)) or "none"
        raise UnknownJourney(f"no journey named {journey!r} (journeys: {known})")
    return plan


def _consent_problems(consent: dict[str, Any]) -> list[str]:
    problems = []
    for topic, granted in consent.items():
        if topic not in CONSENT_TOPICS or not isinstance(granted, bool):
            problems.append(
                f"consent: {topic!r} must be one of email, sms, marketing set to true or false"
            )
    return problems
