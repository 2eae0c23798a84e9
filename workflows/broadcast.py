"""The broadcast workflow: what a scheduled broadcast's Temporal Schedule starts.

One run per group (a timezone of the broadcast) when its moment comes: a single activity
enters the group's members (:mod:`activities.broadcasts`), heartbeating as it goes, retried
until it is done. The activity is safe to retry, and to run twice (a schedule triggered by hand
as well): the store enters each member once.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from kairos.runtime.schedules import (
        BROADCAST_ACTIVITY,
        BROADCAST_WORKFLOW,
        HEARTBEAT_TIMEOUT,
        BroadcastGroup,
        GroupResult,
    )


@workflow.defn(name=BROADCAST_WORKFLOW)
class BroadcastWorkflow:
    """Enters one group of a scheduled broadcast into its journey."""

    @workflow.run
    async def run(self, group: BroadcastGroup) -> GroupResult:
        zones = ", ".join(group.zones) or "everyone"
        workflow.set_current_details(
            f"entering the members of segment {group.segment} in {zones} into {group.journey}"
        )
        result: GroupResult = await workflow.execute_activity(
            BROADCAST_ACTIVITY,
            group,
            result_type=GroupResult,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            schedule_to_close_timeout=timedelta(hours=12),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=5),
                maximum_interval=timedelta(minutes=2),
                non_retryable_error_types=["BroadcastUnknown"],
            ),
            summary=f"enter {group.segment} in {zones}",
        )
        return result
