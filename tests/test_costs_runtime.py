"""What each journey path costs in billable Temporal actions, counted from real histories.

Customers live in PostgreSQL, so a journey run's own history is the whole Temporal cost of its
messages: no customer entity, no policy updates, no routing markers, no signals between
workflows. The budgets below are the measured counts, kind by kind, each with where every action
goes. Counts are deterministic on the time-skipping server, so a change that adds or removes an
action fails here and must say where it went.

Where the actions of a run come from:

* ``workflow_started``: the store's dispatcher starts the run (1).
* ``activity``: one ``deliver`` per send (the store's send transaction decides policy inside
  it), one ``run_action`` per action step, one ``change_profile`` per ``set`` step, and one
  ``end_run`` per run that does not end right after a send or ``set`` (the run tells the store
  how it ended, which frees ``after_exit``; a last send or ``set`` step records it itself).
* ``timer``: one per wait or wait_for entered whose moment has not passed.
* ``search_attributes``: ``KairosStep`` when a wait of an hour or more shows a step other than
  the one shown (the start shows a first step that is such a wait), and one at the end that
  clears it. The outcome is the store's (``end_run``), not a search attribute.
* ``signal``: one per event the store routes into the running run (a goal, an event a
  ``wait_for`` listens to, a newer copy of a profile attribute the run reads).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.reporting.costs import count_history
from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from kairos.store.facade import Store
from tests.helpers import run_journey, timezone_at


@dataclass
class Path:
    journey: str
    customer: str
    events: list[tuple[str, dict[str, Any]]]
    later: list[tuple[timedelta, str, dict[str, Any]]]
    profile: dict[str, Any]
    budget: dict[str, int] = field(default_factory=dict)
    delivered: int = 0


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
        Path(
            "cart_abandonment",
            "cart-sms",
            [("cart_updated", cart)],
            [],
            phone,
            budget={
                "workflow_started": 1,
                # deliver: reminder, last-chance SMS (which also records the run's end)
                "activity": 2,
                # wait 1h; wait_for order_placed 23h
                "timer": 2,
                # the wait_for's step (the 1h wait is the first step, shown at the start);
                # the end clears it
                "search_attributes": 2,
            },
            delivered=2,
        ),
        Path(
            "cart_abandonment",
            "cart-won",
            [("cart_updated", cart)],
            [(timedelta(hours=2), "order_placed", order)],
            base,
            budget={
                "workflow_started": 1,
                # deliver: reminder; end_run
                "activity": 2,
                # wait 1h; wait_for order_placed (the order ends it early)
                "timer": 2,
                # the wait_for's step; the end clears it
                "search_attributes": 2,
                # order_placed, the goal
                "signal": 1,
            },
            delivered=1,
        ),
        Path(
            "welcome",
            "welcome",
            [("signed_up", {**base, "signed_up_at": now.isoformat()})],
            [],
            base,
            budget={
                "workflow_started": 1,
                # change_profile: stage consideration; deliver: welcome, tips, offer;
                # run_action: coupon; end_run
                "activity": 6,
                # wait_for setup 2d; until 10:00; until signed_up_at + 7d; until 10:00; 14d
                "timer": 5,
                # each of those five waits shows its step; the end clears it
                "search_attributes": 6,
            },
            delivered=3,
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
            budget={
                "workflow_started": 1,
                # change_profile: stage consideration; deliver: lesson 1; the end at lesson 2
                # (handed to sales: the store scores, sales_handover's own run notifies sales)
                "activity": 3,
                # the 4d after lesson 1
                "timer": 1,
                # the wait shown; the end clears it
                "search_attributes": 2,
                # the score the run reads changed twice: webinar +25, pricing +15
                "signal": 2,
            },
            delivered=1,
        ),
        Path(
            "win_back",
            "win-back",
            [("order_placed", order)],
            [],
            base,
            budget={
                "workflow_started": 1,
                # run_action: coupon; deliver: we miss you, reminder;
                # change_profile: stage lapsed (which also records the run's end)
                "activity": 4,
                # until last_order_at + 60d; until 10:00; 7d; 7d
                "timer": 4,
                # each of those four waits shows its step; the end clears it
                "search_attributes": 5,
            },
            delivered=2,
        ),
        Path(
            "referral_reward",
            "referral",
            [("referral_converted", {})],
            [],
            phone,
            budget={
                "workflow_started": 1,
                # change_profile: stage advocacy; run_action: reward;
                # deliver: thanks email, thanks SMS, share again (which also records the
                # run's end)
                "activity": 5,
                # 3d; until 10:00
                "timer": 2,
                # each wait shows its step; the end clears it
                "search_attributes": 3,
            },
            delivered=3,
        ),
    ]


@pytest.mark.parametrize("index", range(6))
async def test_each_journey_path_costs_exactly_its_budget(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store, index: int
) -> None:
    now = await ts_env.get_current_time()
    path = paths(now)[index]
    result: JourneyResult = await run_journey(
        ts_env, settings, store, path.journey, path.customer,
        profile=path.profile, events=path.events, later=path.later,
    )  # fmt: skip
    count = await count_history(ts_env.client, journey_workflow_id(path.journey, path.customer, 1))

    delivered = sum(1 for m in result.messages if m.status == "sent")
    print(
        f"{path.journey}/{path.customer}: {dict(count.actions)}, "
        f"{count.total_actions / max(delivered, 1):.2f} actions per delivered message"
    )
    assert delivered == path.delivered, result.messages
    assert count.runs == 1
    assert count.actions == Counter(path.budget)
