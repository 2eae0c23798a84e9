"""The authoring schema: what a journey file may contain, as pydantic models.

These models mirror the YAML a marketer writes (``if``, ``else``, ``with`` and all), validate its
shape, and produce the JSON Schema that editors use for completion (``kairos schema``). Whether
names exist (events, attributes, templates, step ids) is the compiler's business; here we only
check what can be checked from the file alone.

Pydantic's errors are written for programmers, so :func:`validate_document` maps each one back
to the ``file:line:col`` of the offending key or value (the nearest parent when a key is
missing), drops the union tags pydantic inserts into error locations, and rewrites the message
in the journey's own words with what would be right.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import UnionType
from typing import (
    Annotated,
    Any,
    ClassVar,
    ForwardRef,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WithJsonSchema,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from kairos.catalogue import Catalogue
from kairos.durations import EXAMPLES as DURATION_EXAMPLES
from kairos.durations import DurationError, parse_duration
from kairos.plan import Category, Channel, Entry, Stage
from kairos.problems import Problem, did_you_mean, quote_list, suggestion
from kairos.yaml_source import Position, YamlDocument, YamlPath, format_path

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
TEMPLATE_PATTERN = r"^[A-Za-z0-9_-]+/[A-Za-z0-9_-]+$"
HHMM_PATTERN = r"^([01]?\d|2[0-3]):[0-5]\d$"
LOCALE_PATTERN = r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"

# What each pattern means, for error messages.
PATTERN_WORDS: Mapping[str, tuple[str, str]] = {
    NAME_PATTERN: (
        "is not a valid name",
        "use lowercase letters, digits and _, starting with a letter, such as first_reminder",
    ),
    TEMPLATE_PATTERN: (
        "is not a template name",
        "write <folder>/<message>, such as cart_abandonment/reminder",
    ),
    HHMM_PATTERN: ("is not a time of day", 'write 24-hour HH:MM in quotes, such as "09:00"'),
    LOCALE_PATTERN: ("is not a locale", "use a language code such as en, fi or de-AT"),
}

JOURNEY_STAGES = ("awareness", "consideration", "purchase", "retention", "advocacy")


# --- scalar types ----------------------------------------------------------------------------


def _kairos_error(message: str, hint: str = "") -> PydanticCustomError:
    """An error whose message and hint are already in the marketer's words."""
    return PydanticCustomError("kairos", "{message}", {"message": message, "hint": hint})


_UNIT_WORDS = (
    "s", "m", "h", "d", "w", "sec", "secs", "second", "seconds", "min", "mins", "minute",
    "minutes", "hr", "hrs", "hour", "hours", "day", "days", "week", "weeks",
)  # fmt: skip


_UNIT_PLURALS = ("seconds", "minutes", "hours", "days", "weeks")


def _duration(value: Any, *, positive: bool) -> str:
    """Check a duration as written; keep the text (the compiler converts it to seconds)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _kairos_error(f"expected a duration, got {describe(value)}", DURATION_EXAMPLES)
    if isinstance(value, int):
        raise _kairos_error(
            f"`{value}` has no unit", f"write {value}m, {value}h or {value}d: {DURATION_EXAMPLES}"
        )
    try:
        seconds = parse_duration(value)
    except DurationError:
        raise _kairos_error(f"`{value}` is not a duration", _duration_hint(value)) from None
    if positive and seconds <= 0:
        raise _kairos_error(f"`{value}` is not longer than zero", DURATION_EXAMPLES)
    return value


def _duration_hint(text: str) -> str:
    """Did-you-mean on the first unknown unit (``3 dayz`` -> ``3 days``), else the examples."""
    for match in re.finditer(r"(-?\d+)(\s*)([A-Za-z]+)", text):
        unit = match.group(3).lower()
        if unit in _UNIT_WORDS:
            continue
        close = did_you_mean(unit, _UNIT_PLURALS) or did_you_mean(unit, _UNIT_WORDS)
        if close is not None:
            fixed = text[: match.start(3)] + close + text[match.end(3) :]
            return f"did you mean `{fixed.strip()}`? {DURATION_EXAMPLES}"
        return f"unknown unit `{match.group(3)}`: {DURATION_EXAMPLES}"
    return DURATION_EXAMPLES


_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*-?\s*(\d+\s*[A-Za-z]+\s*)+$",
    "examples": ["30m", "1h", "2d", "1w", "1d 12h"],
}

Duration = Annotated[
    str,
    BeforeValidator(lambda v: _duration(v, positive=True)),
    WithJsonSchema({**_DURATION_SCHEMA, "description": "A duration: 30m, 1h, 2d, 1w, 1d 12h."}),
]
Offset = Annotated[
    str,
    BeforeValidator(lambda v: _duration(v, positive=False)),
    WithJsonSchema(
        {**_DURATION_SCHEMA, "description": "A duration added to a date; negative is before: -3d."}
    ),
]


def _until(value: Any) -> str:
    if not isinstance(value, str):
        raise _kairos_error(f"expected a time or a date attribute, got {describe(value)}", _UNTIL)
    text = value.strip()
    if re.match(HHMM_PATTERN, text):
        hours, minutes = text.split(":")
        return f"{int(hours):02d}:{minutes}"
    if re.match(r"^customer\.[A-Za-z_][A-Za-z0-9_]*$", text):
        return text
    raise _kairos_error(f"`{value}` is neither a time of day nor a date attribute", _UNTIL)


_UNTIL = 'write a time of day such as "09:00", or a date attribute such as customer.trial_ends_at'

Until = Annotated[
    str,
    BeforeValidator(_until),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(([01]?\d|2[0-3]):[0-5]\d|customer\.[A-Za-z_][A-Za-z0-9_]*)$",
            "description": 'A local time of day ("09:00") or a date attribute (customer.x).',
        }
    ),
]

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
TimeOfDay = Annotated[str, Field(pattern=HHMM_PATTERN, examples=["21:00", "08:00"])]
EventName = Annotated[str, Field(min_length=1, description="An event from customer.yaml.")]
Condition = Annotated[
    str,
    Field(
        min_length=1,
        description="A Jinja expression over customer, event and journey (no {{ }}).",
        examples=["event.cart_total > 0", "customer.phone and customer.consent.sms"],
    ),
]


def describe(value: Any) -> str:
    """How a YAML value looks to its author: ``text "abc"``, ``the number 5``, ``a list``."""
    match value:
        case None:
            return "nothing"
        case bool():
            return f"`{'true' if value else 'false'}`"
        case int() | float():
            return f"the number {value}"
        case str():
            return f'the text "{value}"'
        case list():
            return "a list"
        case dict():
            return "a mapping"
        case _:
            return f"`{value}`"


# --- models ----------------------------------------------------------------------------------


class Model(BaseModel):
    """Base for authoring models: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # What the model is called in error messages ("a send step takes ...").
    noun: ClassVar[str] = "mapping"


class EventMatchSpec(Model):
    """An event, with an optional condition over it."""

    noun: ClassVar[str] = "event match"

    event: EventName
    when: Condition | None = Field(None, description="Only events for which this holds count.")


def _event_ref_tag(value: Any) -> str | None:
    return "name" if isinstance(value, str) else "match" if isinstance(value, dict) else None


EventRef = Annotated[
    Annotated[EventName, Tag("name")] | Annotated[EventMatchSpec, Tag("match")],
    Discriminator(
        _event_ref_tag,
        custom_error_type="event_ref",
        custom_error_message="expected an event name or {event: name, when: condition}",
    ),
]


def _events_tag(value: Any) -> str | None:
    if isinstance(value, list):
        return "list"
    return _event_ref_tag(value)


Events = Annotated[
    Annotated[EventName, Tag("name")]
    | Annotated[EventMatchSpec, Tag("match")]
    | Annotated[list[EventRef], Tag("list"), Field(min_length=1)],
    Discriminator(
        _events_tag,
        custom_error_type="event_ref",
        custom_error_message="expected an event name or {event: name, when: condition}",
    ),
]


class StepBase(Model):
    id: Name | None = Field(
        None,
        description="Names the step for goto, reports and the UI. Derived from the step when "
        "missing (send_email_cart_reminder, wait_1h, ...).",
    )


class SendStep(StepBase):
    """Render a message in the customer's locale and deliver it."""

    noun: ClassVar[str] = "send step"

    send: Channel = Field(description="The channel: email or sms.")
    template: str = Field(
        pattern=TEMPLATE_PATTERN,
        description="templates/<folder>/<message>.<locale>.<part>.j2, written <folder>/<message>.",
        examples=["cart_abandonment/reminder"],
    )
    fallback: Channel | None = Field(
        None, description="The other channel, used when this one is impossible for the customer."
    )
    give_up_after: Duration | None = Field(
        None,
        description="How long the send keeps trying (provider outages, rate limits) before the "
        "journey goes on without it, such as 2h for a cart reminder. Default: the journey's "
        "give_up_after, else 24h.",
    )


class WaitUntil(Model):
    """Wait until a local time of day, or until a date held in a profile attribute."""

    noun: ClassVar[str] = "wait until"

    until: Until = Field(description='"09:00" (customer\'s timezone) or customer.<date attribute>.')
    offset: Offset | None = Field(None, description="Added to a date attribute: 7d, -3d.")


def _wait_tag(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return "duration"
    return "until" if isinstance(value, dict) else None


class WaitStep(StepBase):
    """Pause the run: for a duration, until a time of day, or until a date."""

    noun: ClassVar[str] = "wait step"

    wait: Annotated[
        Annotated[Duration, Tag("duration")] | Annotated[WaitUntil, Tag("until")],
        Discriminator(
            _wait_tag,
            custom_error_type="wait_value",
            custom_error_message="expected a duration or {until: ...}",
        ),
    ] = Field(description='A duration (2d), or {until: "09:00"} or {until: customer.x}.')


class WaitForStep(StepBase):
    """Wait for the first of some events, or the timeout; each outcome may run its own steps."""

    noun: ClassVar[str] = "wait_for step"

    wait_for: Events = Field(description="One event, a list of events, or {event, when} items.")
    timeout: Duration = Field(description="How long to wait at most, such as 23h.")
    on: dict[EventName, StepList] | None = Field(
        None, description="Steps to run when an event arrives, by event name."
    )
    on_timeout: StepList | None = Field(None, description="Steps to run when the timeout passes.")


class IfCase(Model):
    noun: ClassVar[str] = "branch case"

    if_: Condition = Field(alias="if", description="The condition of the first case.")
    steps: StepList = Field(description="Steps to run when the condition holds.")


class ElifCase(Model):
    noun: ClassVar[str] = "branch case"

    elif_: Condition = Field(alias="elif", description="Checked when the cases above did not hold.")
    steps: StepList = Field(description="Steps to run when the condition holds.")


class ElseCase(Model):
    noun: ClassVar[str] = "branch case"

    else_: StepList = Field(alias="else", description="Steps to run when no case held.")


_CASE_KEYS = ("if", "elif", "else")


def _case_tag(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    found = [key for key in _CASE_KEYS if key in value]
    return found[0] if len(found) == 1 else None


BranchCase = Annotated[
    Annotated[IfCase, Tag("if")]
    | Annotated[ElifCase, Tag("elif")]
    | Annotated[ElseCase, Tag("else")],
    Discriminator(
        _case_tag,
        custom_error_type="branch_case",
        custom_error_message="expected {if: ..., steps: [...]}, {elif: ...} or {else: [...]}",
    ),
]


class BranchStep(StepBase):
    """If / elif / else: the first case whose condition holds runs."""

    noun: ClassVar[str] = "branch step"

    branch: list[BranchCase] = Field(
        min_length=1, description="Cases in order: one if, any number of elif, an optional else."
    )


class Variant(Model):
    noun: ClassVar[str] = "split variant"

    name: Name = Field(description="Names the variant in reports: a, b, control, discount.")
    weight: int = Field(gt=0, description="Relative share of customers, more than 0.")
    steps: list[Step] = Field(
        default_factory=list, description="Steps for this variant; none to just continue."
    )


class SplitSpec(Model):
    noun: ClassVar[str] = "split"

    variants: list[Variant] = Field(min_length=1, description="The variants and their weights.")
    holdout: int = Field(
        0,
        ge=0,
        lt=100,
        description="Percent held out: they continue after the split but get no messages.",
    )


class SplitStep(StepBase):
    """Send customers down weighted variants, the same one every time for a customer."""

    noun: ClassVar[str] = "split step"

    split: SplitSpec = Field(description="{variants: [...], holdout: 10}")


class SetSpec(Model):
    noun: ClassVar[str] = "set"

    stage: Stage | None = Field(None, description="Move the customer to this lifecycle stage.")
    attributes: dict[str, Any] = Field(
        default_factory=dict, description="Profile attributes to set; {{ }} in text is rendered."
    )
    increment: dict[str, float] = Field(
        default_factory=dict, description="Numeric profile attributes to add to (or subtract)."
    )


class SetStep(StepBase):
    """Update the customer's profile."""

    noun: ClassVar[str] = "set step"

    set: SetSpec = Field(description="{stage: ..., attributes: {...}, increment: {...}}")


class WebhookSpec(Model):
    noun: ClassVar[str] = "webhook"

    webhook: str = Field(description="The http(s) URL to call.")
    method: Literal["POST", "PUT", "PATCH", "GET"] = Field("POST", description="HTTP method.")
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers.")
    body: Any = Field(None, description="JSON body; text values may use {{ }}.")


def _action_tag(value: Any) -> str | None:
    return "name" if isinstance(value, str) else "webhook" if isinstance(value, dict) else None


class ActionStep(StepBase):
    """Call a registered action (issue_coupon, ...) or a webhook."""

    noun: ClassVar[str] = "action step"

    action: Annotated[
        Annotated[str, Tag("name")] | Annotated[WebhookSpec, Tag("webhook")],
        Discriminator(
            _action_tag,
            custom_error_type="action_value",
            custom_error_message="expected an action name or {webhook: url}",
        ),
    ] = Field(description="A registered action's name, or {webhook: https://...}.")
    with_: dict[str, Any] = Field(
        default_factory=dict, alias="with", description="Arguments for the action."
    )
    save_as: Name | None = Field(None, description="Keep the result as journey.<save_as>.")


class GotoStep(StepBase):
    """Continue at another step (a loop)."""

    noun: ClassVar[str] = "goto step"

    goto: Name = Field(description="The id of the step to continue at.")


class ExitStep(StepBase):
    """End the run here with an outcome."""

    noun: ClassVar[str] = "exit step"

    exit: Name = Field(description="The outcome, such as lapsed or not_interested.")


STEP_MODELS: Mapping[str, type[StepBase]] = {
    "send": SendStep,
    "wait": WaitStep,
    "wait_for": WaitForStep,
    "branch": BranchStep,
    "split": SplitStep,
    "set": SetStep,
    "action": ActionStep,
    "goto": GotoStep,
    "exit": ExitStep,
}
STEP_KINDS = tuple(STEP_MODELS)


def step_kind(value: Any) -> str | None:
    """The kind of a step as written: the one kind key it has, or None."""
    if not isinstance(value, dict):
        return None
    found = [kind for kind in STEP_KINDS if kind in value]
    return found[0] if len(found) == 1 else None


Step = Annotated[
    Annotated[SendStep, Tag("send")]
    | Annotated[WaitStep, Tag("wait")]
    | Annotated[WaitForStep, Tag("wait_for")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[SplitStep, Tag("split")]
    | Annotated[SetStep, Tag("set")]
    | Annotated[ActionStep, Tag("action")]
    | Annotated[GotoStep, Tag("goto")]
    | Annotated[ExitStep, Tag("exit")],
    Discriminator(step_kind, custom_error_type="step_kind", custom_error_message="not a step"),
]
StepList = Annotated[list[Step], Field(min_length=1)]
# The same union without pydantic's tags, for code that dispatches on the kind of a step.
StepSpec = (
    SendStep
    | WaitStep
    | WaitForStep
    | BranchStep
    | SplitStep
    | SetStep
    | ActionStep
    | GotoStep
    | ExitStep
)


class QuietHoursSpec(Model):
    noun: ClassVar[str] = "quiet_hours"

    start: TimeOfDay = Field(description="Local time the quiet window starts.")
    end: TimeOfDay = Field(description="Local time it ends (may be the next morning).")


class SmsLimitsSpec(Model):
    noun: ClassVar[str] = "sms"

    max_segments: int | None = Field(
        None,
        ge=1,
        le=10,
        description="Warn when an SMS of this journey needs more segments than this (each "
        "segment is billed).",
    )
    alphabet: Literal["gsm-7", "any"] = Field(
        "any",
        description="gsm-7: warn when a character would send an SMS of this journey as UCS-2 "
        "(70 characters a segment instead of 160).",
    )


def _quiet_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return "window"
    return "off" if value in ("off", False) else None


class EventTriggerSpec(Model):
    noun: ClassVar[str] = "event trigger"

    event: EventName = Field(description="The event that starts the journey.")
    when: Condition | None = Field(None, description="Start only when this holds.")


class DateTriggerSpec(Model):
    noun: ClassVar[str] = "date trigger"

    date: Annotated[str, Field(pattern=r"^customer\.[A-Za-z_][A-Za-z0-9_]*$")] = Field(
        description="A datetime or date profile attribute, such as customer.last_order_at."
    )
    offset: Offset | None = Field(None, description="How long after that date: 60d, -7d.")
    when: Condition | None = Field(None, description="Start only when this holds.")


class SegmentTriggerSpec(Model):
    noun: ClassVar[str] = "segment trigger"

    segment: Name = Field(
        description="A segment of segments/*.yaml: the journey starts when a customer enters it."
    )


_TRIGGER_KEYS = ("event", "date", "segment")


def _trigger_tag(value: Any) -> str | None:
    if value == "api":
        return "api"
    if isinstance(value, dict):
        present = [key for key in _TRIGGER_KEYS if key in value]
        if len(present) == 1:
            return present[0]
    return None


Trigger = Annotated[
    Annotated[Literal["api"], Tag("api")]
    | Annotated[EventTriggerSpec, Tag("event")]
    | Annotated[DateTriggerSpec, Tag("date")]
    | Annotated[SegmentTriggerSpec, Tag("segment")],
    Discriminator(_trigger_tag, custom_error_type="trigger_value", custom_error_message="trigger"),
]


class JourneySpec(Model):
    """A journey file, as written."""

    model_config = ConfigDict(title="Kairos journey", extra="forbid", frozen=True)
    noun: ClassVar[str] = "journey"

    journey: Name = Field(description="The journey's name; equals the file name without .yaml.")
    description: str = Field("", description="One sentence on what the journey is for.")
    stage: Literal["awareness", "consideration", "purchase", "retention", "advocacy"] | None = (
        Field(None, description="The lifecycle stage this journey serves.")
    )
    category: Category = Field(
        Category.marketing,
        description="marketing (default) or transactional: transactional messages ignore "
        "marketing opt-outs and frequency caps.",
    )
    priority: int = Field(50, ge=0, le=100, description="0..100; higher wins when caps contend.")
    locales: list[Annotated[str, Field(pattern=LOCALE_PATTERN)]] | None = Field(
        None, min_length=1, description="Every template must exist in each. Default: [en]."
    )
    default_locale: Annotated[str, Field(pattern=LOCALE_PATTERN)] | None = Field(
        None, description="Used when a customer's locale is missing; one of locales."
    )
    quiet_hours: (
        Annotated[
            Annotated[QuietHoursSpec, Tag("window")] | Annotated[Literal["off", False], Tag("off")],
            Discriminator(
                _quiet_tag, custom_error_type="quiet_hours", custom_error_message="quiet_hours"
            ),
        ]
        | None
    ) = Field(None, description='{start: "21:00", end: "08:00"}, or off.')
    sms: SmsLimitsSpec | None = Field(
        None, description="What every SMS must keep to, such as {max_segments: 1, alphabet: gsm-7}."
    )
    give_up_after: Duration | None = Field(
        None,
        description="How long each send keeps trying before the journey goes on without it "
        "(a send step may say otherwise). Default: 24h.",
    )
    trigger: Trigger = Field(
        description="api, {event: name, when: ...}, {date: customer.x, offset: 60d} or "
        "{segment: name}."
    )
    entry: Entry = Field(
        Entry.after_exit,
        description="once, after_exit (default) or restart: what a new trigger does.",
    )
    exit_on: Events | None = Field(
        None, description="Goal events: the run ends as converted when one arrives."
    )
    conversion_window: Duration | None = Field(
        None,
        description="How long after entering a goal (exit_on) counts as a conversion in "
        "kairos report, such as 7d. Default: whenever the run reaches it.",
    )
    steps: StepList = Field(description="What happens, in order.")


for _model in (
    WaitForStep, IfCase, ElifCase, ElseCase, Variant, SplitSpec, SplitStep, BranchStep,
    JourneySpec,
):  # fmt: skip
    _model.model_rebuild()


# --- JSON Schema ------------------------------------------------------------------------------

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


# --- validation with located, readable errors -------------------------------------------------

M = TypeVar("M", bound=BaseModel)


def validate_document(model: type[M], doc: YamlDocument) -> tuple[M | None, list[Problem]]:
    """Validate ``doc`` against ``model``; every problem located in the YAML and explained."""
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        errors = [dict(error) for error in exc.errors(include_url=False)]
        problems = [explain(model, doc, error) for error in errors if not _misspelt(error, errors)]
        return None, _unique(problems)


def _misspelt(error: dict[str, Any], errors: list[dict[str, Any]]) -> bool:
    """A missing key that an unknown key beside it is a typo of: one problem is enough."""
    if error["type"] != "missing":
        return False
    loc = tuple(error["loc"])
    for other in errors:
        other_loc = tuple(other["loc"])
        beside = other["type"] == "extra_forbidden" and other_loc[:-1] == loc[:-1]
        if beside and did_you_mean(str(other_loc[-1]), [str(loc[-1])]) is not None:
            return True
    return False


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: list[Problem] = []
    for problem in problems:
        if problem not in seen:
            seen.append(problem)
    return seen


class _Walk:
    """Where a pydantic error location leads, in the document and in the models."""

    def __init__(self) -> None:
        self.path: list[str | int] = []
        self.owner: type[BaseModel] | None = None  # the model holding the last key
        self.field: FieldInfo | None = None
        self.tp: Any = None


def walk(model: type[BaseModel], loc: tuple[str | int, ...]) -> _Walk:
    """Follow ``loc`` through the model types, dropping the union tags pydantic inserts.

    Pydantic puts the tag of the chosen union member into the location
    (``steps.0.send.template``); only the type structure can tell a tag from a key of the
    same name, so we walk the types alongside.
    """
    state = _Walk()
    state.tp = model
    for part in loc:
        tp = _unwrap(state.tp)
        tags = _tags(tp)
        if tags is not None and isinstance(part, str) and part in tags:
            state.tp = tags[part]
            continue
        state.path.append(part)
        state.tp = _step_into(state, tp, part)
    return state


def _step_into(state: _Walk, tp: Any, part: str | int) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        state.owner = tp
        state.field = _field(tp, str(part))
        if state.field is None:
            return None
        # Pydantic moves a field's own Annotated metadata (the Discriminator) off the type.
        tagged = [m for m in state.field.metadata if isinstance(m, Discriminator)]
        if tagged:
            return Annotated[state.field.annotation, tagged[0]]
        return state.field.annotation
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (list, tuple) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _field(model: type[BaseModel], key: str) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if (info.alias or name) == key:
            return info
    return None


def _unwrap(tp: Any) -> Any:
    """Strip Annotated wrappers (keeping tagged unions), forward refs and Optional."""
    while True:
        if isinstance(tp, ForwardRef):
            tp = globals()[tp.__forward_arg__]
        elif isinstance(tp, str):
            tp = globals()[tp]
        elif get_origin(tp) is Annotated and _tags(tp) is None:
            tp = get_args(tp)[0]
        elif get_origin(tp) in (Union, UnionType):
            arms = [a for a in get_args(tp) if a is not type(None)]
            if len(arms) != 1:
                return tp
            tp = arms[0]
        else:
            return tp


def _tags(tp: Any) -> dict[str, Any] | None:
    """For ``Annotated[Union[Annotated[X, Tag(t)], ...], Discriminator]``: tag -> member."""
    if get_origin(tp) is not Annotated:
        return None
    inner, *meta = get_args(tp)
    if not any(isinstance(m, Discriminator) for m in meta):
        return None
    members: dict[str, Any] = {}
    for arm in get_args(inner):
        if get_origin(arm) is Annotated:
            for tag in get_args(arm)[1:]:
                if isinstance(tag, Tag):
                    members[tag.tag] = arm
    return members


def noun_of(model: type[BaseModel] | None) -> str:
    """What a model is called in messages: ``send step``, ``attribute``."""
    if model is None:
        return "mapping"
    return _CATALOGUE_NOUNS.get(model.__name__) or str(getattr(model, "noun", "mapping"))


_CATALOGUE_NOUNS = {
    "Catalogue": "customer catalogue",
    "Attribute": "attribute",
    "EventSpec": "event",
}


def allowed_keys(model: type[BaseModel]) -> list[str]:
    """The keys a model accepts, as written in YAML."""
    return [info.alias or name for name, info in model.model_fields.items()]


def explain(model: type[BaseModel], doc: YamlDocument, error: dict[str, Any]) -> Problem:
    """One pydantic error as a located problem in the author's words."""
    state = walk(model, tuple(error["loc"]))
    path: YamlPath = tuple(state.path)
    handler = _HANDLERS.get(error["type"], _generic)
    message, hint, at = handler(doc, path, state, error)
    where = at or doc.positions.value(path)
    return Problem(doc.file, where.line, where.col, format_path(path), message, hint)


Explained = tuple[str, str, Position | None]
Handler = Callable[[YamlDocument, YamlPath, _Walk, dict[str, Any]], Explained]


def _extra(doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]) -> Explained:
    key = str(path[-1])
    owner = state.owner
    if owner is None:
        return f"unknown key `{key}`", "", doc.positions.key(path)
    keys = allowed_keys(owner)
    close = did_you_mean(key, keys)
    if close is not None:
        hint = f"did you mean `{close}`?"
    else:
        hint = f"a {noun_of(owner)} takes {quote_list(keys)}"
    if owner is JourneySpec and key in STEP_KINDS:
        hint = "steps go in the list under `steps:`"
    return f"unknown key `{key}`", hint, doc.positions.key(path)


def _missing(doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]) -> Explained:
    key = str(path[-1])
    noun = noun_of(state.owner)
    at = doc.positions.value(path[:-1])
    if doc.data is None:
        return "the file is empty", _START, Position(1, 1)
    examples = state.field.examples if state.field is not None else None
    if key in _MISSING_HINTS:
        hint = _MISSING_HINTS[key]
    elif examples:
        hint = f"add `{key}: {examples[0]}`"
    elif state.field is not None and state.field.description:
        hint = f"add `{key}:` {state.field.description[0].lower()}{state.field.description[1:]}"
    else:
        hint = f"add `{key}:`"
    return f"a {noun} needs `{key}`", hint.rstrip("."), at


_MISSING_HINTS = {
    "journey": "add `journey: <name>`, the file name without .yaml",
    "trigger": "add `trigger: {event: <name>}` to start on an event, or `trigger: api`",
    "steps": "add `steps:` with a list of steps under it, such as `- wait: 1h`",
    "timeout": "add `timeout:` with how long to wait at most, such as `timeout: 23h`",
    "weight": "add `weight:`, a whole number more than 0, such as `weight: 50`",
    "name": "add `name:`, such as `name: a`",
    "variants": "add `variants:`, a list of {name, weight, steps}",
    "until": 'add `until: "09:00"` or `until: customer.<date attribute>`',
    "start": 'add `start: "21:00"`',
    "end": 'add `end: "08:00"`',
}

_START = "a journey starts with `journey: <name>`, then `trigger:` and `steps:`"


_TYPE_WORDS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}


def _wrong_type(
    doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]
) -> Explained:
    expected = _TYPE_WORDS[error["type"]]
    value = error.get("input")
    name = f"`{path[-1]}`" if path and isinstance(path[-1], str) else "this item"
    if not path:
        if value is None:
            return "the file is empty", _START, Position(1, 1)
        return f"expected a mapping of settings, got {describe(value)}", _START, None
    if value is None:
        return f"{name} has no value", f"expected {expected}", None
    if error["type"] in ("list_type", "tuple_type"):
        return f"expected {expected}, got {describe(value)}", "start each item with `- `", None
    description = (state.field.description or "") if state.field is not None else ""
    hint = description[:1].lower() + description[1:].rstrip(".")
    return f"expected {expected}, got {describe(value)}", hint, None


def _choice(doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]) -> Explained:
    options = re.findall(r"'([^']*)'", str(error.get("ctx", {}).get("expected", "")))
    value = error.get("input")
    hint = suggestion(str(value), options) if isinstance(value, str) else ""
    if not hint.startswith("did you mean"):
        hint = f"use {quote_list(options)}" if options else hint
    return f"{describe(value)} is not allowed here", hint, None


def _pattern(doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]) -> Explained:
    pattern = str(error.get("ctx", {}).get("pattern", ""))
    what, hint = PATTERN_WORDS.get(pattern, ("does not have the expected form", pattern))
    if pattern.startswith(r"^customer\."):
        what, hint = "is not a profile attribute", "write customer.<attribute>"
    return f"`{error.get('input')}` {what}", hint, None


def _bound(doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]) -> Explained:
    ctx = error.get("ctx", {})
    words = {
        "greater_than": ("more than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    phrase, key = words[error["type"]]
    return f"{describe(error.get('input'))} is out of range", f"must be {phrase} {ctx[key]}", None


def _too_short(doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]) -> Explained:
    name = str(path[-1]) if path else "list"
    if error["type"] == "string_too_short":
        return f"`{name}` is empty", "write a name or a condition here", None
    items = {"variants": "variant", "branch": "case", "wait_for": "event", "exit_on": "event"}
    items["locales"] = "locale"
    item = items.get(name, "step")
    minimum = error.get("ctx", {}).get("min_length", 1)
    return f"`{name}` is empty", f"list at least {minimum} {item}", None


def _custom(doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]) -> Explained:
    ctx = error.get("ctx", {})
    return str(ctx.get("message", error["msg"])), str(ctx.get("hint", "")), None


def _step_kind(doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]) -> Explained:
    value = error.get("input")
    kinds = quote_list(STEP_KINDS)
    if not isinstance(value, dict):
        return f"a step must be a mapping, not {describe(value)}", "such as `- wait: 1h`", None
    present = [kind for kind in STEP_KINDS if kind in value]
    if len(present) > 1:
        return (
            f"one step has {quote_list(present, conj='and')}",
            "write one kind per step, each after `- `",
            (doc.positions.key((*path, present[1]))),
        )
    unknown = [key for key in value if key != "id" and not _step_key(key)]
    if unknown:
        close = did_you_mean(unknown[0], STEP_KINDS)
        hint = f"did you mean `{close}`?" if close else f"a step starts with {kinds}"
        return f"unknown step kind `{unknown[0]}`", hint, doc.positions.key((*path, unknown[0]))
    return "this step has no kind", f"add one of {kinds}", None


def _step_key(key: str) -> bool:
    return any(key in allowed_keys(model) for model in STEP_MODELS.values())


def _union_value(
    doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]
) -> Explained:
    value = error.get("input")
    got = describe(value)
    match error["type"]:
        case "wait_value":
            return (
                f"expected a duration or {{until: ...}}, got {got}",
                ('such as `wait: 2d` or `wait: {until: "09:00"}`'),
                None,
            )
        case "action_value":
            return (
                f"expected an action name or {{webhook: ...}}, got {got}",
                ("such as `action: issue_coupon` or `action: {webhook: https://...}`"),
                None,
            )
        case "event_ref":
            return (
                f"expected an event name, got {got}",
                ('such as `order_placed` or `{event: order_placed, when: "event.total > 0"}`'),
                None,
            )
        case "quiet_hours":
            return (
                f"expected a window or off, got {got}",
                ('such as `quiet_hours: {start: "21:00", end: "08:00"}` or `quiet_hours: off`'),
                None,
            )
        case "branch_case":
            return _branch_case(value)
        case _:
            return _trigger(value)


def _branch_case(value: Any) -> Explained:
    hint = 'such as `- if: "..."` with `steps:`, `- elif: ...` or `- else: [...]`'
    if isinstance(value, dict):
        present = [key for key in _CASE_KEYS if key in value]
        if len(present) > 1:
            return (
                f"one case has {quote_list(present, conj='and')}",
                "write each case after its own `- `",
                None,
            )
        return "a branch case needs `if`, `elif` or `else`", hint, None
    return f"expected a branch case, got {describe(value)}", hint, None


def _trigger(value: Any) -> Explained:
    hint = (
        "use `trigger: api`, `trigger: {event: <name>}`, `trigger: {date: customer.<x>}` or "
        "`trigger: {segment: <name>}`"
    )
    if isinstance(value, str):
        return (
            f"`trigger: {value}` is not a trigger",
            (f"to start on an event write `trigger: {{event: {value}}}`; otherwise `trigger: api`"),
            None,
        )
    present = [key for key in _TRIGGER_KEYS if isinstance(value, dict) and key in value]
    if len(present) > 1:
        return f"a trigger has one of {quote_list(present, conj='or')}, not both", hint, None
    if isinstance(value, dict):
        return "a trigger needs `event`, `date` or `segment`", hint, None
    return f"expected a trigger, got {describe(value)}", hint, None


def _generic(doc: YamlDocument, path: YamlPath, state: _Walk, error: dict[str, Any]) -> Explained:
    return str(error["msg"]), "", None


_HANDLERS: Mapping[str, Handler] = {
    "extra_forbidden": _extra,
    "missing": _missing,
    **{name: _wrong_type for name in _TYPE_WORDS},
    "literal_error": _choice,
    "enum": _choice,
    "string_pattern_mismatch": _pattern,
    "greater_than": _bound,
    "greater_than_equal": _bound,
    "less_than": _bound,
    "less_than_equal": _bound,
    "too_short": _too_short,
    "string_too_short": _too_short,
    "kairos": _custom,
    "step_kind": _step_kind,
    "wait_value": _union_value,
    "action_value": _union_value,
    "event_ref": _union_value,
    "quiet_hours": _union_value,
    "branch_case": _union_value,
    "trigger_value": _union_value,
}
