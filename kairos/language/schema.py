"""The authoring schema: what a journey file may contain, as pydantic models.

These models mirror the YAML a marketer writes (``if``, ``else``, ``with`` and all), validate its
shape, and are what the JSON Schema editors use for completion is made from
(:mod:`kairos.language.schema_export`, ``kairos schema``). Whether names exist (events, attributes,
templates, step ids) is the compiler's business; here we only check what can be checked from
the file alone. Pydantic's errors are put in the journey's own words, at the file:line they
are about, by :mod:`kairos.language.schema_errors`.

Why ~640 lines: it is the language's whole surface, one small model per step kind and its
parts, each with the field descriptions editors show; they refer to one another and are
rebuilt together at the end, so they stay in one file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
)

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from kairos.language.durations import EXAMPLES as DURATION_EXAMPLES
from kairos.language.durations import DurationError, parse_duration
from kairos.language.plan import Category, Channel, Entry, Stage
from kairos.language.problems import did_you_mean

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


CASE_KEYS = ("if", "elif", "else")


def _case_tag(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    found = [key for key in CASE_KEYS if key in value]
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


TRIGGER_KEYS = ("event", "date", "segment")


def _trigger_tag(value: Any) -> str | None:
    if value == "api":
        return "api"
    if isinstance(value, dict):
        present = [key for key in TRIGGER_KEYS if key in value]
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
