"""The product engineer's front door: emit events, identify customers, start journeys, support.

Async (:class:`Kairos`) and sync (:class:`SyncKairos`) APIs. Everything is validated against the
catalogue first: an unknown event or a wrong property type raises a typed error at the call and
nothing is recorded. A valid call is one transaction in the customer store (PostgreSQL): the
event is recorded once per id, the profile and consent updated, and the journeys it starts or
wakes decided. Then the Temporal calls are made; if Temporal cannot be reached the call still
succeeds (the event is accepted) and a worker makes them as soon as it can.

    async with await Kairos.connect() as kairos:
        await kairos.emit("c-42", "cart_updated", {"cart_total": 59.9, "currency": "EUR"})

What each call checks first, with the errors it raises, is :mod:`kairos.runtime.client_checks`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from kairos.language.catalogue import CONSENT_TOPICS, AttrType
from kairos.language.project import Project, load_project
from kairos.runtime.client_checks import (
    MAX_DEPTH,
    MAX_ID_CHARS,
    MAX_PROPERTIES_BYTES,
    MAX_STRING_CHARS,
    CustomerNotFound,
    InvalidCustomerId,
    InvalidEvent,
    InvalidProfile,
    JourneyAlreadyRunning,
    KairosError,
    NoRunningJourney,
    UnknownJourney,
    check_customer_id,
    check_journey,
    check_profile,
    checked_event,
    size_problems,
    value_problems,
)
from kairos.runtime.config import Settings, load_settings
from kairos.runtime.contract import QUERY_STATE, SA_STEP, JourneyStatus, journey_workflow_id
from kairos.runtime.outbox_files import erase_customer
from kairos.runtime.temporal import connect, reached, unless_gone
from kairos.store.dispatch import Dispatcher, TemporalUnreachable
from kairos.store.facade import Store
from kairos.store.ingest import Accepted
from kairos.store.runs import RunRecord, runs_of
from kairos.store.support import CustomerRecord, Forgotten

# The checks and errors are part of the client's API: callers import them from here.
__all__ = [
    "CONSENT_TOPICS",
    "DISPATCH_SECONDS",
    "MAX_DEPTH",
    "MAX_ID_CHARS",
    "MAX_PROPERTIES_BYTES",
    "MAX_STRING_CHARS",
    "WHEREABOUTS",
    "CustomerNotFound",
    "InvalidCustomerId",
    "InvalidEvent",
    "InvalidProfile",
    "JourneyAlreadyRunning",
    "Kairos",
    "KairosError",
    "NoRunningJourney",
    "SyncKairos",
    "UnknownJourney",
    "check_customer_id",
    "check_journey",
    "check_profile",
    "checked_event",
    "size_problems",
    "value_problems",
]

T = TypeVar("T")
log = logging.getLogger(__name__)
# How long a call waits for Temporal before leaving the calls to a worker.
DISPATCH_SECONDS = 10.0
# How long support's view of a customer waits for Temporal to say where a run is.
WHEREABOUTS = timedelta(seconds=2)


class Kairos:
    """Async client. Build with :meth:`connect` (reads configuration) or from parts."""

    def __init__(
        self,
        store: Store,
        dispatcher: Dispatcher,
        settings: Settings,
        *,
        owns_store: bool = False,
    ) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.project: Project = store.project
        self.client: Client = dispatcher.client
        self.task_queue = settings.task_queue
        self._owns_store = owns_store

    @classmethod
    async def connect(
        cls, settings: Settings | None = None, *, project: Project | None = None
    ) -> Kairos:
        """Open the customer store and a (lazily connected) Temporal client.

        Raises:
            ProjectError: The journeys do not compile.
            StoreUnavailable: PostgreSQL cannot be reached.
            SchemaMismatch: The database needs `kairos db upgrade`.
        """
        settings = settings or load_settings()
        project = project or load_project(
            settings.home, actions=settings.actions, cache=settings.project_cache
        )
        store = await Store.open(settings, project)
        client = await connect(settings, store.keys, lazy=True)
        dispatcher = Dispatcher(
            store.database,
            client,
            settings.task_queue,
            project.catalogue.attribute_of_type(AttrType.timezone),
        )
        return cls(store, dispatcher, settings, owns_store=True)

    async def close(self) -> None:
        if self._owns_store:
            await self.store.close()

    async def __aenter__(self) -> Kairos:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- events in ------------------------------------------------------------------------------

    async def emit(
        self,
        customer_id: str,
        event: str,
        properties: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> str:
        """Send an event for a customer; returns the event id (pass your own to dedupe)."""
        accepted = await self.record(
            customer_id, event, properties, event_id=event_id, timestamp=timestamp
        )
        return accepted.event_id

    async def record(
        self,
        customer_id: str,
        event: str,
        properties: dict[str, Any] | None = None,
        *,
        event_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> Accepted:
        """:meth:`emit`, answering what the event did (journeys started, runs woken)."""
        payload = checked_event(
            self.project.catalogue,
            customer_id,
            event,
            properties,
            event_id=event_id,
            timestamp=timestamp,
        )
        return await self._dispatched(await self.store.accept(customer_id, payload))

    async def identify(
        self,
        customer_id: str,
        attributes: dict[str, Any],
        *,
        consent: dict[str, bool] | None = None,
        source: str = "identify",
        call_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> Accepted:
        """Create or update a customer's profile, and record consent given with it.

        Args:
            customer_id: The customer.
            attributes: Profile attributes declared in journeys/customer.yaml.
            consent: Topics (email, sms, marketing) granted (True) or withdrawn (False).
            source: Who or what gave the consent ("signup form", "support call"): the proof.
            call_id: Makes a retried call harmless: the same id is applied once.
            timestamp: When the attributes were true (default: now). An attribute that an
                identify stated for a later time keeps its value, so an older call arriving
                late (a retry) does not overwrite a newer one.
        """
        check_profile(self.project.catalogue, customer_id, attributes, consent)
        accepted = await self.store.identify(
            customer_id, attributes, consent=consent, source=source, call_id=call_id,
            at=timestamp,
        )  # fmt: skip
        return await self._dispatched(accepted)

    async def start(
        self, journey: str, customer_id: str, profile: dict[str, Any] | None = None
    ) -> str:
        """Start a journey for a customer by name, under its entry rule; returns the run's
        workflow id."""
        accepted = await self.enter(journey, customer_id, profile)
        return journey_workflow_id(journey, customer_id, accepted.started[journey])

    async def enter(
        self, journey: str, customer_id: str, profile: dict[str, Any] | None = None
    ) -> Accepted:
        """:meth:`start`, answering what it did (the run number, whether Temporal has it).

        Raises:
            JourneyAlreadyRunning: The journey's entry rule refused a new run.
        """
        check_customer_id(customer_id)
        self._plan(journey)
        if profile:
            await self.identify(customer_id, profile)
        accepted = await self.store.start(journey, customer_id)
        if journey in accepted.refused:
            raise JourneyAlreadyRunning(accepted.refused[journey])
        return await self._dispatched(accepted)

    async def unsubscribe(
        self,
        customer_id: str,
        topic: str = "marketing",
        *,
        granted: bool = False,
        source: str = "api",
        change_id: str | None = None,
    ) -> Accepted:
        """Opt a known customer out of (or, with ``granted``, back into) a channel or category.

        ``topic`` is email, sms, marketing or all. Raises CustomerNotFound for an unknown id
        rather than creating a customer.
        """
        check_customer_id(customer_id)
        if topic not in (*CONSENT_TOPICS, "all"):
            raise KairosError(f"unknown topic {topic!r} (use one of email, sms, marketing, all)")
        await self.customer(customer_id)
        topics = CONSENT_TOPICS if topic == "all" else (topic,)
        accepted = await self.store.change_consent(
            customer_id, dict.fromkeys(topics, granted), source=source, change_id=change_id
        )
        return await self._dispatched(accepted)

    async def dispatch(self, accepted: Accepted) -> Accepted:
        """Make the Temporal calls of a change made on :attr:`store` directly (an inbound SMS
        keyword, :meth:`Store.phone_keyword`), as every method of this client does for its own.

        Never raises for Temporal being unreachable: ``pending`` counts the calls left to a
        worker.
        """
        return await self._dispatched(accepted)

    async def _dispatched(self, accepted: Accepted) -> Accepted:
        """Make the Temporal calls the store decided; if Temporal is unreachable, a worker
        makes them later (the event is accepted either way)."""
        if accepted.dispatches:
            try:
                await asyncio.wait_for(
                    self.dispatcher.run([accepted.customer.id]), timeout=DISPATCH_SECONDS
                )
            except (TemporalUnreachable, TimeoutError) as err:
                log.warning("Temporal calls left to a worker: %s", err or "timed out")
            accepted.pending = await self._pending(accepted.customer.id)
        return accepted

    async def _pending(self, customer_id: str) -> int:
        row = await self.store.database.fetch_one(
            "SELECT count(*) AS n FROM dispatches WHERE customer_id = %s", (customer_id,)
        )
        return int(row["n"]) if row else 0

    # --- support ------------------------------------------------------------------------------

    async def customer(self, customer_id: str) -> CustomerRecord:
        """Profile, stage, consent with its history, runs and recent messages of a customer."""
        check_customer_id(customer_id)
        record = await self.store.customer(customer_id)
        if record is None:
            raise CustomerNotFound(f"no customer {customer_id!r} is known to Kairos")
        return record

    async def runs(
        self,
        customer_id: str | None = None,
        journey: str | None = None,
        *,
        running: bool = False,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Runs from the store, newest first."""
        if journey is not None:
            self._plan(journey)
        return await runs_of(
            self.store.database,
            customer_id=customer_id,
            journey=journey,
            open_only=running,
            limit=limit,
        )

    async def status(self, journey: str, customer_id: str) -> JourneyStatus:
        """Where a customer's latest run of a journey is, and the steps it took."""
        found = await self.runs(customer_id, journey, limit=1)
        if not found:
            raise NoRunningJourney(f"{customer_id} has no run of {journey}")
        run = found[0]
        handle = self.client.get_workflow_handle(run.workflow_id)
        status: JourneyStatus | None = await unless_gone(
            handle.query(QUERY_STATE, result_type=JourneyStatus)
        )
        if status is None:
            raise NoRunningJourney(f"{run.workflow_id} is no longer in Temporal (it {run.status})")
        return status

    async def whereabouts(self, runs: list[RunRecord]) -> dict[str, str]:
        """Where each running run is now, by workflow id: ``step: what it waits for`` from the
        run itself, or the step from its search attribute when no worker answers.

        Support reads this beside the store's runs, so it never fails and never waits long:
        a run Temporal says nothing about within a few seconds is left out.
        """
        running = [run for run in runs if run.ended_at is None]
        if not running:
            return {}
        answers = await asyncio.gather(*(self._whereabouts(run) for run in running))
        found = zip(running, answers, strict=True)
        return {run.workflow_id: where for run, where in found if where}

    async def _whereabouts(self, run: RunRecord) -> str:
        handle = self.client.get_workflow_handle(run.workflow_id)
        try:
            status = await asyncio.wait_for(
                handle.query(QUERY_STATE, result_type=JourneyStatus, rpc_timeout=WHEREABOUTS),
                WHEREABOUTS.total_seconds(),
            )
            return f"{status.step}: {status.waiting}" if status.waiting else status.step or ""
        except RuntimeError:  # Temporal cannot be reached: nothing more to ask
            return ""
        except (RPCError, TimeoutError, WorkflowQueryFailedError):
            pass  # no worker answers the query: the search attribute still says the step
        try:
            described = await asyncio.wait_for(
                handle.describe(rpc_timeout=WHEREABOUTS), WHEREABOUTS.total_seconds()
            )
        except (RPCError, RuntimeError, TimeoutError):
            return ""
        return described.typed_search_attributes.get(SA_STEP) or ""

    async def cancel(self, journey: str, customer_id: str) -> RunRecord:
        """Cancel a customer's running journey: the store first (a send not yet handed to the
        provider is then blocked), then the workflow."""
        check_customer_id(customer_id)
        self._plan(journey)
        run = await self.store.cancel_run(customer_id, journey)
        if run is None:
            raise NoRunningJourney(f"{customer_id} has no running {journey}")
        await self.cancel_workflow(run)
        return run

    async def forget(self, customer_id: str) -> Forgotten:
        """Erase a customer: their rows and data key go (suppressions of withdrawn addresses
        stay), so do their outbox messages, and every run of theirs is ended."""
        forgotten = await self.erase(customer_id)
        for run in (*forgotten.open_runs, *forgotten.ended_runs):
            await self.end_forgotten_run(run)
        return forgotten

    async def erase(self, customer_id: str) -> Forgotten:
        """:meth:`forget` without its Temporal part: the customer store and the outbox."""
        check_customer_id(customer_id)
        forgotten = await self.store.forget(customer_id)
        if forgotten is None:
            raise CustomerNotFound(f"no customer {customer_id!r} is known to Kairos")
        outbox = self.settings.outbox_dir
        forgotten.outbox_messages = await asyncio.to_thread(erase_customer, outbox, customer_id)
        return forgotten

    async def end_forgotten_run(self, run: RunRecord) -> None:
        """Terminate a forgotten customer's run (gone already is fine). Not a cancellation:
        with their data key deleted no worker can read the run's history to handle one.

        Raises:
            RuntimeError: Temporal cannot be reached (the SDK's connection error).
            RPCError: Temporal refused the call.
        """
        handle = self.client.get_workflow_handle(run.workflow_id)
        await reached(handle.terminate(reason="customer forgotten"))

    async def cancel_workflow(self, run: RunRecord) -> None:
        """Cancel a run's workflow (gone already is fine); the store is the caller's business.

        Raises:
            RuntimeError: Temporal cannot be reached (the SDK's connection error).
            RPCError: Temporal refused the call.
        """
        await reached(self.client.get_workflow_handle(run.workflow_id).cancel())

    def _plan(self, journey: str) -> None:
        check_journey(self.project, journey)


class SyncKairos:
    """The same API for synchronous code: each call runs on a private event loop thread."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._kairos: Kairos = self._run(Kairos.connect(settings))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def emit(self, customer_id: str, event: str, properties: dict[str, Any] | None = None,
             *, event_id: str | None = None) -> str:  # fmt: skip
        return self._run(self._kairos.emit(customer_id, event, properties, event_id=event_id))

    def identify(
        self, customer_id: str, attributes: dict[str, Any], *,
        consent: dict[str, bool] | None = None, source: str = "identify",
    ) -> Accepted:  # fmt: skip
        return self._run(
            self._kairos.identify(customer_id, attributes, consent=consent, source=source)
        )

    def start(self, journey: str, customer_id: str, profile: dict[str, Any] | None = None) -> str:
        return self._run(self._kairos.start(journey, customer_id, profile))

    def customer(self, customer_id: str) -> CustomerRecord:
        return self._run(self._kairos.customer(customer_id))

    def status(self, journey: str, customer_id: str) -> JourneyStatus:
        return self._run(self._kairos.status(journey, customer_id))

    def cancel(self, journey: str, customer_id: str) -> RunRecord:
        return self._run(self._kairos.cancel(journey, customer_id))

    def unsubscribe(self, customer_id: str, topic: str = "marketing") -> Accepted:
        return self._run(self._kairos.unsubscribe(customer_id, topic))

    def forget(self, customer_id: str) -> Forgotten:
        return self._run(self._kairos.forget(customer_id))

    def close(self) -> None:
        self._run(self._kairos.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> SyncKairos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
