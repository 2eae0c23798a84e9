"""What each journey path costs in billable Temporal actions, counted from real histories.

The budget, per run: the start 1; each send (delivered or blocked) 1 delivery activity plus 1
policy decision (an update on the customer entity); each wait or wait_for 1 timer; each action
step 1; each set step 1 (its signal to the entity); search-attribute updates at most one per
wait entered and one at the end; each event routed into the running journey 1 signal; and
routing each event costs the entity at most one local activity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.client import Kairos
from kairos.compiler import Project
from kairos.config import Settings
from kairos.costs import count_history
from kairos.runtime import JourneyResult, customer_workflow_id, journey_workflow_id
from tests.conftest import running_worker
from tests.helpers import finish, schedule, started, timezone_at


@dataclass
class Path:
    journey: str
    customer: str
    events: list[tuple[str, dict[str, Any]]]
    later: list[tuple[timedelta, str, dict[str, Any]]]
    profile: dict[str, Any]


def paths(now: datetime) -> list[Path]:
    base = {
        "email": "c@example.com",
        "first_name": "Cy",
        "locale": "fi",
        "timezone": timezone_at(now, 12),
    }
    phone = {**base, "phone": "+358401234567"}
    order = {"order_id": "o", "total": 9.0, "currency": "EUR", "placed_at": now.isoformat()}
    cart = {"cart_total": 30.0, "currency": "EUR"}
    return [
        Path("cart_abandonment", "cart-sms", [("cart_updated", cart)], [], phone),
        Path(
            "cart_abandonment",
            "cart-won",
            [("cart_updated", cart)],
            [(timedelta(hours=2), "order_placed", order)],
            base,
        ),
        Path(
            "welcome",
            "welcome",
            [("signed_up", {**base, "signed_up_at": now.isoformat()})],
            [],
            base,
        ),
        Path(
            "nurture",
            "nurture",
            [("lead_captured", {**base, "interest": "filter"})],
            [
                (timedelta(hours=3), "webinar_attended", {"webinar_id": "w"}),
                (timedelta(hours=6), "pricing_viewed", {}),
            ],
            base,
        ),
        Path("win_back", "win-back", [("order_placed", order)], [], base),
        Path("referral_reward", "referral", [("referral_converted", {})], [], phone),
    ]


def budget(result: JourneyResult, routed: int, runs: int) -> int:
    kinds = [r.kind for r in result.records]
    deferrals = sum(1 for r in result.records if r.outcome.startswith("send deferred"))
    sends = len(result.messages) + deferrals
    waits = kinds.count("wait") + kinds.count("wait_for") + deferrals
    return runs + sends + waits + kinds.count("action") + kinds.count("set") + waits + 1 + routed


@pytest.mark.parametrize("index", range(6))
async def test_each_journey_path_stays_within_its_action_budget(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project, index: int
) -> None:
    now = await ts_env.get_current_time()
    path = paths(now)[index]
    kairos = Kairos(ts_env.client, settings, project)
    async with running_worker(ts_env.client, settings, project):
        await kairos.identify(path.customer, path.profile)
        for name, properties in path.events:
            await kairos.emit(path.customer, name, properties)
        handle = await started(
            ts_env.client, journey_workflow_id(path.journey, path.customer), JourneyResult
        )
        await schedule(ts_env.client, settings.task_queue, path.customer, path.later)
        result: JourneyResult = await finish(ts_env, handle)
        journey = await count_history(
            ts_env.client, journey_workflow_id(path.journey, path.customer)
        )
        entity = await count_history(ts_env.client, customer_workflow_id(path.customer))

    routed = journey.actions["signal"]
    limit = budget(result, routed, journey.runs)
    delivered = sum(1 for m in result.messages if m.status == "sent")
    sends = len(result.messages)
    per_message = (journey.total_actions + entity.actions["update"]) / max(delivered, 1)
    print(
        f"{path.journey}/{path.customer}: {journey.total_actions} journey actions "
        f"(budget {limit}), {entity.actions['update']} policy decisions, "
        f"{per_message:.1f} actions per delivered message"
    )
    assert journey.total_actions <= limit, journey.actions
    # One policy decision per send attempt, never more.
    assert entity.actions["update"] <= sends + sum(
        1 for r in result.records if r.outcome.startswith("send deferred")
    )
    # Routing: at most one local activity per event the entity received.
    events_in = len(path.events) + len(path.later) + 1  # + identify
    assert entity.actions["local_activity"] <= events_in
    assert journey.actions["search_attributes"] <= (
        sum(1 for r in result.records if r.kind in ("wait", "wait_for")) + 1
    )
