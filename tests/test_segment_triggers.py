"""Segment-entry triggers on real PostgreSQL: a journey starts when a customer enters its
segment, once per entry, with the journey's entry rule; leaving is recorded; what changes with
time alone is found by the sweep; a new trigger starts nobody already in the segment.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.testing import WorkflowEnvironment

from kairos.language.plan import Entry, JourneyPlan, SegmentTrigger, WaitStep
from kairos.language.project import Project
from kairos.language.segments import Segment
from kairos.runtime.config import Settings
from kairos.runtime.contract import RunEnd, journey_workflow_id
from kairos.store.facade import Store
from tests.conftest import make_kairos, project_store

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def with_trigger(
    project: Project, when: str, entry: Entry = Entry.after_exit, name: str = "warm"
) -> Project:
    """The repository's project plus segment ``name`` and a journey ``handover`` on it."""
    segment = Segment(name, "", when, f"segments/{name}.yaml", project.catalogue)
    plan = JourneyPlan(
        name="handover",
        trigger=SegmentTrigger(segment=name),
        entry=entry,
        start="pause",
        steps={"pause": WaitStep(id="pause", duration_seconds=3600)},
    ).with_version()
    return dataclasses.replace(
        project,
        plans={**project.plans, plan.name: plan},
        segments={**project.segments, name: segment},
    )


async def runs(store: Store, customer_id: str) -> list[dict[str, Any]]:
    return await store.database.fetch_all(
        "SELECT run_no, ended_at FROM runs WHERE customer_id = %s AND journey = 'handover'"
        " ORDER BY run_no",
        (customer_id,),
    )


async def membership(store: Store, customer_id: str) -> dict[str, Any] | None:
    return await store.database.fetch_one(
        "SELECT entries, left_at FROM segment_members WHERE segment = 'warm' AND customer_id = %s",
        (customer_id,),
    )


async def score(store: Store, customer_id: str, value: float, call: str) -> dict[str, int]:
    accepted = await store.identify(customer_id, {"lead_score": value}, call_id=call)
    return {k: v for k, v in accepted.started.items() if k == "handover"}


async def test_entering_the_segment_starts_the_journey_once(
    settings: Settings, project: Project
) -> None:
    async with project_store(settings, with_trigger(project, "customer.lead_score >= 50")) as store:
        tracked = await store.database.fetch_all("SELECT segment FROM segment_tracking")
        assert sorted(r["segment"] for r in tracked) == ["sales_ready", "warm"]

        assert await score(store, "ann", 30, "s1") == {}
        assert await score(store, "ann", 60, "s2") == {"handover": 1}
        # Still in it: a higher score, the same call again, or a sweep start nothing more.
        assert await score(store, "ann", 70, "s3") == {}
        assert await score(store, "ann", 60, "s2") == {}
        assert (await store.sweep_segments()).entered == 0
        assert [r["run_no"] for r in await runs(store, "ann")] == [1]
        dispatched = await store.database.fetch_all(
            "SELECT kind, journey, event_id FROM dispatches WHERE customer_id = 'ann'"
        )
        assert dispatched == [{"kind": "start", "journey": "handover", "event_id": "s2"}]


async def test_leaving_is_recorded_and_entering_again_starts_again_after_the_run_ended(
    settings: Settings, project: Project
) -> None:
    async with project_store(settings, with_trigger(project, "customer.lead_score >= 50")) as store:
        assert await score(store, "ben", 55, "s1") == {"handover": 1}
        accepted = await store.identify("ben", {"lead_score": 10}, call_id="s2")
        assert accepted.segments.left == ["warm"]
        left = await membership(store, "ben")
        assert left is not None and left["left_at"] is not None
        # Back while run 1 still runs: after_exit refuses, but the entry is recorded.
        assert await score(store, "ben", 80, "s3") == {}
        assert (await membership(store, "ben")) == {"entries": 2, "left_at": None}
        await store.end_run(RunEnd(customer_id="ben", journey="handover", run_no=1, outcome="done"))
        await store.identify("ben", {"lead_score": 0}, call_id="s4")
        assert await score(store, "ben", 90, "s5") == {"handover": 2}


async def test_a_journey_entered_once_is_not_entered_again_on_reentry(
    settings: Settings, project: Project
) -> None:
    plan = with_trigger(project, "customer.lead_score >= 50", Entry.once)
    async with project_store(settings, plan) as store:
        assert await score(store, "cid", 55, "s1") == {"handover": 1}
        await store.end_run(RunEnd(customer_id="cid", journey="handover", run_no=1, outcome="done"))
        await score(store, "cid", 1, "s2")
        assert await score(store, "cid", 99, "s3") == {}
        assert len(await runs(store, "cid")) == 1


async def test_consent_changes_move_customers_in_and_out(
    settings: Settings, project: Project
) -> None:
    trigger = with_trigger(project, "customer.consent.sms and customer.lead_score > 20")
    async with project_store(settings, trigger) as store:
        await score(store, "dee", 30, "s1")
        granted = await store.change_consent("dee", {"sms": True}, source="test", change_id="c1")
        assert granted.started.get("handover") == 1
        withdrawn = await store.change_consent("dee", {"sms": False}, source="test", change_id="c2")
        assert withdrawn.segments.left == ["warm"]


async def test_a_new_trigger_starts_nobody_already_in_the_segment(
    settings: Settings, project: Project
) -> None:
    async with project_store(settings, project) as before:
        # Customers scored before the trigger existed (the store does not track the segment).
        await before.identify("old", {"lead_score": 75}, call_id="s0")
        await before.identify("new", {"lead_score": 5}, call_id="s0")
    async with project_store(settings, with_trigger(project, "customer.lead_score >= 50")) as store:
        # Opening the store with the trigger recorded who was in the segment: not entrants.
        assert await membership(store, "old") == {"entries": 1, "left_at": None}
        assert await score(store, "old", 80, "s1") == {}
        swept = await store.sweep_segments(NOW)
        assert [
            (s.segment, s.baseline, s.stale) for s in swept.segments if s.segment == "warm"
        ] == [("warm", False, ())]
        assert await score(store, "new", 50, "s2") == {"handover": 1}
        assert await runs(store, "old") == []
    # The condition edited: opening the store records the members anew, again starting nobody.
    async with project_store(settings, with_trigger(project, "customer.lead_score >= 5")) as store:
        assert await membership(store, "new") == {"entries": 1, "left_at": None}
        assert await score(store, "old", 90, "s3") == {}
        assert [r["run_no"] for r in await runs(store, "new")] == [1]


async def test_the_sweep_enters_customers_whom_time_alone_moved(
    settings: Settings, project: Project
) -> None:
    quiet = "days_since(customer.last_order_at) > 60"
    async with project_store(settings, with_trigger(project, quiet)) as store:
        store.ingest.clock = lambda: NOW
        ordered = (NOW - timedelta(days=50)).isoformat()
        for who in ("eve", "fay"):
            await store.identify(who, {"last_order_at": ordered}, call_id="o1")
        assert (await store.sweep_segments(NOW)).entered == 0
        later = NOW + timedelta(days=11)
        swept = await store.sweep_segments(later)
        assert (swept.entered, sorted(swept.customers)) == (2, ["eve", "fay"])
        assert (await store.sweep_segments(later)).entered == 0
        # An order brings eve back out of it; the next sweep records that she left.
        store.ingest.clock = lambda: later
        accepted = await store.identify("eve", {"last_order_at": later.isoformat()}, call_id="o2")
        assert accepted.segments.left == ["warm"]
        assert [len(await runs(store, who)) for who in ("eve", "fay")] == [1, 1]


async def test_events_and_concurrent_sweeps_start_each_entrant_exactly_once(
    settings: Settings, project: Project
) -> None:
    async with project_store(settings, with_trigger(project, "customer.lead_score >= 50")) as store:
        people = [f"p{n}" for n in range(20)]
        for who in people:
            await store.identify(who, {"lead_score": 1}, call_id="s0")
        # Scores raised behind the store's back (an import): only the sweep can see them ...
        await store.database.fetch_all(
            "UPDATE customers SET profile = jsonb_set(profile, '{lead_score}', '70') RETURNING id"
        )

        # ... while each customer's own event races two sweeps.
        async def event(who: str) -> None:
            await store.identify(who, {"lead_score": 71}, call_id="s1")

        await asyncio.gather(
            store.sweep_segments(), store.sweep_segments(), *(event(p) for p in people)
        )
        counts = await store.database.fetch_all(
            "SELECT customer_id, count(*) AS n FROM runs WHERE journey = 'handover'"
            " GROUP BY customer_id"
        )
        assert sorted((r["customer_id"], r["n"]) for r in counts) == [
            (p, 1) for p in sorted(people)
        ]
        starts = await store.database.fetch_one(
            "SELECT count(*) AS n FROM dispatches WHERE journey = 'handover'"
        )
        assert starts == {"n": 20}


async def test_an_entry_starts_the_run_in_temporal(
    dev_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    async with project_store(settings, with_trigger(project, "customer.lead_score >= 50")) as store:
        kairos = make_kairos(dev_env.client, settings, store)
        await kairos.identify("gus", {"lead_score": 64})
        handle = dev_env.client.get_workflow_handle(journey_workflow_id("handover", "gus", 1))
        assert (await handle.describe()).id == journey_workflow_id("handover", "gus", 1)
