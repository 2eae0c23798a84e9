"""Dry runs of journeys on a private, time-skipping Temporal: weeks in seconds.

The customer file (:mod:`.customers`), the senders that keep messages instead of delivering
them (:mod:`.capture`), the timeline a run leaves (:mod:`.timeline`) and the engine that runs
the real worker against them (:mod:`.engine`).
"""

from kairos.simulation.capture import CapturedMessage, CapturingEmailSender, CapturingSmsSender
from kairos.simulation.customers import (
    DEFAULT_START,
    ScheduledEvent,
    SimCustomer,
    SimulationError,
    customer_timezone,
    load_customer,
    parse_event_spec,
    resolve_relative,
    resolve_start,
)
from kairos.simulation.engine import DEFAULT_DAYS, SimulationOptions, simulate, simulate_project
from kairos.simulation.timeline import ProjectTimeline, Timeline, TimelineEntry, format_offset

__all__ = [
    "DEFAULT_DAYS",
    "DEFAULT_START",
    "CapturedMessage",
    "CapturingEmailSender",
    "CapturingSmsSender",
    "ProjectTimeline",
    "ScheduledEvent",
    "SimCustomer",
    "SimulationError",
    "SimulationOptions",
    "Timeline",
    "TimelineEntry",
    "customer_timezone",
    "format_offset",
    "load_customer",
    "parse_event_spec",
    "resolve_relative",
    "resolve_start",
    "simulate",
    "simulate_project",
]
