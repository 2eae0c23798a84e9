"""The frozen plan a journey compiles to: what the journey workflow interprets.

A plan is a graph of steps keyed by stable step id. Nested YAML (branch paths, wait_for outcome
paths, split variants) is flattened by the compiler into steps whose ``next`` names the step that
follows; ``None`` means the journey ends there with the outcome ``completed``. ``goto`` steps are
kept as steps (so support sees them) and simply name their target.

The plan is plain data: no file access, no callables, so it is safe to pass into a workflow and
to record in its history. ``version`` is a content hash of everything else, so two runs with the
same version ran the same definition.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """Base for plan models: immutable, strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Stage(StrEnum):
    """Lifecycle stages a journey serves or moves a customer to."""

    awareness = "awareness"
    consideration = "consideration"
    purchase = "purchase"
    retention = "retention"
    advocacy = "advocacy"
    lapsed = "lapsed"


class Category(StrEnum):
    """Consent category. Transactional messages ignore marketing opt-outs and frequency caps."""

    marketing = "marketing"
    transactional = "transactional"


class Channel(StrEnum):
    email = "email"
    sms = "sms"


class Entry(StrEnum):
    """What happens when a journey's trigger fires for a customer.

    once: a customer enters at most once, ever.
    after_exit: a customer may enter again once their previous run has ended.
    restart: a new trigger restarts a running journey from its first step.
    """

    once = "once"
    after_exit = "after_exit"
    restart = "restart"


class StepKind(StrEnum):
    """What a plan step is (its ``kind``), and what a run's step record is of."""

    send = "send"
    wait = "wait"
    wait_for = "wait_for"
    branch = "branch"
    split = "split"  # type: ignore[assignment]  # shadows str.split on members only
    set = "set"
    action = "action"
    goto = "goto"
    exit = "exit"
    problem = "problem"  # a record only: the run met a problem at this step


class EventMatch(Frozen):
    """An event name with an optional condition over ``event``, ``customer`` and ``journey``."""

    event: str
    when: str | None = None


class EventTrigger(Frozen):
    kind: Literal["event"] = "event"
    event: str
    when: str | None = None


class ApiTrigger(Frozen):
    """Started only by product code (``kairos.runtime.client.start``) or the CLI."""

    kind: Literal["api"] = "api"


class DateTrigger(Frozen):
    """Fires ``offset_seconds`` after the date held in a profile attribute.

    The journey is (re)started whenever the attribute changes; its first act is a durable wait
    until ``attribute + offset``. Example: 60 days after ``customer.last_order_at``.
    """

    kind: Literal["date"] = "date"
    attribute: str
    offset_seconds: int = 0
    when: str | None = None


class SegmentTrigger(Frozen):
    """Fires when a customer enters a segment (``segments/<segment>.yaml``): they were not a
    member and now are. The store keeps membership and decides entry (kairos.store.segment_entry);
    the run starts with no trigger event."""

    kind: Literal["segment"] = "segment"
    segment: str


Trigger = Annotated[
    EventTrigger | ApiTrigger | DateTrigger | SegmentTrigger, Field(discriminator="kind")
]


class QuietHours(Frozen):
    """Local-time window (in the customer's timezone) when marketing messages are deferred.

    ``start`` and ``end`` are "HH:MM"; a window may wrap midnight (21:00 -> 08:00).
    """

    start: str
    end: str


class SendStep(Frozen):
    """``give_up_after_seconds``: how long the send keeps trying before the journey goes on
    without it; None for the interpreter's default
    (kairos.runtime.delivery.DEFAULT_GIVE_UP_AFTER)."""

    kind: Literal[StepKind.send] = StepKind.send
    id: str
    channel: Channel
    template: str
    fallback: Channel | None = None
    give_up_after_seconds: int | None = None
    next: str | None = None


class WaitStep(Frozen):
    """Exactly one of: a duration; a local time of day; a date held in a profile attribute."""

    kind: Literal[StepKind.wait] = StepKind.wait
    id: str
    duration_seconds: int | None = None
    time_of_day: str | None = None
    until_attribute: str | None = None
    offset_seconds: int = 0
    next: str | None = None


class WaitForOutcome(Frozen):
    """One event the step waits for, and where the journey goes when it arrives."""

    event: str
    when: str | None = None
    next: str | None = None


class WaitForStep(Frozen):
    kind: Literal[StepKind.wait_for] = StepKind.wait_for
    id: str
    events: tuple[WaitForOutcome, ...]
    timeout_seconds: int
    on_timeout: str | None = None


class BranchCase(Frozen):
    when: str
    next: str | None = None


class BranchStep(Frozen):
    """If / elif / else: the first case whose condition holds wins; otherwise ``otherwise``."""

    kind: Literal[StepKind.branch] = StepKind.branch
    id: str
    cases: tuple[BranchCase, ...]
    otherwise: str | None = None


class SplitVariant(Frozen):
    name: str
    weight: int
    next: str | None = None


class SplitStep(Frozen):
    """Weighted variants chosen deterministically per customer.

    ``holdout_percent`` of customers are held out: they go on to ``holdout_next`` and every
    later send of theirs in this run is suppressed (recorded, not delivered), so the journey's
    goal can be compared between variants and the holdout to measure lift.
    """

    kind: Literal[StepKind.split] = StepKind.split
    id: str
    variants: tuple[SplitVariant, ...]
    holdout_percent: int = 0
    holdout_next: str | None = None


class SetStep(Frozen):
    """Update the customer's profile. String values containing ``{{`` are rendered first."""

    kind: Literal[StepKind.set] = StepKind.set
    id: str
    attributes: dict[str, Any] = Field(default_factory=dict)
    increment: dict[str, float] = Field(default_factory=dict)
    stage: Stage | None = None
    next: str | None = None


class Webhook(Frozen):
    url: str
    method: Literal["POST", "PUT", "PATCH", "GET"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None


class ActionStep(Frozen):
    """Call a registered Python action by name, or a webhook. Arguments may be templated.

    The result (a JSON object) is saved under ``journey.<save_as>`` for later steps/templates.
    """

    kind: Literal[StepKind.action] = StepKind.action
    id: str
    action: str | None = None
    webhook: Webhook | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    save_as: str | None = None
    next: str | None = None


class GotoStep(Frozen):
    kind: Literal[StepKind.goto] = StepKind.goto
    id: str
    target: str


class ExitStep(Frozen):
    kind: Literal[StepKind.exit] = StepKind.exit
    id: str
    outcome: str


PlanStep = Annotated[
    SendStep
    | WaitStep
    | WaitForStep
    | BranchStep
    | SplitStep
    | SetStep
    | ActionStep
    | GotoStep
    | ExitStep,
    Field(discriminator="kind"),
]


class JourneyPlan(Frozen):
    """A compiled journey. ``steps`` is keyed by step id; ``start`` is the first step."""

    name: str
    version: str = ""
    description: str = ""
    stage: Stage | None = None
    category: Category = Category.marketing
    priority: int = 50
    quiet_hours: QuietHours | None = None
    ignore_quiet_hours: bool = False
    default_locale: str = "en"
    locales: tuple[str, ...] = ("en",)
    trigger: Trigger = Field(default_factory=ApiTrigger)
    entry: Entry = Entry.after_exit
    exit_on: tuple[EventMatch, ...] = ()
    start: str | None = None
    steps: dict[str, PlanStep] = Field(default_factory=dict)
    # The content hash of the template files this plan renders (kairos.language.pinning); empty for
    # a plan that sends nothing, or one built in code, which renders the current templates.
    templates: str = ""
    source: str = ""
    # The step ids the journey file gives (``id:``); the others are generated (``branch_1``,
    # ``set_lead_score_7``). What reports show a marketer; never serialised, so never part of
    # a run's input or of the version.
    named_steps: frozenset[str] = Field(default=frozenset(), exclude=True)
    # How long after entering a goal counts as a conversion in the report (conversion_window,
    # seconds); None: whenever the run reaches it. Not part of a run's input or version: it
    # changes what the report counts, not what a run does.
    goal_window: int | None = Field(default=None, exclude=True)
    # The line of the journey file each step is written on, for messages that point a marketer
    # at a step; never serialised, like ``named_steps``.
    step_lines: dict[str, int] = Field(default_factory=dict, exclude=True)

    def with_version(self) -> JourneyPlan:
        """Return a copy whose ``version`` is the content hash of the rest of the plan."""
        body = self.model_dump(mode="json", exclude={"version", "source"})
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return self.model_copy(update={"version": digest[:12]})

    def step(self, step_id: str) -> PlanStep:
        return self.steps[step_id]

    def opening_waits(self) -> list[WaitStep]:
        """The waits until a time of day a run can meet before it has done anything that takes
        time or reaches the customer: through ``set``, ``branch``, ``split`` and ``goto``
        steps from the first step, in the order met."""
        found: list[WaitStep] = []
        seen: set[str] = set()
        pending = [self.start]
        while pending:
            step_id = pending.pop(0)
            if step_id is None or step_id in seen or step_id not in self.steps:
                continue
            seen.add(step_id)
            step = self.steps[step_id]
            match step:
                case WaitStep(time_of_day=str()):
                    found.append(step)
                case SetStep():
                    pending.append(step.next)
                case BranchStep():
                    pending.extend([*(case.next for case in step.cases), step.otherwise])
                case SplitStep():
                    pending.extend([*(v.next for v in step.variants), step.holdout_next])
                case GotoStep():
                    pending.append(step.target)
        return found

    def events_of_interest(self) -> set[str]:
        """Every event this journey reacts to while running (wait_for and exit_on)."""
        names = {m.event for m in self.exit_on}
        for step in self.steps.values():
            if isinstance(step, WaitForStep):
                names.update(o.event for o in step.events)
        return names
