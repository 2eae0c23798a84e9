"""Talking to Temporal: connecting, search attributes, starting journey runs.

Journeys are started in one place (:func:`start_journey`), called by the store's dispatcher
whichever door the trigger came through.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from kairos.language.plan import JourneyPlan, WaitForStep, WaitStep
from kairos.runtime.codec import KeyRing, data_converter
from kairos.runtime.config import Settings
from kairos.runtime.contract import (
    JOURNEY_WORKFLOW,
    SA_CUSTOMER,
    SA_JOURNEY,
    SA_STAGE,
    SA_STEP,
    SA_VERSION,
    SEARCH_ATTRIBUTES,
    SEARCHABLE_WAIT_SECONDS,
    Event,
    JourneyInput,
    ProfileSnapshot,
    journey_workflow_id,
)

T = TypeVar("T")


async def unless_gone(call: Awaitable[T]) -> T | None:
    """``call``'s answer, or None when Temporal has no such workflow (it ended and its history
    was deleted, or it was never started): the one place NOT_FOUND means "gone"."""
    try:
        return await call
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return None
        raise


async def reached(call: Awaitable[object]) -> bool:
    """Whether ``call`` (a signal, a cancel, a terminate) found its workflow; False when gone."""
    return await unless_gone(_done(call)) is not None


async def _done(call: Awaitable[object]) -> bool:
    await call
    return True


def quote(value: str) -> str:
    """``value`` escaped for a single-quoted string in a visibility query."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


async def connect(
    settings: Settings, keys: KeyRing, *, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """A client for the configured Temporal (dev server, cluster or Cloud), encrypting what it
    writes with the data keys of ``keys`` (the customer store's: ``store.keys``).

    ``lazy`` connects on first use, so a process can start (and accept events into the store)
    while Temporal is still coming up or down for maintenance. ``runtime``: the Temporal
    runtime to run on (the worker's exports metrics); the SDK's default otherwise.
    """
    config = dict(settings.temporal)
    target = config.pop("target_host", "localhost:7233")
    converter = data_converter(keys)
    return await Client.connect(
        target, data_converter=converter, lazy=lazy, runtime=runtime, **config
    )


def with_keys(client: Client, keys: KeyRing) -> Client:
    """``client``'s connection, encrypting with ``keys``: for a client made before the customer
    store was open (a test server's, a benchmark's)."""
    config = client.config()
    config["data_converter"] = data_converter(keys)
    return Client(**config)


async def register_search_attributes(client: Client) -> list[str]:
    """Create Kairos's custom search attributes where missing; returns the ones created.

    Temporal Cloud does not allow this through the API: create them in the Cloud UI or with
    ``tcld`` instead (docs/operations.md); there this function reports what is missing.
    """
    known: set[str] = set()
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        known = set(existing.custom_attributes) | set(existing.system_attributes)
    except RPCError as err:
        # The time-skipping test server cannot list, but accepts additions.
        if err.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in SEARCH_ATTRIBUTES
        if key.name not in known
    }
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    return sorted(missing)


def _waits_long(plan: JourneyPlan, step_id: str | None) -> bool:
    """Whether ``step_id`` is a wait of a fixed length that shows its step in KairosStep."""
    step = plan.steps.get(step_id) if step_id else None
    if isinstance(step, WaitStep):
        seconds = step.duration_seconds
    elif isinstance(step, WaitForStep):
        seconds = step.timeout_seconds
    else:
        return False
    return seconds is not None and seconds >= SEARCHABLE_WAIT_SECONDS


@dataclass(frozen=True)
class RunStart:
    """One run to start, as the store's dispatcher decided it: which plan version, for whom,
    which run, with the profile attributes the plan reads and the event that triggered it."""

    plan: JourneyPlan
    customer_id: str
    run_no: int
    profile: ProfileSnapshot
    trigger: Event | None
    timezone_attribute: str | None

    def why(self) -> str:
        return f"on {self.trigger.name}" if self.trigger else "started by name"

    def search_attributes(self, version: str) -> list[SearchAttributePair[str]]:
        """The customer, journey, version and stage a run shows from its start."""
        attributes = [
            SearchAttributePair(SA_CUSTOMER, self.customer_id),
            SearchAttributePair(SA_JOURNEY, self.plan.name),
            SearchAttributePair(SA_VERSION, version),
        ]
        if self.plan.stage:
            attributes.append(SearchAttributePair(SA_STAGE, self.plan.stage.value))
        return attributes


async def start_run(
    client: Client,
    task_queue: str,
    run: RunStart,
    workflow: str,
    arg: object,
    *,
    search_attributes: list[SearchAttributePair[str]] | None = None,
    summary: str | None = None,
    details: str | None = None,
    rpc_timeout: timedelta | None = None,
) -> WorkflowHandle[Any, Any]:
    """Start ``workflow`` as ``run``: under the run's workflow id, never reused.

    Raises ``temporalio.exceptions.WorkflowAlreadyStartedError`` when this run was started
    before.
    """
    return await client.start_workflow(
        workflow,
        arg,
        id=journey_workflow_id(run.plan.name, run.customer_id, run.run_no),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(search_attributes) if search_attributes else None,
        static_summary=summary,
        static_details=details,
        rpc_timeout=rpc_timeout,
    )


async def start_journey(
    client: Client, task_queue: str, run: RunStart, *, rpc_timeout: timedelta | None = None
) -> WorkflowHandle[Any, Any]:
    """Start ``run`` on the interpreter, pinning the run to its plan version.

    Raises ``temporalio.exceptions.WorkflowAlreadyStartedError`` when this run was started
    before (its workflow id is never reused).
    """
    plan = run.plan
    attributes = run.search_attributes(plan.version)
    if plan.start and _waits_long(plan, plan.start):
        # The run starts by waiting long enough to be looked for: shown from the start, free.
        attributes.append(SearchAttributePair(SA_STEP, plan.start))
    return await start_run(
        client,
        task_queue,
        run,
        JOURNEY_WORKFLOW,
        JourneyInput(
            plan=plan,
            customer_id=run.customer_id,
            run_no=run.run_no,
            profile=run.profile,
            trigger=run.trigger,
            timezone_attribute=run.timezone_attribute,
        ),
        search_attributes=attributes,
        summary=f"{plan.name} (v{plan.version}) run {run.run_no} for customer "
        f"{run.customer_id}, {run.why()}",
        details=plan.description or None,
        rpc_timeout=rpc_timeout,
    )
