"""Activities that change a customer in the store: a journey's ``set`` step, a run's end,
consent withdrawn by a provider, and (in simulations and tests) events arriving in virtual time.

Each is one store transaction, then the Temporal calls it decided (signals to the customer's
other runs). A call Temporal does not take now is made by the sweeper.
"""

from __future__ import annotations

import logging

from temporalio import activity
from temporalio.exceptions import ApplicationError

from kairos.runtime.client import Kairos, KairosError
from kairos.runtime.contract import (
    EventRequest,
    ProfileChange,
    ProfileSnapshot,
    RunEnd,
    RunProblems,
)
from kairos.store.dispatch import TemporalUnreachable
from kairos.store.facade import Store
from kairos.store.ingest import Accepted

log = logging.getLogger(__name__)


class CustomerActivities:
    """Built with a client (store + dispatcher): the seam tests use."""

    def __init__(self, kairos: Kairos) -> None:
        self.kairos = kairos
        self.store: Store = kairos.store

    @activity.defn(name="change_profile")
    async def change_profile(self, change: ProfileChange) -> ProfileSnapshot:
        """Apply a ``set`` step once per key; answer the attributes the run reads, as stored."""
        accepted = await self.store.change_profile(change, at=activity.info().started_time)
        await self._dispatch(accepted)
        if change.end is not None:
            # The run's last step: its end is recorded here rather than by another activity.
            await self.store.end_run(change.end)
        return accepted.customer.snapshot(change.reads)

    @activity.defn(name="end_run")
    async def end_run(self, end: RunEnd) -> None:
        """Record how a run ended (which lets an ``after_exit`` journey be entered again)."""
        await self.store.end_run(end)

    @activity.defn(name="note_problems")
    async def note_problems(self, report: RunProblems) -> None:
        """Keep what a run could not evaluate on its record, where support looks."""
        await self.store.note_problems(report)

    @activity.defn(name="accept_event")
    async def accept_event(self, request: EventRequest) -> str:
        """Accept an event at the server's (virtual) time, as product code would emit it."""
        event = request.event
        try:
            return await self.kairos.emit(
                request.customer_id,
                event.name,
                event.properties,
                event_id=event.id,
                timestamp=activity.info().started_time,
            )
        except KairosError as err:
            raise ApplicationError(str(err), type="InvalidEvent", non_retryable=True) from None

    async def withdraw_sms(self, customer_id: str, key: str) -> None:
        """The SMS provider says the recipient opted out (replied STOP at the carrier)."""
        accepted = await self.store.change_consent(
            customer_id, {"sms": False}, source="twilio 21610", change_id=f"21610:{key}"
        )
        await self._dispatch(accepted)

    async def _dispatch(self, accepted: Accepted) -> None:
        if not accepted.dispatches:
            return
        try:
            await self.kairos.dispatcher.run([accepted.customer.id])
        except TemporalUnreachable as err:
            log.warning("left to the sweeper: %s", err)
