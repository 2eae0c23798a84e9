"""Is a journey (or a split variant) doing better than its holdout? With what certainty?

A holdout is a randomised control group: customers who entered the journey but were sent
nothing from the split on. Comparing conversion rates between the two groups is comparing two
binomial proportions, so the report gives, for each comparison:

* the **difference** in conversion rate, in percentage points (treated minus holdout);
* its **95% confidence interval**, Newcombe's hybrid score interval (built from the two groups'
  Wilson intervals; it behaves at 0% and 100% and with small groups, where the textbook
  normal-approximation interval says impossible things);
* the **p-value** of the pooled two-proportion z-test (two-sided);
* a **verdict** in plain words: better, worse, or not enough data yet, with roughly how many
  more ended entries per group a difference of the size seen so far would need before the test
  could tell it from chance (80% power at the 5% level).

Only ended entries count: a customer still in the journey has not had the chance to convert.
Pure functions, no I/O: the numbers are checked against published examples in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Two-sided 95%, and the 80% power the "how many more" estimate is for.
_Z_95 = 1.959963984540054
_Z_POWER_80 = 0.8416212335729143
# Below this many ended entries in either group nothing is said beyond "too early".
MINIMUM_GROUP = 10


@dataclass(frozen=True)
class Group:
    """Ended entries of one group and how many of them converted."""

    ended: int
    converted: int

    def __post_init__(self) -> None:
        if self.ended < 0 or not 0 <= self.converted <= self.ended:
            raise ValueError(f"a group converts 0..{self.ended} entries, not {self.converted}")

    @property
    def rate(self) -> float | None:
        return self.converted / self.ended if self.ended else None


@dataclass(frozen=True)
class Comparison:
    """Treated against holdout: the difference in conversion rate and what it allows saying."""

    treated: Group
    holdout: Group
    difference: float | None  # treated rate minus holdout rate, as a fraction (0.05 = 5 points)
    low: float | None  # the 95% interval of the difference
    high: float | None
    p_value: float | None
    verdict: str  # "better" | "worse" | "unclear" | "too early"
    more_needed: int | None  # ended entries per group still needed, when "unclear"

    @property
    def says(self) -> str:
        """The verdict as a marketer reads it."""
        if self.verdict == "too early":
            return (
                f"too early: fewer than {MINIMUM_GROUP} ended entries in "
                f"{'the holdout' if self.holdout.ended < MINIMUM_GROUP else 'the journey'}"
            )
        if self.verdict == "better":
            return "better than the holdout (95% sure)"
        if self.verdict == "worse":
            return "worse than the holdout (95% sure): it loses conversions"
        if self.difference == 0:
            return "no difference from the holdout so far"
        if self.more_needed is None:
            return "not clear yet: the difference could still be chance"
        return f"not enough data yet: about {self.more_needed:,} more ended entries per group"


def wilson(group: Group, z: float = _Z_95) -> tuple[float, float]:
    """The Wilson score interval of one group's conversion rate."""
    n, x = group.ended, group.converted
    if n == 0:
        return 0.0, 1.0
    centre = (x + z * z / 2) / (n + z * z)
    half = z * math.sqrt(x * (n - x) / n + z * z / 4) / (n + z * z)
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_interval(treated: Group, holdout: Group) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) for treated rate minus holdout rate."""
    p1, p2 = treated.rate, holdout.rate
    if p1 is None or p2 is None:
        raise ValueError("both groups need ended entries")
    l1, u1 = wilson(treated)
    l2, u2 = wilson(holdout)
    d = p1 - p2
    return (
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def p_value(treated: Group, holdout: Group) -> float:
    """Two-sided p-value of the pooled two-proportion z-test."""
    n1, n2 = treated.ended, holdout.ended
    pooled = (treated.converted + holdout.converted) / (n1 + n2)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if spread == 0:
        return 1.0
    z = ((treated.rate or 0.0) - (holdout.rate or 0.0)) / spread
    return math.erfc(abs(z) / math.sqrt(2))


def entries_needed(p1: float, p2: float) -> int | None:
    """Ended entries per group to tell ``p1`` from ``p2`` (5% level, 80% power); None when the
    two are equal (no sample size tells a difference that is not there)."""
    d = p1 - p2
    if d == 0:
        return None
    spread = p1 * (1 - p1) + p2 * (1 - p2)
    return math.ceil((_Z_95 + _Z_POWER_80) ** 2 * spread / (d * d))


def compare(treated: Group, holdout: Group) -> Comparison:
    """Everything the report says about treated against holdout."""
    if min(treated.ended, holdout.ended) < MINIMUM_GROUP:
        return Comparison(treated, holdout, None, None, None, None, "too early", None)
    p1, p2 = treated.rate or 0.0, holdout.rate or 0.0
    low, high = difference_interval(treated, holdout)
    more: int | None = None
    if low > 0:
        verdict = "better"
    elif high < 0:
        verdict = "worse"
    else:
        verdict = "unclear"
        needed = entries_needed(p1, p2)
        if needed is not None and needed > min(treated.ended, holdout.ended):
            more = needed - min(treated.ended, holdout.ended)
    chance = p_value(treated, holdout)
    return Comparison(treated, holdout, p1 - p2, low, high, chance, verdict, more)
