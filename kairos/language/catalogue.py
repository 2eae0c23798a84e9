"""The customer catalogue (``journeys/customer.yaml``): profile attributes and events.

The compiler checks every variable a template or condition uses against it; the client and the
HTTP front door validate events and profile updates against it before anything reaches Temporal.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

# Attributes every customer has, whatever customer.yaml says.
BUILTIN_PROFILE = ("id", "stage", "consent")
# What a catalogue property, an API call or a customers file may grant or withdraw
# (``consent: marketing``); transactional messages need no grant.
ConsentTopic = Literal["email", "sms", "marketing"]
CONSENT_TOPICS: tuple[str, ...] = get_args(ConsentTopic)
CONSENT_KEYS = (*CONSENT_TOPICS, "transactional")
BUILTIN_EVENT = ("name", "id", "timestamp")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_LOCALE = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


class AttrType(StrEnum):
    string = "string"
    number = "number"
    integer = "integer"
    boolean = "boolean"
    datetime = "datetime"
    date = "date"
    email = "email"
    phone = "phone"
    locale = "locale"
    timezone = "timezone"
    list = "list"
    object = "object"


class Attribute(BaseModel):
    """A profile attribute or an event property."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: AttrType = AttrType.string
    required: bool = False
    description: str = ""
    # Event properties only: copy this property into the profile (under its own name, or the
    # attribute named here) when the event arrives.
    profile: bool | str = False
    # A boolean that grants (true) or withdraws (false) this consent topic when it arrives,
    # recorded with the event (or identify call) as its source: consent is opt-in.
    consent: ConsentTopic | None = None
    # Event properties only: ``timestamp`` fills an absent value with the event's own time.
    default: Literal["timestamp"] | None = None

    def profile_attribute(self, property_name: str) -> str | None:
        if self.profile is True:
            return property_name
        if isinstance(self.profile, str) and self.profile:
            return self.profile
        return None


class EventSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    properties: dict[str, Attribute] = Field(default_factory=dict)


class ScoreRule(BaseModel):
    """``event`` earns ``points`` (negative ones take off) when ``when`` holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str
    points: int | float
    when: str | None = None


class ScoreSpec(BaseModel):
    """A score kept for every customer: the profile attribute of the same name gains each
    rule's points when its event arrives, and loses them again ``expire_after`` later."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    rules: list[ScoreRule] = Field(min_length=1)
    expire_after: str | None = None

    def earned(self, event: str) -> list[tuple[int, ScoreRule]]:
        """The rules ``event`` may earn points under, with their positions."""
        return [(n, rule) for n, rule in enumerate(self.rules) if rule.event == event]


class Catalogue(BaseModel):
    """The business, its customers' profile attributes and its events, as declared in
    ``journeys/customer.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The one place the business's name is set: every email's sender name and the unsubscribe
    # page say it (docs/operations.md).
    brand: str = ""
    profile: dict[str, Attribute] = Field(default_factory=dict)
    events: dict[str, EventSpec] = Field(default_factory=dict)
    # Lead scores and the like: profile attribute -> its rules (kairos.store.scores keeps them).
    scoring: dict[str, ScoreSpec] = Field(default_factory=dict)

    def attribute_of_type(self, kind: AttrType) -> str | None:
        """The profile attribute that holds the email, phone, locale or timezone, if any."""
        for name, attr in self.profile.items():
            if attr.type == kind:
                return name
        return None

    def validate_event(self, name: str, properties: dict[str, Any]) -> list[str]:
        """Problems with an event, each a sentence naming the property; empty when valid."""
        spec = self.events.get(name)
        if spec is None:
            known = ", ".join(sorted(self.events)) or "none declared"
            return [f"unknown event {name!r} (declared events: {known})"]
        return _validate_values(properties, spec.properties, f"event {name!r}", partial=False)

    def validate_profile(self, values: dict[str, Any], *, partial: bool = True) -> list[str]:
        """Problems with profile values; with ``partial``, required attributes may be absent."""
        values = {k: v for k, v in values.items() if k not in BUILTIN_PROFILE}
        return _validate_values(values, self.profile, "profile", partial=partial)

    def with_defaults(
        self, name: str, properties: dict[str, Any], timestamp: datetime
    ) -> dict[str, Any]:
        """``properties`` with every absent ``default: timestamp`` property filled in."""
        spec = self.events.get(name)
        if spec is None:
            return properties
        filled = dict(properties)
        for prop, attr in spec.properties.items():
            if attr.default == "timestamp" and filled.get(prop) is None:
                filled[prop] = timestamp.isoformat()
        return filled

    def consent_changes(self, name: str | None, values: dict[str, Any]) -> dict[str, bool]:
        """The consent topics an event's properties (or, with no name, profile values) grant
        or withdraw, per the catalogue's ``consent:`` declarations."""
        spec = self.profile if name is None else getattr(self.events.get(name), "properties", {})
        changes: dict[str, bool] = {}
        for key, attr in spec.items():
            if attr.consent is not None and isinstance(values.get(key), bool):
                changes[attr.consent] = values[key]
        return changes

    def profile_updates(self, name: str, properties: dict[str, Any]) -> dict[str, Any]:
        """The profile attributes an event's properties set, per the catalogue."""
        spec = self.events.get(name)
        if spec is None:
            return {}
        updates: dict[str, Any] = {}
        for prop, attr in spec.properties.items():
            target = attr.profile_attribute(prop)
            if target is not None and prop in properties:
                updates[target] = properties[prop]
        return updates


def _validate_values(
    values: dict[str, Any], spec: dict[str, Attribute], where: str, *, partial: bool
) -> list[str]:
    problems: list[str] = []
    for key, value in values.items():
        attr = spec.get(key)
        if attr is None:
            known = ", ".join(sorted(spec)) or "none"
            problems.append(f"{where}: unknown property {key!r} (declared: {known})")
            continue
        if value is None and not attr.required:
            continue
        message = type_problem(attr.type, value)
        if message:
            problems.append(f"{where}: {key!r} {message}")
    if not partial:
        for key, attr in spec.items():
            if attr.required and values.get(key) is None:
                problems.append(f"{where}: missing required property {key!r} ({attr.type.value})")
    return problems


def type_problem(kind: AttrType, value: Any) -> str | None:
    """Why ``value`` is not a valid ``kind``, or None when it is."""
    ok: bool
    match kind:
        case AttrType.string:
            ok = isinstance(value, str)
        case AttrType.number:
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
        case AttrType.integer:
            ok = isinstance(value, int) and not isinstance(value, bool)
        case AttrType.boolean:
            ok = isinstance(value, bool)
        case AttrType.datetime:
            ok = isinstance(value, datetime) or (isinstance(value, str) and _is_iso(value, True))
        case AttrType.date:
            ok = isinstance(value, date) or (isinstance(value, str) and _is_iso(value, False))
        case AttrType.email:
            ok = isinstance(value, str) and bool(_EMAIL.match(value))
        case AttrType.phone:
            ok = isinstance(value, str) and bool(_E164.match(value.replace(" ", "")))
        case AttrType.locale:
            ok = isinstance(value, str) and bool(_LOCALE.match(value))
        case AttrType.timezone:
            ok = isinstance(value, str) and _is_timezone(value)
        case AttrType.list:
            ok = isinstance(value, list)
        case AttrType.object:
            ok = isinstance(value, dict)
    if ok:
        return None
    examples = {
        AttrType.datetime: "an ISO 8601 date-time such as 2026-01-31T09:00:00Z",
        AttrType.date: "an ISO 8601 date such as 2026-01-31",
        AttrType.email: "an email address such as ada@example.com",
        AttrType.phone: "a phone number in E.164 form such as +358401234567",
        AttrType.locale: "a locale such as fi or de-DE",
        AttrType.timezone: "an IANA timezone such as Europe/Helsinki",
    }
    expected = examples.get(kind, f"a {kind.value}")
    return f"must be {expected}, not {value!r}"


def _is_iso(value: str, with_time: bool) -> bool:
    try:
        if with_time:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        else:
            date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_timezone(value: str) -> bool:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
