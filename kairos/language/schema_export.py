"""The JSON Schemas editors use for completion and checking (``kairos schema``): the journey
file's, from the authoring models, and customer.yaml's, with descriptions."""

from __future__ import annotations

from typing import (
    Any,
)

from kairos.language.catalogue import Catalogue
from kairos.language.schema import JourneySpec

_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def journey_json_schema() -> dict[str, Any]:
    """The JSON Schema of a journey file, for editors (yaml-language-server)."""
    schema = JourneySpec.model_json_schema(by_alias=True)
    return {"$schema": _DRAFT, **schema}


_CATALOGUE_DESCRIPTIONS = {
    "profile": "Profile attributes by name: {type: ..., required: ..., description: ...}.",
    "events": "Events by name: {description: ..., properties: {name: {type: ...}}}.",
    "type": "string, number, integer, boolean, datetime, date, email, phone, locale, timezone, "
    "list or object.",
    "brand": "The business's name as customers know it (Lumo Coffee): the sender name of every "
    "email and the name on the unsubscribe page.",
    "required": "Must be present (for events: in every event; for the profile: always).",
    "description": "What it means, for whoever reads this next.",
    "profile_flag": "Copy this event property into the profile (true: same name; or a name).",
    "properties": "The event's properties by name.",
    "consent": "A boolean that grants (true) or withdraws (false) this consent topic (email, "
    "sms or marketing) when it arrives, recorded with the event or identify call as its source.",
    "default": "Event properties only: `timestamp` fills an absent value with the event's time.",
}


def customer_json_schema() -> dict[str, Any]:
    """The JSON Schema of customer.yaml, with descriptions for editors."""
    schema = Catalogue.model_json_schema()
    schema["title"] = "Kairos customer catalogue"
    schema["description"] = "Profile attributes and events that journeys and templates may use."
    for name, definition in [("Catalogue", schema), *schema.get("$defs", {}).items()]:
        for field, spec in definition.get("properties", {}).items():
            key = "profile_flag" if (name == "Attribute" and field == "profile") else field
            if key in _CATALOGUE_DESCRIPTIONS:
                spec.setdefault("description", _CATALOGUE_DESCRIPTIONS[key])
    return {"$schema": _DRAFT, **schema}
