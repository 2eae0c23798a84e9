"""Events scheduled in (virtual) time, for simulations and tests.

``kairos simulate --event order_placed@+3h`` and the journey tests need an event to arrive at a
given moment of a time-skipping run. Driving that from outside (sleeping the test server's
clock, then emitting) races the server's own time skipping; a workflow whose durable timers
fire the events keeps every moment on the server's clock. Each event is accepted by the
``accept_event`` activity exactly as product code's would be, stamped with the server's time.
Registered only on simulation and test workers, never in production.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from kairos.runtime.contract import Event, EventRequest


class ScheduledEvent(BaseModel):
    """An event to deliver ``after_seconds`` after the schedule starts."""

    after_seconds: float
    event: Event


class EventSchedule(BaseModel):
    customer_id: str
    events: list[ScheduledEvent] = Field(default_factory=list)


@workflow.defn(name="KairosEventSchedule")
class EventScheduleWorkflow:
    """Accepts each event for the customer at its moment, in order."""

    @workflow.run
    async def run(self, schedule: EventSchedule) -> int:
        elapsed = 0.0
        for item in sorted(schedule.events, key=lambda e: e.after_seconds):
            if item.after_seconds > elapsed:
                await workflow.sleep(
                    timedelta(seconds=item.after_seconds - elapsed),
                    summary=f"until {item.event.name}",
                )
                elapsed = item.after_seconds
            await workflow.execute_activity(
                "accept_event",
                EventRequest(customer_id=schedule.customer_id, event=item.event),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"emit {item.event.name}",
            )
        return len(schedule.events)
