"""The authoring schema: JSON Schema for editors, and pydantic errors in the journey's words."""

from __future__ import annotations

import json

from kairos.language.schema import STEP_KINDS, JourneySpec
from kairos.language.schema_errors import validate_document
from kairos.language.schema_export import customer_json_schema, journey_json_schema
from kairos.language.yaml_source import load_yaml


def _problems(text: str) -> list[str]:
    doc, problems = load_yaml(text, "j.yaml")
    assert doc is not None, problems
    _, problems = validate_document(JourneySpec, doc)
    return [p.headline() for p in problems]


def test_journey_schema_is_json_and_offers_every_step_kind() -> None:
    schema = json.loads(json.dumps(journey_json_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"journey", "trigger", "steps"}
    steps = schema["properties"]["steps"]["items"]["oneOf"]
    kinds: set[str] = set()
    for ref in steps:
        definition = schema["$defs"][ref["$ref"].split("/")[-1]]
        kinds.update(k for k in definition["required"] if k in STEP_KINDS)
        assert definition["additionalProperties"] is False
    assert kinds == set(STEP_KINDS)
    branch_case = json.dumps(schema["$defs"]["IfCase"])
    assert '"if"' in branch_case and "if_" not in branch_case


def test_customer_schema_describes_attribute_types() -> None:
    schema = customer_json_schema()
    attribute = schema["$defs"]["Attribute"]["properties"]
    assert "email" in json.dumps(attribute["type"])
    assert attribute["type"]["description"].startswith("string, number")


def test_union_tags_never_appear_in_paths() -> None:
    assert _problems("journey: j\ntrigger: api\nsteps:\n  - send: emial\n    template: a/b\n") == [
        'j.yaml:4:11: steps[0].send: the text "emial" is not allowed here (did you mean `email`?)'
    ]
    assert _problems("journey: j\ntrigger: {event: a, whn: x}\nsteps: [{exit: done}]\n") == [
        "j.yaml:2:21: trigger.whn: unknown key `whn` (did you mean `when`?)"
    ]


def test_a_missing_key_points_at_its_parent() -> None:
    assert _problems("journey: j\ntrigger: api\nsteps:\n  - split:\n      holdout: 5\n") == [
        "j.yaml:4:5: steps[0].split.variants: a split needs `variants` "
        "(add `variants:`, a list of {name, weight, steps})"
    ]


def test_nested_steps_are_validated_like_top_level_ones() -> None:
    text = (
        "journey: j\ntrigger: api\nsteps:\n  - branch:\n      - if: x\n        steps:\n"
        "          - wait: soon\n      - else:\n          - exit: 5\n"
    )
    assert _problems(text) == [
        "j.yaml:7:19: steps[0].branch[0].steps[0].wait: `soon` is not a duration "
        "(a duration such as 30m, 1h, 2d, 1w or 1d 12h)",
        "j.yaml:9:19: steps[0].branch[1].else[0].exit: expected text, got the number 5 "
        "(the outcome, such as lapsed or not_interested)",
    ]


def test_a_valid_journey_has_no_problems() -> None:
    text = (
        "journey: j\ntrigger: api\nquiet_hours: off\nexit_on: order_placed\nsteps:\n  - wait: 1d\n"
    )
    assert _problems(text) == []
