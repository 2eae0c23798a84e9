"""Talking to Temporal: connecting, search attributes, starting entities and journeys.

Shared by the client (product code, CLI) and the activities (routing, delivery), so that a
journey is started the same way whichever door the trigger came through.
"""

from __future__ import annotations

from typing import Any

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
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from kairos.config import Settings
from kairos.plan import JourneyPlan
from kairos.runtime import (
    CUSTOMER_WORKFLOW,
    JOURNEY_WORKFLOW,
    SA_CUSTOMER,
    SA_JOURNEY,
    SA_STAGE,
    SA_STEP,
    SA_VERSION,
    SEARCH_ATTRIBUTES,
    CustomerInput,
    Event,
    JourneyInput,
    customer_workflow_id,
    journey_workflow_id,
)


def quote(value: str) -> str:
    """``value`` escaped for a single-quoted string in a visibility query."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


async def connect(settings: Settings) -> Client:
    """A client for the configured Temporal (dev server, cluster or Cloud)."""
    config = dict(settings.temporal)
    target = config.pop("target_host", "localhost:7233")
    return await Client.connect(target, data_converter=pydantic_data_converter, **config)


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


async def signal_customer(
    client: Client, task_queue: str, customer_id: str, signal: str, arg: Any
) -> WorkflowHandle[Any, Any]:
    """Signal-with-start the customer entity: one call, creating it when it does not exist."""
    return await client.start_workflow(
        CUSTOMER_WORKFLOW,
        CustomerInput(customer_id=customer_id),
        id=customer_workflow_id(customer_id),
        task_queue=task_queue,
        start_signal=signal,
        start_signal_args=[arg],
        search_attributes=TypedSearchAttributes([SearchAttributePair(SA_CUSTOMER, customer_id)]),
        static_summary=f"customer {customer_id}",
    )


async def start_journey(
    client: Client,
    task_queue: str,
    plan: JourneyPlan,
    customer_id: str,
    *,
    profile: dict[str, Any],
    trigger: Event | None,
    timezone_attribute: str | None,
    conflict: WorkflowIDConflictPolicy = WorkflowIDConflictPolicy.FAIL,
) -> WorkflowHandle[Any, Any]:
    """Start ``plan`` for a customer, pinning the run to this plan version.

    Raises ``temporalio.exceptions.WorkflowAlreadyStartedError`` when a run is already going
    and ``conflict`` is FAIL.
    """
    attributes = [
        SearchAttributePair(SA_CUSTOMER, customer_id),
        SearchAttributePair(SA_JOURNEY, plan.name),
        SearchAttributePair(SA_VERSION, plan.version),
    ]
    if plan.start:
        attributes.append(SearchAttributePair(SA_STEP, plan.start))
    if plan.stage:
        attributes.append(SearchAttributePair(SA_STAGE, plan.stage.value))
    why = f"on {trigger.name}" if trigger else "started by API"
    return await client.start_workflow(
        JOURNEY_WORKFLOW,
        JourneyInput(
            plan=plan,
            customer_id=customer_id,
            profile=profile,
            trigger=trigger,
            timezone_attribute=timezone_attribute,
        ),
        id=journey_workflow_id(plan.name, customer_id),
        task_queue=task_queue,
        id_conflict_policy=conflict,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=TypedSearchAttributes(attributes),
        static_summary=f"{plan.name} (v{plan.version}) for customer {customer_id}, {why}",
        static_details=plan.description or None,
    )
