"""The product engineer's front door: emit events, identify customers, start journeys, support.

Async (:class:`Kairos`) and sync (:class:`SyncKairos`) APIs. Everything is validated against the
catalogue *before* it reaches Temporal: an unknown event or a wrong property type raises a
typed error at the call and nothing is queued. Calls are idempotent where Temporal allows it:
an event carries an id (given, or generated) and the customer entity handles each id once.

    async with await Kairos.connect() as kairos:
        await kairos.emit("c-42", "cart_updated", {"cart_total": 59.9})
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from kairos.catalogue import AttrType
from kairos.compiler import Project, load_project
from kairos.config import Settings, load_settings
from kairos.runtime import (
    QUERY_STATE,
    SA_CUSTOMER,
    SA_JOURNEY,
    SIGNAL_CONSENT,
    SIGNAL_EVENT,
    SIGNAL_FORGET,
    SIGNAL_IDENTIFY,
    ConsentChange,
    CustomerView,
    Event,
    JourneyStatus,
    customer_workflow_id,
    journey_workflow_id,
)
from kairos.temporal import connect, quote, signal_customer, start_journey

T = TypeVar("T")
CONSENT_TOPICS = ("email", "sms", "marketing", "all")


class KairosError(Exception):
    """Base of every error the client raises for a caller's mistake."""


class InvalidEvent(KairosError):
    """The event is unknown to the catalogue, or its properties are wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class InvalidProfile(InvalidEvent):
    """Profile attributes that the catalogue does not declare, or of the wrong type."""


class InvalidCustomerId(KairosError):
    pass


class UnknownJourney(KairosError):
    pass


class JourneyAlreadyRunning(KairosError):
    pass


class CustomerNotFound(KairosError):
    pass


def _check_customer_id(customer_id: str) -> str:
    if not isinstance(customer_id, str) or not customer_id.strip():
        raise InvalidCustomerId("a customer id is required (a non-empty string such as 'c-42')")
    if len(customer_id) > 200 or any(c in customer_id for c in "\n\r\t"):
        raise InvalidCustomerId(
            "customer ids are at most 200 characters with no line breaks or tabs"
        )
    return customer_id


class RunSummary:
    """One journey run of a customer, as Temporal's visibility lists it."""

    def __init__(self, journey: str, workflow_id: str, run_id: str, status: str, started: datetime):
        self.journey = journey
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.status = status
        self.started = started


class Kairos:
    """Async client. Build with :meth:`connect` (reads configuration) or from parts."""

    def __init__(self, client: Client, settings: Settings, project: Project) -> None:
        self.client = client
        self.settings = settings
        self.project = project
        self.task_queue = settings.task_queue

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> Kairos:
        settings = settings or load_settings()
        project = load_project(settings.home)
        return cls(await connect(settings), settings, project)

    async def __aenter__(self) -> Kairos:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

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
        _check_customer_id(customer_id)
        properties = dict(properties or {})
        problems = self.project.catalogue.validate_event(event, properties)
        if problems:
            raise InvalidEvent(problems)
        payload = Event(
            id=event_id or str(uuid.uuid4()),
            name=event,
            properties=properties,
            timestamp=timestamp or datetime.now(UTC),
        )
        await signal_customer(self.client, self.task_queue, customer_id, SIGNAL_EVENT, payload)
        return payload.id

    async def identify(self, customer_id: str, attributes: dict[str, Any]) -> None:
        """Create or update a customer's profile."""
        _check_customer_id(customer_id)
        problems = self.project.catalogue.validate_profile(attributes)
        if problems:
            raise InvalidProfile(problems)
        await signal_customer(
            self.client, self.task_queue, customer_id, SIGNAL_IDENTIFY, attributes
        )

    async def start(
        self, journey: str, customer_id: str, profile: dict[str, Any] | None = None
    ) -> str:
        """Start a journey for a customer directly (not through an event); returns the run id."""
        _check_customer_id(customer_id)
        plan = self.project.plans.get(journey)
        if plan is None:
            known = ", ".join(sorted(self.project.plans)) or "none"
            raise UnknownJourney(f"no journey named {journey!r} (journeys: {known})")
        if profile:
            await self.identify(customer_id, profile)
        else:
            await signal_customer(self.client, self.task_queue, customer_id, SIGNAL_IDENTIFY, {})
        view = await self._wait_for_profile(customer_id, profile or {})
        try:
            handle = await start_journey(
                self.client,
                self.task_queue,
                plan,
                customer_id,
                profile=view.profile if view else dict(profile or {}),
                trigger=None,
                timezone_attribute=self.project.catalogue.attribute_of_type(AttrType.timezone),
                conflict=WorkflowIDConflictPolicy.FAIL,
            )
        except WorkflowAlreadyStartedError as err:
            raise JourneyAlreadyRunning(
                f"{journey} is already running for customer {customer_id}"
            ) from err
        return handle.result_run_id or ""

    async def _wait_for_profile(
        self, customer_id: str, expected: dict[str, Any]
    ) -> CustomerView | None:
        """The entity's view once it has applied ``expected`` (signals are asynchronous)."""
        for _ in range(50):
            view = await self.customer(customer_id)
            if all(view.profile.get(k) == v for k, v in expected.items()):
                return view
            await asyncio.sleep(0.1)
        return None

    async def customer(self, customer_id: str) -> CustomerView:
        """Profile, stage, consent and recent messages of a customer."""
        handle = self.client.get_workflow_handle(customer_workflow_id(customer_id))
        try:
            view: CustomerView = await handle.query(QUERY_STATE, result_type=CustomerView)
            return view
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise CustomerNotFound(f"no customer {customer_id!r} is known to Kairos") from err
            raise

    async def status(self, journey: str, customer_id: str) -> JourneyStatus:
        """Where a customer's run of a journey is, and the steps it took."""
        handle = self.client.get_workflow_handle(journey_workflow_id(journey, customer_id))
        try:
            status: JourneyStatus = await handle.query(QUERY_STATE, result_type=JourneyStatus)
            return status
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise UnknownJourney(f"{customer_id} has no run of {journey}") from err
            raise

    async def runs(self, customer_id: str | None = None, journey: str | None = None,
                   status: str | None = None, limit: int = 100) -> list[RunSummary]:  # fmt: skip
        """Journey runs from Temporal's visibility, newest first."""
        clauses = ["WorkflowType = 'Journey'"]
        if customer_id:
            clauses.append(f"{SA_CUSTOMER.name} = '{quote(customer_id)}'")
        if journey:
            clauses.append(f"{SA_JOURNEY.name} = '{quote(journey)}'")
        if status:
            clauses.append(f"ExecutionStatus = '{status.capitalize()}'")
        found: list[RunSummary] = []
        async for wf in self.client.list_workflows(" AND ".join(clauses), limit=limit):
            name = wf.typed_search_attributes.get(SA_JOURNEY) or wf.id.split(":")[1]
            state = wf.status.name.lower() if isinstance(wf.status, WorkflowExecutionStatus) else ""
            found.append(RunSummary(name, wf.id, wf.run_id, state, wf.start_time))
        return found

    async def cancel(self, journey: str, customer_id: str) -> None:
        """Cancel a customer's running journey."""
        handle = self.client.get_workflow_handle(journey_workflow_id(journey, customer_id))
        try:
            await handle.cancel()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise UnknownJourney(f"{customer_id} has no running {journey}") from err
            raise

    async def unsubscribe(self, customer_id: str, topic: str = "marketing", *,
                          granted: bool = False, source: str = "api") -> None:  # fmt: skip
        """Opt a customer out of (or, with ``granted``, back into) a channel or category."""
        if topic not in CONSENT_TOPICS:
            raise KairosError(f"unknown topic {topic!r} (use one of {', '.join(CONSENT_TOPICS)})")
        change = ConsentChange(topic=topic, granted=granted, source=source)
        await signal_customer(self.client, self.task_queue, customer_id, SIGNAL_CONSENT, change)

    async def forget(self, customer_id: str) -> None:
        """End every run of a customer and drop their personal data from the entity."""
        handle = self.client.get_workflow_handle(customer_workflow_id(customer_id))
        try:
            await handle.signal(SIGNAL_FORGET)
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise CustomerNotFound(f"no customer {customer_id!r} is known to Kairos") from err
            raise


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

    def identify(self, customer_id: str, attributes: dict[str, Any]) -> None:
        self._run(self._kairos.identify(customer_id, attributes))

    def start(self, journey: str, customer_id: str, profile: dict[str, Any] | None = None) -> str:
        return self._run(self._kairos.start(journey, customer_id, profile))

    def customer(self, customer_id: str) -> CustomerView:
        return self._run(self._kairos.customer(customer_id))

    def status(self, journey: str, customer_id: str) -> JourneyStatus:
        return self._run(self._kairos.status(journey, customer_id))

    def cancel(self, journey: str, customer_id: str) -> None:
        self._run(self._kairos.cancel(journey, customer_id))

    def unsubscribe(self, customer_id: str, topic: str = "marketing") -> None:
        self._run(self._kairos.unsubscribe(customer_id, topic))

    def forget(self, customer_id: str) -> None:
        self._run(self._kairos.forget(customer_id))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> SyncKairos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
