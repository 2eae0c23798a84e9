"""Counting billable actions: the rule on synthetic histories, then on a real one."""

from __future__ import annotations

import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import ContinueAsNewInitiator, EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from kairos.reporting.costs import HistoryCount, billable_actions, count_history
from kairos.runtime.contract import SA_STEP

E = EventType


def event(event_id: int, kind: int, **attributes: object) -> HistoryEvent:
    """A history event of ``kind``; ``attributes`` names its attributes message and fields."""
    made = HistoryEvent(event_id=event_id, event_type=kind)  # type: ignore[arg-type]
    for name, fields in attributes.items():
        getattr(made, name).MergeFrom(fields)
    return made


def started(event_id: int = 1, **fields: object) -> HistoryEvent:
    from temporalio.api.history.v1 import WorkflowExecutionStartedEventAttributes

    attrs = WorkflowExecutionStartedEventAttributes(**fields)  # type: ignore[arg-type]
    return event(
        event_id, E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
        workflow_execution_started_event_attributes=attrs,
    )  # fmt: skip


def signaled(event_id: int, *, from_workflow: bool = False) -> HistoryEvent:
    from temporalio.api.history.v1 import WorkflowExecutionSignaledEventAttributes

    attrs = WorkflowExecutionSignaledEventAttributes(signal_name="event")
    if from_workflow:
        attrs.external_workflow_execution.CopyFrom(WorkflowExecution(workflow_id="journey:x"))
    return event(
        event_id, E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        workflow_execution_signaled_event_attributes=attrs,
    )  # fmt: skip


def marker(event_id: int, task: int, name: str = "core_local_activity") -> HistoryEvent:
    from temporalio.api.history.v1 import MarkerRecordedEventAttributes

    attrs = MarkerRecordedEventAttributes(marker_name=name, workflow_task_completed_event_id=task)
    return event(event_id, E.EVENT_TYPE_MARKER_RECORDED, marker_recorded_event_attributes=attrs)


def plain(event_id: int, kind: int) -> HistoryEvent:
    return HistoryEvent(event_id=event_id, event_type=kind)  # type: ignore[arg-type]


def test_a_send_and_a_wait_cost_one_activity_and_one_timer_after_the_start() -> None:
    history = [
        started(),
        plain(2, E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED),
        plain(3, E.EVENT_TYPE_WORKFLOW_TASK_STARTED),
        plain(4, E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
        plain(5, E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED),
        plain(6, E.EVENT_TYPE_ACTIVITY_TASK_STARTED),
        plain(7, E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED),
        plain(8, E.EVENT_TYPE_TIMER_STARTED),
        plain(9, E.EVENT_TYPE_TIMER_FIRED),
        plain(10, E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED),
    ]

    assert billable_actions(history) == {"workflow_started": 1, "activity": 1, "timer": 1}


def test_the_signal_of_a_signal_with_start_is_free_and_later_signals_are_not() -> None:
    history = [started(), signaled(2), plain(3, E.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED), signaled(4)]

    assert billable_actions(history) == {"workflow_started": 1, "signal": 1}


def test_a_signal_between_workflows_is_counted_once_at_the_sender() -> None:
    sender = [plain(7, E.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED)]
    receiver = [signaled(9, from_workflow=True)]

    assert billable_actions(sender) + billable_actions(receiver) == {"signal_external": 1}


def test_local_activities_recorded_by_one_workflow_task_are_one_action() -> None:
    history = [marker(5, task=4), marker(6, task=4), marker(9, task=8), marker(10, 8, "core_patch")]

    assert billable_actions(history) == {"local_activity": 2}


def test_retries_are_actions_but_a_workflow_retry_start_is_not() -> None:
    from temporalio.api.history.v1 import ActivityTaskStartedEventAttributes

    third_attempt = event(
        6, E.EVENT_TYPE_ACTIVITY_TASK_STARTED,
        activity_task_started_event_attributes=ActivityTaskStartedEventAttributes(attempt=3),
    )  # fmt: skip
    history = [started(attempt=2), plain(5, E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED), third_attempt]

    assert billable_actions(history) == {"activity": 1, "activity_retry": 2}


def test_continue_as_new_is_counted_once_at_the_new_run() -> None:
    closing = [started(), plain(9, E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW)]
    new_run = [
        started(
            continued_execution_run_id="run-1",
            initiator=ContinueAsNewInitiator.CONTINUE_AS_NEW_INITIATOR_WORKFLOW,
        )
    ]

    assert billable_actions(closing) + billable_actions(new_run) == {
        "workflow_started": 1,
        "continue_as_new": 1,
    }


def test_upserts_updates_and_children_are_actions_but_a_versioning_upsert_is_not() -> None:
    from temporalio.api.common.v1 import SearchAttributes
    from temporalio.api.history.v1 import UpsertWorkflowSearchAttributesEventAttributes

    def upsert(event_id: int, key: str) -> HistoryEvent:
        fields = SearchAttributes(indexed_fields={key: Payload(data=b'"x"')})
        attrs = UpsertWorkflowSearchAttributesEventAttributes(search_attributes=fields)
        return event(
            event_id, E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
            upsert_workflow_search_attributes_event_attributes=attrs,
        )  # fmt: skip

    history = [
        upsert(5, "KairosStep"),
        upsert(6, "TemporalChangeVersion"),
        plain(7, E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED),
        plain(8, E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED),
        plain(9, E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED),
    ]

    assert billable_actions(history) == {
        "search_attributes": 1,
        "update": 1,
        "child_workflow": 1,
    }


def test_counts_add_up_across_runs() -> None:
    first, second = [started(), plain(2, E.EVENT_TYPE_TIMER_STARTED)], [started()]
    total = HistoryCount()
    total.add(HistoryCount.of_events(first))
    total.add(HistoryCount.of_events(second))

    assert (total.runs, total.events, total.total_actions) == (2, 3, 3)
    assert total.bytes == sum(e.ByteSize() for e in first + second) > 0
    starts = first[0].ByteSize() + second[0].ByteSize()
    assert total.bytes_by_event["workflow_execution_started"] == starts > 0
    assert sum(total.bytes_by_event.values()) == total.bytes


# --- a real history -------------------------------------------------------------------------


@activity.defn(name="cost_probe")
async def cost_probe(value: int) -> int:
    return value + 1


@workflow.defn(name="CostProbe")
class CostProbe:
    """One of each billable thing a journey does: activity, local activity, timer, upsert,
    signal received, update accepted."""

    def __init__(self) -> None:
        self.signals = 0

    @workflow.run
    async def run(self) -> int:
        workflow.upsert_search_attributes([SA_STEP.value_set("probe")])
        total = await workflow.execute_activity(
            cost_probe, 1, start_to_close_timeout=timedelta(seconds=10)
        )
        total += await workflow.execute_local_activity(
            cost_probe, 1, start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.sleep(timedelta(seconds=1))
        await workflow.wait_condition(lambda: self.signals > 0)
        return total

    @workflow.signal(name="poke")
    def poke(self) -> None:
        self.signals += 1

    @workflow.update(name="ask")
    def ask(self) -> int:
        return self.signals


async def test_a_real_history_is_counted_by_the_rule(ts_env: WorkflowEnvironment) -> None:
    queue = f"costs-{uuid.uuid4()}"
    client = ts_env.client
    async with Worker(client, task_queue=queue, workflows=[CostProbe], activities=[cost_probe]):
        handle = await client.start_workflow(
            CostProbe.run, id=f"cost-probe-{uuid.uuid4()}", task_queue=queue
        )
        assert await handle.execute_update(CostProbe.ask) == 0
        await handle.signal(CostProbe.poke)
        assert await handle.result() == 4

    count = await count_history(client, handle.id)

    assert count.runs == 1
    assert count.actions == {
        "workflow_started": 1,
        "search_attributes": 1,
        "activity": 1,
        "local_activity": 1,
        "timer": 1,
        "update": 1,
        "signal": 1,
    }
