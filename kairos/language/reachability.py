"""Which steps of a plan can run: the steps each one may continue at, every step reachable
from the start, and a goto that comes back to itself without waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import assert_never

from kairos.language.plan import (
    ActionStep,
    BranchStep,
    ExitStep,
    GotoStep,
    PlanStep,
    SendStep,
    SetStep,
    SplitStep,
    WaitForStep,
    WaitStep,
)


def successors(step: PlanStep) -> list[str]:
    match step:
        case SendStep() | WaitStep() | SetStep() | ActionStep():
            targets = [step.next]
        case WaitForStep():
            targets = [o.next for o in step.events] + [step.on_timeout]
        case BranchStep():
            targets = [c.next for c in step.cases] + [step.otherwise]
        case SplitStep():
            targets = [v.next for v in step.variants] + [step.holdout_next]
        case GotoStep():
            targets = [step.target]
        case ExitStep():
            targets = []
        case _:
            assert_never(step)
    return [t for t in targets if t is not None]


def reachable_from(steps: Mapping[str, PlanStep], start: str | None) -> set[str]:
    seen: set[str] = set()
    queue = [start] if start else []
    while queue:
        current = queue.pop()
        if current in seen or current not in steps:
            continue
        seen.add(current)
        queue.extend(successors(steps[current]))
    return seen


def busy_loop(steps: Mapping[str, PlanStep], goto_id: str) -> bool:
    """Whether a goto comes back to itself without passing a wait or wait_for."""
    goto = steps[goto_id]
    assert isinstance(goto, GotoStep)
    seen: set[str] = set()
    queue = [goto.target]
    while queue:
        current = queue.pop()
        if current == goto_id:
            return True
        step = steps.get(current)
        if current in seen or step is None or isinstance(step, WaitStep | WaitForStep):
            continue
        seen.add(current)
        queue.extend(successors(step))
    return False
