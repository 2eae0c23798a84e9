"""What a simulation shows: the timeline of one customer's runs, as the CLI prints it and
``--json`` writes it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kairos.language.durations import format_duration
from kairos.language.plan import ActionStep, PlanStep, SetStep, WaitForStep
from kairos.runtime import policy
from kairos.runtime.contract import StepRecord
from kairos.simulation.capture import CapturedMessage
from kairos.store.support import MessageRecord

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened, ``offset_seconds`` after the simulation started.

    ``kind`` is one of: event, start, restart, branch, split, wait, wait_for, send, deferred,
    blocked, cap, failed, held_out, set, action, goto, goal, exit, end, horizon, not_entered.
    """

    at: datetime
    offset_seconds: int
    kind: str
    step: str
    what: str
    message: CapturedMessage | None = None


@dataclass(frozen=True)
class Timeline:
    """What one customer experienced in one journey, in order."""

    journey: str
    version: str
    customer_id: str
    timezone: str
    start: datetime
    horizon: datetime
    entries: tuple[TimelineEntry, ...]
    outcome: str | None
    converted: bool
    stage: str | None
    ledger: tuple[MessageRecord, ...]
    runs: int = 0

    def local(self, at: datetime) -> datetime:
        """``at`` in the customer's timezone."""
        return at.astimezone(policy.zone(self.timezone))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for tooling (``kairos simulate --json``)."""
        return {
            "journey": self.journey,
            "version": self.version,
            "customer_id": self.customer_id,
            "timezone": self.timezone,
            "start": _iso(self.local(self.start)),
            "horizon": _iso(self.local(self.horizon)),
            "outcome": self.outcome,
            "converted": self.converted,
            "stage": self.stage,
            "timeline": [self._entry_json(e) for e in self.entries],
            "runs": self.runs,
            "ledger": [_message_json(m) for m in self.ledger],
        }

    def _entry_json(self, entry: TimelineEntry) -> dict[str, Any]:
        data: dict[str, Any] = {
            "after": format_offset(entry.offset_seconds),
            "offset_minutes": round(entry.offset_seconds / 60),
            "local_time": _iso(self.local(entry.at)),
            "kind": entry.kind,
            "step": entry.step,
            "what": entry.what,
        }
        if entry.message is not None:
            data["message"] = dataclasses.asdict(entry.message) | {
                "channel": entry.message.channel.value
            }
        return data


@dataclass(frozen=True)
class ProjectTimeline:
    """What one customer experienced from every journey of the project, run together."""

    customer_id: str
    timezone: str
    start: datetime
    horizon: datetime
    journeys: tuple[Timeline, ...]

    @property
    def entered(self) -> tuple[Timeline, ...]:
        """The journeys the customer entered, in name order."""
        return tuple(t for t in self.journeys if t.runs)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: each entered journey's timeline, and the names of the others."""
        zone = policy.zone(self.timezone)
        return {
            "customer_id": self.customer_id,
            "timezone": self.timezone,
            "start": _iso(self.start.astimezone(zone)),
            "horizon": _iso(self.horizon.astimezone(zone)),
            "journeys": [t.to_json() for t in self.entered],
            "not_entered": [t.journey for t in self.journeys if not t.runs],
        }


def _message_json(message: MessageRecord) -> dict[str, Any]:
    data = dataclasses.asdict(message) | {"channel": message.channel.value}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def format_offset(seconds: int) -> str:
    """Time since the start as ``+2d 03:15`` (to the minute)."""
    minutes = round(seconds / 60)
    days, rest = divmod(minutes, 24 * 60)
    return f"+{days}d {rest // 60:02d}:{rest % 60:02d}"


def _iso(at: datetime) -> str:
    return at.replace(second=0, microsecond=0).isoformat()


def describe_record(record: StepRecord, step: PlanStep | None) -> tuple[str, str]:
    """The timeline kind and a sentence for one step record (sends aside)."""
    match record.kind:
        case "wait":
            return "wait", f"waited: {record.outcome}"
        case "wait_for" if isinstance(step, WaitForStep):
            names = " or ".join(o.event for o in step.events)
            return "wait_for", f"wait {format_duration(step.timeout_seconds)} for {names}: " + (
                record.outcome
            )
        case "set" if isinstance(step, SetStep):
            return "set", set_text(step)
        case "action" if isinstance(step, ActionStep):
            return "action", f"action {record.outcome}"
        case "exit" if record.outcome.startswith("goal "):
            return "goal", f"goal reached: {record.outcome.removeprefix('goal ')} (converted)"
        case "exit":
            return "exit", f"exit: {record.outcome}"
        case "goto":
            return "goto", f"goto {record.outcome.removeprefix('to ')}"
        case kind:
            return kind, f"{kind}: {record.outcome}"


def set_text(step: SetStep) -> str:
    """``set stage → retention, onboarded = True, lead_score +10``."""
    parts = [f"stage → {step.stage.value}"] if step.stage else []
    parts += [f"{name} = {value}" for name, value in step.attributes.items()]
    parts += [f"{name} {amount:+g}" for name, amount in step.increment.items()]
    return "set " + ", ".join(parts)
