"""The position-tracking YAML loader and the problem report."""

from __future__ import annotations

import datetime as dt

from kairos.language.problems import Problem, Report, did_you_mean, quote_list, suggestion
from kairos.language.yaml_source import Position, format_path, load_yaml

SOURCE = """\
# comment
journey: cart
quiet_hours: off
steps:
  - wait: 1h
  - wait_for: [order_placed, {event: cart_updated}]
    on:
      order_placed:
        - exit: bought
    timeout: 09:00
empty:
when: 2026-01-31
"""


def test_plain_values_with_positions_for_keys_values_and_items() -> None:
    doc, problems = load_yaml(SOURCE, "journeys/cart.yaml")
    assert problems == [] and doc is not None
    assert doc.data["steps"][1]["on"] == {"order_placed": [{"exit": "bought"}]}
    assert type(doc.data["steps"]) is list and type(doc.data) is dict
    positions = doc.positions
    assert positions.key(("journey",)) == Position(2, 1)
    assert positions.value(("journey",)) == Position(2, 10)
    assert positions.value(("steps", 0)) == Position(5, 5)
    assert positions.value(("steps", 1, "wait_for", 1, "event")) == Position(6, 38)
    assert positions.key(("steps", 1, "on", "order_placed")) == Position(8, 7)
    assert positions.value(("steps", 1, "on")) == Position(7, 5)  # a block: its key
    assert positions.value(("empty",)) == Position(11, 1)  # no value: its key
    assert positions.value(("steps", 7, "nothing")) == Position(4, 1)  # nearest parent


def test_yaml_1_2_keeps_marketer_words_as_text() -> None:
    doc, _ = load_yaml(SOURCE, "x.yaml")
    assert doc is not None
    assert doc.data["quiet_hours"] == "off"
    assert doc.data["steps"][1]["timeout"] == "09:00"
    assert "on" in doc.data["steps"][1]
    assert doc.data["when"] == dt.date(2026, 1, 31)


def test_tabs_duplicates_and_syntax_errors_are_located() -> None:
    _, tabs = load_yaml("a:\n\tb: 1\n", "t.yaml")
    assert [p.headline() for p in tabs] == [
        "t.yaml:2:1: tab character in the indentation "
        "(indent with spaces; YAML does not allow tabs there)"
    ]
    _, dupes = load_yaml("steps:\n  - send: email\n    send: sms\n", "d.yaml")
    assert [p.headline() for p in dupes] == [
        "d.yaml:3:5: duplicate key `send` (first set on line 2; keep only one)"
    ]
    _, quote = load_yaml("a: 'open\nb: 1\n", "q.yaml")
    assert [p.headline() for p in quote] == [
        "q.yaml:1:4: YAML syntax: the single quote opened here is never closed on this line "
        "(close it at the end of the text)"
    ]
    _, tags = load_yaml("a: !secret x\n", "g.yaml")
    assert tags[0].headline() == (
        "g.yaml:1:4: a: YAML tag `!secret` is not supported "
        "(write the plain value without a `!` tag)"
    )


def test_an_empty_file_is_a_document_without_data() -> None:
    doc, problems = load_yaml("# nothing yet\n", "e.yaml")
    assert problems == [] and doc is not None and doc.data is None


def test_paths_read_like_the_journey() -> None:
    assert format_path(("steps", 2, "wait_for", "timeout")) == "steps[2].wait_for.timeout"
    assert format_path(()) == ""


def test_report_sorts_formats_and_counts() -> None:
    report = Report()
    report.add_source("j.yaml", "a: 1\nb: 2\n")
    report.add(Problem("j.yaml", 2, 4, "b", "too big", "at most 1", severity="warning"))
    report.add(Problem("j.yaml", 1, 4, "a", "wrong"))
    report.add(Problem("j.yaml", 1, 4, "a", "wrong"))  # the same problem once
    assert report.headlines() == [
        "j.yaml:1:4: a: wrong",
        "j.yaml:2:4: warning: b: too big (at most 1)",
    ]
    assert report.format().splitlines()[1:3] == ["    1 | a: 1", "      |    ^"]
    assert report.summary() == "1 error, 1 warning"
    assert report.only("warning").summary() == "1 warning"


def test_did_you_mean_and_lists() -> None:
    assert did_you_mean("tempalte", ["template", "fallback"]) == "template"
    assert did_you_mean("Send", ["send"]) == "send"
    assert did_you_mean("zzz", ["send"]) is None
    assert quote_list(["a", "b", "c"]) == "`a`, `b` or `c`"
    assert suggestion("x", ["a", "b"], kind="declared events") == "declared events: `a` or `b`"
    assert suggestion("x", [], kind="declared events") == "there are no declared events"
