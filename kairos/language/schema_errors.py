"""Pydantic's errors in the journey's own words, where they are.

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
    ForwardRef,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

from pydantic import (
    BaseModel,
    Discriminator,
    Tag,
    ValidationError,
)
from pydantic.fields import FieldInfo

from kairos.language.problems import Problem, did_you_mean, quote_list, suggestion
from kairos.language.schema import (
    CASE_KEYS,
    PATTERN_WORDS,
    STEP_KINDS,
    STEP_MODELS,
    TRIGGER_KEYS,
    JourneySpec,
    describe,
)
from kairos.language.yaml_source import Position, YamlDocument, YamlPath, format_path

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
        present = [key for key in CASE_KEYS if key in value]
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
    present = [key for key in TRIGGER_KEYS if isinstance(value, dict) and key in value]
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
