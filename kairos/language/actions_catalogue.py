"""The registered actions a journey may call (``action: issue_coupon``), in one place.

The compiler checks a journey's ``action`` names and ``with`` arguments against this table, and
``activities/actions.py`` implements exactly these names. Each action also names the fields of
the result it saves under ``journey.<save_as>``, with a sample value, so templates that show a
coupon code can be checked (and sampled) before any coupon exists.

A shop's own actions join the table when the modules ``KAIROS_ACTIONS`` names are imported
(:func:`load_action_modules`): their ``activities.actions.register(spec)`` calls declare them
here, so the compiler accepts a journey calling one exactly where a worker can run it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from kairos.language.catalogue import AttrType
from kairos.language.problems import ProjectError, Report


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
    # Result fields that follow from the arguments and the time, for a truthful sample.
    derive: Callable[[Mapping[str, Any], datetime], dict[str, Any]] | None = None


def coupon_expiry(issued: datetime, valid_days: int) -> str:
    """The last day a coupon issued at ``issued`` for ``valid_days`` days is valid (ISO date)."""
    return (issued + timedelta(days=valid_days)).date().isoformat()


def _coupon(args: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    days = args.get("valid_days", 14)
    return {"expires_at": coupon_expiry(now, days)} if isinstance(days, int) else {}


_DECLARED: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec(
            name="issue_coupon",
            description="Create a personal, single-use discount code.",
            args={
                "percent": Argument(AttrType.number, description="Discount in percent, 1-100."),
                "valid_days": Argument(AttrType.integer, description="Days the code is valid."),
            },
            result={"code": "SAMPLE-7KQ2X", "percent": 10, "expires_at": "2026-02-14"},
            derive=_coupon,
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

# Every action a journey may name: the built-in ones and those plugged in (read-only here;
# :func:`declare` adds to it).
ACTIONS: Mapping[str, ActionSpec] = MappingProxyType(_DECLARED)


def declare(spec: ActionSpec) -> None:
    """Add an action to :data:`ACTIONS` (or replace a built-in's arguments and result)."""
    _DECLARED[spec.name] = spec


def load_action_modules(modules: Iterable[str]) -> None:
    """Import the modules KAIROS_ACTIONS names (``Settings.actions``): their ``register``
    calls declare and implement the shop's own actions.

    Raises:
        ActionModuleError: A module cannot be imported (it says which, and why).
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as err:
            raise ActionModuleError(
                f"KAIROS_ACTIONS: cannot import {module!r}: {type(err).__name__}: {err} "
                "(name a module on the Python path that registers actions)"
            ) from None


class ActionModuleError(ProjectError):
    """A module KAIROS_ACTIONS names cannot be imported: the journeys cannot be compiled
    against the actions it would add, so it stops a project loading like a journey error."""

    def __init__(self, message: str) -> None:
        super().__init__(Report())
        self.message = message

    def __str__(self) -> str:
        return self.message


def action_sample(name: str | None, args: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """An action's result as a preview or a check should show it: the registered sample, with
    the step's own arguments where the result repeats them (a 20% coupon says 20, not the
    sample's 10) and what follows from them (a coupon valid 14 days from ``now``).

    A templated argument (``{{ ... }}``) keeps the sample value: it has no value before a run.
    """
    spec = ACTIONS.get(name or "")
    if spec is None:
        return {}
    literal = {k: v for k, v in args.items() if not (isinstance(v, str) and "{{" in v)}
    result = dict(spec.result) | {k: v for k, v in literal.items() if k in spec.result}
    if spec.derive is not None:
        result |= spec.derive(literal, now)
    return result
