"""What a workflow costs on Temporal Cloud, counted from its real event history.

Temporal Cloud bills per *action*. :func:`billable_actions` is the one place that decides which
history events are actions; the benchmarks and the runtime cost tests both use it. The rule
follows Temporal's own documentation of actions and the estimate the Temporal UI shows next to
each event (both read in 2025):

=====================================================  ======================  =======
history event                                          key                     actions
=====================================================  ======================  =======
WorkflowExecutionStarted (client start, signal-with-    ``workflow_started``    1
start, child)
WorkflowExecutionStarted of a run continued-as-new      ``continue_as_new``     1
WorkflowExecutionStarted of a workflow retry (attempt   --                      0
> 1)
ActivityTaskScheduled                                   ``activity``            1
ActivityTaskStarted, attempt n                          ``activity_retry``      n - 1
MarkerRecorded (local activities), per workflow task    ``local_activity``      1
WorkflowTaskCompleted, local activity retries           ``local_activity_retry`` metered
TimerStarted                                            ``timer``               1
SignalExternalWorkflowExecutionInitiated                ``signal_external``     1
WorkflowExecutionSignaled sent by a client              ``signal``              1
UpsertWorkflowSearchAttributes                          ``search_attributes``   1
WorkflowExecutionUpdateAccepted / Rejected              ``update``              1
StartChildWorkflowExecutionInitiated                    ``child_workflow``      1
WorkflowExecutionOptionsUpdated                         ``workflow_options``    1
NexusOperationScheduled / CancelRequested               ``nexus``               1
=====================================================  ======================  =======

Each signal is billed once, so it is counted once when the histories of sender and receiver
are added up: at the sending workflow (``signal_external``) when another workflow sent it (the
receiver's ``WorkflowExecutionSignaled`` names that workflow and counts 0), at the receiver when
a client did. A signal-with-start is one action in all: the signal recorded right after the
start it caused counts 0. Continue-as-new is counted once, at the start of the new run (the
closing run's ``WorkflowExecutionContinuedAsNew`` counts 0). A child workflow is two actions, as
Cloud bills it: ``child_workflow`` in the parent and ``workflow_started`` in the child. Cloud
bills all local activities recorded by one workflow task as one action, so markers are counted
per workflow task; patch markers (``workflow.patched``) are free.

Not in any history, so not counted: queries (one action each), activity heartbeats, rejected
updates that were never recorded, schedules and exports.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import ContinueAsNewInitiator, EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

# Markers that record something other than a local activity and are not billed.
_FREE_MARKERS = frozenset({"core_patch", "Version"})
# Cloud caps the metered local activity retries of one workflow task at this many actions.
_LOCAL_RETRY_CAP = 100
_CHANGE_VERSION = "TemporalChangeVersion"

_ONE_EACH: dict[int, str] = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED: "activity",
    EventType.EVENT_TYPE_TIMER_STARTED: "timer",
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED: "signal_external",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED: "update",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_REJECTED: "update",
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED: "child_workflow",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_OPTIONS_UPDATED: "workflow_options",
    EventType.EVENT_TYPE_NEXUS_OPERATION_SCHEDULED: "nexus",
    EventType.EVENT_TYPE_NEXUS_OPERATION_CANCEL_REQUESTED: "nexus",
}


def billable_actions(events: Sequence[HistoryEvent]) -> Counter[str]:
    """The billable actions in one run's history, by kind (see the module docstring).

    Args:
        events: The run's history events, oldest first, as ``fetch_history`` returns them.

    Returns:
        A counter from action kind (``activity``, ``timer``, ...) to how many; kinds that
        did not occur are absent. ``sum(result.values())`` is the run's total.
    """
    actions: Counter[str] = Counter()
    tasks_with_markers: set[int] = set()
    previous: HistoryEvent | None = None
    for event in events:
        kind, count = _classify(event, previous, tasks_with_markers)
        if kind and count:
            actions[kind] += count
        previous = event
    return actions


def _classify(
    event: HistoryEvent, previous: HistoryEvent | None, tasks_with_markers: set[int]
) -> tuple[str, int]:
    """The action kind and count of one event, given the event before it."""
    kind = _ONE_EACH.get(event.event_type)
    if kind is not None:
        return kind, 1
    match event.event_type:
        case EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            return _started(event)
        case EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            return _signaled(event, previous)
        case EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            return "activity_retry", max(
                event.activity_task_started_event_attributes.attempt - 1, 0
            )
        case EventType.EVENT_TYPE_MARKER_RECORDED:
            return _marker(event, tasks_with_markers)
        case EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            metering = event.workflow_task_completed_event_attributes.metering_metadata
            retries = min(metering.nonfirst_local_activity_execution_attempts, _LOCAL_RETRY_CAP)
            return "local_activity_retry", retries
        case EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            only_versioning = set(fields.indexed_fields) == {_CHANGE_VERSION}
            return "search_attributes", 0 if only_versioning else 1
    return "", 0


def _started(event: HistoryEvent) -> tuple[str, int]:
    started = event.workflow_execution_started_event_attributes
    if started.attempt > 1:  # a workflow retry: billed with the first attempt
        return "", 0
    continued = started.initiator == ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_WORKFLOW
    if continued and started.continued_execution_run_id:
        return "continue_as_new", 1
    return "workflow_started", 1


def _signaled(event: HistoryEvent, previous: HistoryEvent | None) -> tuple[str, int]:
    signaled = event.workflow_execution_signaled_event_attributes
    if signaled.HasField("external_workflow_execution"):
        return "", 0  # counted at the sender, as signal_external
    if (
        previous is not None
        and previous.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        and event.event_id == previous.event_id + 1
    ):
        return "", 0  # the signal of a signal-with-start: one action with the start
    return "signal", 1


def _marker(event: HistoryEvent, tasks_with_markers: set[int]) -> tuple[str, int]:
    marker = event.marker_recorded_event_attributes
    if marker.marker_name in _FREE_MARKERS:
        return "", 0
    task = marker.workflow_task_completed_event_id
    if task in tasks_with_markers:
        return "", 0
    tasks_with_markers.add(task)
    return "local_activity", 1


@dataclass
class HistoryCount:
    """Events, their size in bytes (protobuf, payloads included) and billable actions of one or
    more workflow runs, added up; the bytes also by event type (``activity_task_scheduled``)."""

    runs: int = 0
    events: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    bytes_by_event: Counter[str] = field(default_factory=Counter)

    @property
    def total_actions(self) -> int:
        return sum(self.actions.values())

    def add(self, other: HistoryCount) -> None:
        """Add ``other``'s runs, events and actions to this count."""
        self.runs += other.runs
        self.events += other.events
        self.actions.update(other.actions)
        self.bytes += other.bytes
        self.bytes_by_event.update(other.bytes_by_event)

    @classmethod
    def of_events(cls, events: Sequence[HistoryEvent]) -> HistoryCount:
        """The count of one run's history."""
        by_event: Counter[str] = Counter()
        for event in events:
            kind = event.WhichOneof("attributes") or "unknown"
            by_event[kind.removesuffix("_event_attributes")] += event.ByteSize()
        return cls(
            runs=1,
            events=len(events),
            actions=billable_actions(events),
            bytes=sum(by_event.values()),
            bytes_by_event=by_event,
        )


async def count_history(
    client: Client, workflow_id: str, *, run_id: str | None = None
) -> HistoryCount:
    """Events and actions of a workflow: its latest run (or ``run_id``) and every run it
    continued from, following continue-as-new back to the first.
    """
    total = HistoryCount()
    next_run: str | None = run_id
    while True:
        handle = client.get_workflow_handle(workflow_id, run_id=next_run)
        history = await handle.fetch_history()
        total.add(HistoryCount.of_events(history.events))
        if not history.events:
            return total
        started = history.events[0].workflow_execution_started_event_attributes
        if not started.continued_execution_run_id:
            return total
        next_run = started.continued_execution_run_id


async def count_histories(
    client: Client, workflow_ids: Iterable[str], *, concurrency: int = 16
) -> HistoryCount:
    """:func:`count_history` of many workflows, fetched ``concurrency`` at a time, added up."""
    limit = asyncio.Semaphore(concurrency)

    async def one(workflow_id: str) -> HistoryCount:
        async with limit:
            return await count_history(client, workflow_id)

    total = HistoryCount()
    for count in await asyncio.gather(*(one(w) for w in workflow_ids)):
        total.add(count)
    return total
