"""A simulation's customer file, the events it schedules, and the moments it names
(``now-60d``, ``--start 09:00``) resolved on the simulated clock."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kairos.language.catalogue import CONSENT_TOPICS, Attribute, AttrType, Catalogue
from kairos.language.durations import DurationError, parse_duration
from kairos.language.yaml_source import load_data
from kairos.runtime import policy

if TYPE_CHECKING:
    pass

DEFAULT_START = "09:00"
_RELATIVE = re.compile(r"^now\s*(?:([+-])\s*(.+))?$", re.IGNORECASE)
_EVENT_SPEC = re.compile(r"^\s*([A-Za-z_$][\w$]*)\s*(?:@\s*\+?\s*(.+?))?\s*$")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
DATE_TYPES = (AttrType.datetime, AttrType.date)


class SimulationError(Exception):
    """The simulation cannot run as asked: a bad customer file, event or start time."""


@dataclass(frozen=True)
class ScheduledEvent:
    """An event the simulation sends ``offset_seconds`` after the start.

    ``properties`` override the properties given for this event in the customer file.
    """

    name: str
    offset_seconds: int
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SimCustomer:
    """Who the simulation is about, as read from a customer file."""

    id: str
    profile: Mapping[str, Any]
    consent: Mapping[str, bool] = field(default_factory=dict)
    stage: str | None = None
    events: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    schedule: tuple[ScheduledEvent, ...] = ()
    source: str = "customer file"


def parse_event_spec(text: str) -> ScheduledEvent:
    """``order_placed@+3h`` (or ``order_placed@3h``, or ``order_placed`` for +0) as an event.

    Raises:
        SimulationError: The text is not ``NAME@OFFSET`` with a duration such as 3h or 2d 4h.
    """
    match = _EVENT_SPEC.match(text)
    if not match:
        raise SimulationError(f"--event {text!r}: expected NAME@OFFSET such as order_placed@+3h")
    name, offset = match.group(1), match.group(2)
    try:
        seconds = parse_duration(offset) if offset else 0
    except DurationError as err:
        raise SimulationError(f"--event {text!r}: {err}") from None
    if seconds < 0:
        raise SimulationError(f"--event {text!r}: the offset must not be negative")
    return ScheduledEvent(name=name, offset_seconds=seconds)


def load_customer(path: Path) -> SimCustomer:
    """Read a customer file (YAML or JSON).

    The file holds ``id`` (default: the file name), ``profile``, optional ``consent``
    (``{sms: false}``), ``stage``, ``events`` (properties per event name, used whenever the
    simulation sends that event) and ``schedule`` (``order_placed@+3h`` strings, or mappings
    with ``event``, ``at`` and ``properties``).

    Raises:
        SimulationError: The file is missing, does not parse, or has the wrong shape.
    """
    shown = str(path)
    try:
        data = load_data(path.read_text(encoding="utf-8"), shown)
    except OSError as err:
        raise SimulationError(f"{shown}: cannot read the customer file ({err.strerror})") from None
    except ValueError as err:
        raise SimulationError(str(err)) from None
    if not isinstance(data, dict):
        raise SimulationError(f"{shown}: expected a mapping with profile, events and schedule")
    unknown = sorted(set(data) - {"id", "profile", "consent", "stage", "events", "schedule"})
    if unknown:
        raise SimulationError(
            f"{shown}: unknown keys {', '.join(unknown)} "
            "(expected id, profile, consent, stage, events, schedule)"
        )
    return SimCustomer(
        id=str(data.get("id") or path.stem),
        profile=_mapping(data.get("profile"), f"{shown}: profile"),
        consent=_consent(data.get("consent"), shown),
        stage=str(data["stage"]) if data.get("stage") else None,
        events={
            str(name): _mapping(props, f"{shown}: events.{name}")
            for name, props in _mapping(data.get("events"), f"{shown}: events").items()
        },
        schedule=tuple(_scheduled(item, shown) for item in _list(data.get("schedule"), shown)),
        source=shown,
    )


def _plain(value: Any) -> Any:
    """YAML dates and timestamps as ISO strings, so the profile is plain JSON."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SimulationError(f"{where}: expected a mapping")
    plain: dict[str, Any] = _plain(value)
    return plain


def _list(value: Any, shown: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SimulationError(f"{shown}: schedule: expected a list such as [order_placed@+3h]")
    return value


def _consent(value: Any, shown: str) -> dict[str, bool]:
    consent = _mapping(value, f"{shown}: consent")
    for topic, granted in consent.items():
        if topic not in CONSENT_TOPICS or not isinstance(granted, bool):
            raise SimulationError(
                f"{shown}: consent.{topic}: expected email, sms or marketing set to true or false"
            )
    return consent


def _scheduled(item: Any, shown: str) -> ScheduledEvent:
    if isinstance(item, str):
        return parse_event_spec(item)
    if not isinstance(item, dict) or "event" not in item:
        raise SimulationError(
            f"{shown}: schedule: each entry is NAME@OFFSET or {{event: NAME, at: +3h}}"
        )
    spec = parse_event_spec(f"{item['event']}@{item.get('at') or 0}")
    properties = _mapping(item.get("properties"), f"{shown}: schedule: {item['event']}")
    return dataclasses.replace(spec, properties=properties)


def customer_timezone(catalogue: Catalogue, customer: SimCustomer) -> str:
    """The customer's IANA timezone from their profile; UTC when they have none."""
    attribute = catalogue.attribute_of_type(AttrType.timezone)
    value = customer.profile.get(attribute) if attribute else None
    return value if isinstance(value, str) and value else "UTC"


def resolve_start(spec: str, now: datetime, timezone: str) -> datetime:
    """When the simulation starts, in UTC.

    Args:
        spec: ``now``; ``HH:MM`` for the next such time on the customer's clock; or a local
            date (``2030-03-04``, taken at 09:00) or date-time (``2030-03-04T09:00``) to come.
        now: The test server's current time.
        timezone: The customer's IANA timezone.

    Raises:
        SimulationError: The spec does not parse, or names a moment already past.
    """
    text = spec.strip()
    if text.lower() == "now":
        return now
    if _HHMM.match(text):
        return policy.next_time_of_day(now, text, timezone)
    try:
        parsed = datetime.fromisoformat(text if "T" in text else f"{text}T{DEFAULT_START}")
    except ValueError:
        raise SimulationError(
            f"--start {spec!r}: expected now, HH:MM (such as 09:00) or a local date-time "
            "such as 2030-03-04T09:00"
        ) from None
    at = parsed if parsed.tzinfo else parsed.replace(tzinfo=policy.zone(timezone))
    if at <= now:
        raise SimulationError(
            f"--start {spec!r} is in the past: the simulator's clock starts at the real now "
            "and only runs forward (use HH:MM, or a date to come)"
        )
    return at


def resolve_relative(
    values: Mapping[str, Any], spec: Mapping[str, Attribute], base: datetime
) -> dict[str, Any]:
    """Replace ``now``, ``now-60d``, ``now+2h`` in date attributes by ISO times from ``base``.

    Raises:
        SimulationError: A relative value has an unreadable duration.
    """
    resolved = dict(values)
    for name, value in values.items():
        attr = spec.get(name)
        if attr is None or attr.type not in DATE_TYPES or not isinstance(value, str):
            continue
        match = _RELATIVE.match(value.strip())
        if not match:
            continue
        sign, amount = match.group(1), match.group(2)
        try:
            seconds = parse_duration(amount) if amount else 0
        except DurationError as err:
            raise SimulationError(f"{name}: {value!r}: {err}") from None
        at = base + timedelta(seconds=-seconds if sign == "-" else seconds)
        resolved[name] = at.date().isoformat() if attr.type is AttrType.date else at.isoformat()
    return resolved
