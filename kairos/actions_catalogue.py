"""The registered actions a journey may call (``action: issue_coupon``), in one place.

The compiler checks a journey's ``action`` names and ``with`` arguments against this table, and
``activities/actions.py`` implements exactly these names. Each action also names the fields of
the result it saves under ``journey.<save_as>``, with a sample value, so templates that show a
coupon code can be checked (and sampled) before any coupon exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kairos.catalogue import AttrType


@dataclass(frozen=True)
class Argument:
    """One ``with:`` argument of an action."""

    type: AttrType
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class ActionSpec:
    """A registered action: its arguments and the shape of its result."""

    name: str
    description: str
    args: Mapping[str, Argument] = field(default_factory=dict)
    # Result field -> a sample value (used to check and sample templates that read it).
    result: Mapping[str, Any] = field(default_factory=dict)


ACTIONS: Mapping[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec(
            name="issue_coupon",
            description="Create a personal, single-use discount code.",
            args={
                "percent": Argument(AttrType.number, description="Discount in percent, 1-100."),
                "valid_days": Argument(AttrType.integer, description="Days the code is valid."),
            },
            result={"code": "SAMPLE-7KQ2X", "percent": 20, "expires_at": "2026-02-14T09:00:00Z"},
        ),
        ActionSpec(
            name="grant_referral_reward",
            description="Credit the customer for a referral that converted.",
            args={
                "amount": Argument(AttrType.number, description="The reward amount."),
                "currency": Argument(AttrType.string, description="ISO 4217 code, such as EUR."),
            },
            result={"reward_id": "rw_sample_0001", "amount": 10, "currency": "EUR"},
        ),
        ActionSpec(
            name="notify_sales",
            description="Open a ticket for the sales team about this customer.",
            args={"note": Argument(AttrType.string, description="What sales should know.")},
            result={"ticket": "SALES-1042"},
        ),
    )
}
