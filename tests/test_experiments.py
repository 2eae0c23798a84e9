"""The statistics behind "is the journey better than its holdout?", against published values."""

from __future__ import annotations

import math

import pytest

from kairos.reporting.experiments import (
    Group,
    compare,
    difference_interval,
    entries_needed,
    p_value,
    wilson,
)
from tests.commands import ROOT


def test_the_wilson_interval_matches_newcombes_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553 to 0.3662.
    low, high = wilson(Group(263, 81))
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


@pytest.mark.parametrize(
    ("treated", "holdout", "expected"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10.
        (Group(70, 56), Group(80, 48), (0.0524, 0.3339)),
        (Group(10, 9), Group(10, 3), (0.1705, 0.8090)),
        (Group(56, 5), Group(29, 0), (-0.0381, 0.1926)),
        (Group(10, 0), Group(20, 0), (-0.1611, 0.2775)),
        (Group(10, 0), Group(10, 0), (-0.2775, 0.2775)),
        (Group(10, 10), Group(10, 0), (0.6075, 1.0)),
    ],
)
def test_the_difference_interval_matches_newcombes_method_ten(
    treated: Group, holdout: Group, expected: tuple[float, float]
) -> None:
    low, high = difference_interval(treated, holdout)
    assert (round(low, 4), round(high, 4)) == expected


def test_the_p_value_is_the_chi_square_test_of_the_two_by_two_table() -> None:
    treated, holdout = Group(70, 56), Group(80, 48)
    a, b = treated.converted, treated.ended - treated.converted
    c, d = holdout.converted, holdout.ended - holdout.converted
    n = a + b + c + d
    chi2 = n * (a * d - b * c) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))
    assert p_value(treated, holdout) == pytest.approx(math.erfc(math.sqrt(chi2 / 2)))
    assert p_value(Group(50, 0), Group(40, 0)) == 1.0  # nobody converted: no evidence


def test_a_journey_losing_to_its_holdout_is_not_called_a_success() -> None:
    # The win-back figures the report used to show as a green "+9.1%" lift: 16.2% against an
    # 18.2% holdout with a few hundred entries is no evidence either way.
    against = compare(Group(500, 81), Group(55, 10))
    assert against.verdict == "unclear"
    assert against.difference == pytest.approx(0.162 - 0.1818, abs=1e-3)
    assert against.low is not None and against.high is not None
    assert against.low < 0 < against.high
    assert against.more_needed is not None and against.more_needed > 1000
    assert against.says.startswith("not enough data yet: about ")


def test_clear_effects_are_called_in_words() -> None:
    better = compare(Group(1000, 300), Group(1000, 200))
    assert (better.verdict, better.says) == ("better", "better than the holdout (95% sure)")
    worse = compare(Group(1000, 200), Group(1000, 300))
    assert worse.verdict == "worse" and "loses conversions" in worse.says
    same = compare(Group(200, 20), Group(100, 10))
    assert (same.verdict, same.says) == ("unclear", "no difference from the holdout so far")


def test_small_groups_are_too_early_to_say_anything() -> None:
    early = compare(Group(500, 100), Group(9, 0))
    assert early.verdict == "too early" and early.difference is None
    assert early.says == "too early: fewer than 10 ended entries in the holdout"
    assert compare(Group(3, 1), Group(50, 5)).says.endswith("in the journey")


def test_entries_needed_follows_the_usual_sample_size_formula() -> None:
    # 15% against 10% at 5% significance and 80% power, unpooled variances:
    # (1.95996 + 0.84162)^2 * (0.15 * 0.85 + 0.1 * 0.9) / 0.05^2 = 682.9 -> 683 per group.
    assert entries_needed(0.15, 0.10) == 683
    assert entries_needed(0.2, 0.2) is None


def test_a_group_cannot_convert_more_than_it_has() -> None:
    with pytest.raises(ValueError, match=r"converts 0\.\.5"):
        Group(5, 6)


def test_the_authoring_guide_shows_what_the_report_prints_for_its_example() -> None:
    from kairos.cli.report import _points

    guide = (ROOT / "docs" / "authoring.md").read_text(encoding="utf-8")
    # The offer journey of the guide's excerpt: 67 of 161 messaged, 16 of 80 held out.
    against = compare(Group(161, 67), Group(80, 16))
    row = next(line for line in guide.splitlines() if line.startswith("│ offer   │   67/161"))
    assert _points(against) in row and f" {against.says} " in row
