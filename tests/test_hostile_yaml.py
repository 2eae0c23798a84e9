"""Hostile YAML: every file Kairos reads is refused with one located error before it can take
``kairos validate`` down, and the rest of the project is still checked.

Safety is asserted by counts (events read, values copied), never by how long something took.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from kairos.language import yaml_source
from kairos.language.compiler import check_project
from kairos.language.yaml_source import MAX_BYTES, MAX_DEPTH, MAX_NODES, load_data, load_yaml
from kairos.simulation.customers import SimulationError, load_customer
from tests.test_language_invalid import INVALID, make_project

SECRET = "THE-CONTENT-OF-ANOTHER-FILE"


class Counted:
    """How many parser events were read and how many values were copied."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events = 0
        self.copied = 0
        parse = YAML.parse
        plain = yaml_source._plain

        def counting_parse(yaml: Any, stream: Any) -> Iterator[Any]:
            for event in parse(yaml, stream):
                self.events += 1
                yield event

        def counting_plain(*args: Any) -> Any:
            self.copied += 1
            return plain(*args)

        monkeypatch.setattr(YAML, "parse", counting_parse)
        monkeypatch.setattr(yaml_source, "_plain", counting_plain)


def bomb(levels: int) -> str:
    """The billion laughs: each level lists the one before nine times."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(20)
def test_a_nine_level_alias_bomb_is_refused_before_a_single_value_is_copied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counted = Counted(monkeypatch)
    doc, problems = load_yaml(bomb(9), "journeys/bomb.yaml")
    assert doc is None
    assert [p.headline() for p in problems] == [
        "journeys/bomb.yaml:6:10: l5[0]: more than 100,000 values once `*aliases` are "
        "expanded (use fewer aliases)"
    ]
    assert counted.copied == 0
    assert counted.events < 100  # the six lines up to the alias that crosses the limit


@pytest.mark.timeout(20)
def test_aliases_within_the_budget_still_load() -> None:
    doc, problems = load_yaml(bomb(4), "ok.yaml")  # 9**5 = 59 049 values expanded
    assert problems == [] and doc is not None
    assert len(doc.data["l4"]) == 9 and doc.data["l4"][0][0][0][0] == ["lol"] * 9


@pytest.mark.timeout(20)
def test_a_merge_key_loads_instead_of_raising_key_error() -> None:
    doc, problems = load_yaml("base: &b {x: 1}\nmine:\n  <<: *b\n  y: 2\n", "m.yaml")
    assert problems == [] and doc is not None
    assert doc.data["mine"] == {"y": 2, "x": 1}
    assert doc.positions.value(("mine", "x")).line == 2


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "text",
    ["x: " + "[" * 10_000 + "]" * 10_000 + "\n", "x: " + "{a: " * 10_000 + "}" * 10_000 + "\n"],
    ids=["lists", "mappings"],
)
def test_ten_thousand_levels_of_nesting_is_one_error_not_a_recursion_error(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(monkeypatch)
    doc, problems = load_yaml(text, "deep.yaml")
    assert doc is None and len(problems) == 1
    assert problems[0].headline().startswith("deep.yaml:1:")
    assert f"nested more than {MAX_DEPTH} levels deep" in problems[0].message
    assert counted.events <= 2 * MAX_DEPTH + 5 and counted.copied == 0


@pytest.mark.timeout(20)
def test_aliases_cannot_stack_depth_past_the_limit() -> None:
    text = "a0: &a0 " + "[" * 40 + "]" * 40 + "\na1: &a1 " + "[" * 20 + "*a0" + "]" * 20 + "\n"
    doc, problems = load_yaml(text, "stack.yaml")
    assert doc is None
    assert [p.message for p in problems] == [f"nested more than {MAX_DEPTH} levels deep"]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("x: !!python/object/apply:os.system ['echo owned']\n", "!!python/object/apply:os.system"),
        ("x: !!python/object/apply:os.system {a: 1}\n", "!!python/object/apply:os.system"),
        ("x: !!python/name:os.system x\n", "!!python/name:os.system"),
        ("x: !!set {a, b}\n", "!!set"),
        ("x: !!binary aGk=\n", "!!binary"),
        ("x: !!omap [a: 1]\n", "!!omap"),
        ("x: !vault [1]\n", "!vault"),
        ("x: !!str 5\n", "!!str"),
    ],
)
def test_an_unknown_tag_is_one_located_error_not_a_type_error(text: str, tag: str) -> None:
    doc, problems = load_yaml(text, "tag.yaml")
    assert doc is None
    assert [p.headline() for p in problems] == [
        f"tag.yaml:1:4: x: YAML tag `{tag}` is not supported "
        "(write the plain value without a `!` tag)"
    ]


@pytest.mark.timeout(20)
def test_more_values_than_the_budget_without_aliases_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The real budget fits in a file under the size limit, so the count alone must refuse it.
    assert len("1, ") * MAX_NODES < MAX_BYTES
    monkeypatch.setattr(yaml_source, "MAX_NODES", 1_000)  # the same rule, parsed quickly
    text = "x: [" + ", ".join(["1"] * 1_001) + "]\n"
    doc, problems = load_yaml(text, "many.yaml")
    assert doc is None
    assert [p.message for p in problems] == ["more than 1,000 values"]


@pytest.mark.timeout(30)
def test_a_journey_file_over_the_size_limit_is_refused_unparsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = make_project(tmp_path)
    big = "journey: big\n" + "# padding\n" * (MAX_BYTES // 10 + 1)
    (home / "journeys" / "big.yaml").write_text(big)
    counted = Counted(monkeypatch)
    project, report = check_project(home)
    assert project is None
    size = len(big)
    assert report.headlines() == [
        f"journeys/big.yaml:1:1: the file is {size:,} bytes; the limit is {MAX_BYTES:,} "
        "(split it into smaller files)"
    ]
    # Only the catalogue and the two good journeys were parsed, all small.
    assert counted.events < 2_000


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "target", ["journeys/stolen.yaml", "journeys/customer.yaml", "templates/locales.yaml"]
)
def test_a_yaml_file_linked_outside_the_project_is_refused_unread(
    target: str, tmp_path: Path
) -> None:
    home = make_project(tmp_path)
    secret = tmp_path / "secret.yaml"
    secret.write_text(f"journey: [\n{SECRET}\n")  # a syntax error would quote this line
    link = home / target
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    (home / "journeys" / "broken.yaml").write_text(
        (INVALID / "bad_duration" / "journeys" / "broken.yaml").read_text()
    )
    _, report = check_project(home)
    assert SECRET not in report.format()
    assert (
        f"{target}:1:1: a symbolic link to a file outside the project "
        "(copy the file into the project instead of linking to it)"
    ) in report.headlines()
    # One bad file does not stop the others from being checked.
    assert any(h.startswith("journeys/broken.yaml:5:11:") for h in report.headlines())


@pytest.mark.timeout(30)
def test_a_link_that_stays_inside_the_project_is_followed(tmp_path: Path) -> None:
    home = make_project(tmp_path)
    (home / "shared").mkdir()
    (home / "journeys" / "welcome.yaml").rename(home / "shared" / "welcome.yaml")
    (home / "journeys" / "welcome.yaml").symlink_to(home / "shared" / "welcome.yaml")
    project, report = check_project(home)
    assert report.errors == [] and project is not None and "welcome" in project.plans


@pytest.mark.slow
@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("c.yaml", "profile: !!python/object/apply:os.system ['x']\n", "YAML tag"),
        ("c.yaml", "profile: " + "[" * 5_000 + "]" * 5_000 + "\n", "nested more than"),
        ("c.json", '{"profile": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ("c.yaml", "#" * (MAX_BYTES + 1), "the limit is"),
    ],
    ids=["tag", "deep-yaml", "deep-json", "big"],
)
def test_a_hostile_customer_file_is_one_line_for_simulate(
    name: str, text: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_data(text, name)
    with pytest.raises(SimulationError) as raised:
        load_customer(path)
    assert "\n" not in str(raised.value) and message in str(raised.value)
