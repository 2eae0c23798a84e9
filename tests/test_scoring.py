"""Lead scoring on real PostgreSQL: customer.yaml's rules turn events into points in the event's
own transaction, for every customer whatever journey they are in; points expire; the score is
a profile attribute segments read.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from kairos.catalogue import ScoreRule, ScoreSpec
from kairos.compiler import Project
from kairos.config import Settings
from kairos.runtime import Event
from kairos.store import Store
from tests.conftest import project_store
from tests.test_segment_triggers import with_trigger

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def scored(project: Project, expire_after: str | None = None) -> Project:
    """The repository's project with a lead score of its own rules."""
    rules = [
        ScoreRule(event="content_viewed", points=10),
        ScoreRule(event="pricing_viewed", points=15),
        ScoreRule(event="webinar_attended", points=25, when="event.minutes_attended >= 20"),
        ScoreRule(event="email_unsubscribed", points=-30),
    ]
    scoring = {"lead_score": ScoreSpec(rules=rules, expire_after=expire_after)}
    catalogue = project.catalogue.model_copy(update={"scoring": scoring})
    return dataclasses.replace(project, catalogue=catalogue)


def viewed(n: int, at: datetime | None = None, name: str = "content_viewed") -> Event:
    properties: dict[str, Any] = {"content_id": f"guide-{n}"} if name == "content_viewed" else {}
    return Event(id=f"{name}-{n}", name=name, properties=properties, timestamp=at)


async def score_of(store: Store, customer_id: str) -> Any:
    record = await store.customer(customer_id)
    assert record is not None
    return record.profile.get("lead_score")


async def test_events_earn_their_points_once_and_conditions_decide(
    settings: Settings, project: Project
) -> None:
    async with project_store(settings, scored(project)) as store:
        await store.accept("ann", viewed(1))
        await store.accept("ann", viewed(1))  # the same event again: no more points
        await store.accept("ann", viewed(2, name="pricing_viewed"))
        short = {"webinar_id": "w1", "minutes_attended": 5}
        await store.accept("ann", Event(id="w1", name="webinar_attended", properties=short))
        assert await score_of(store, "ann") == 25
        stayed = {"webinar_id": "w2", "minutes_attended": 45}
        await store.accept("ann", Event(id="w2", name="webinar_attended", properties=stayed))
        await store.accept("ann", Event(id="u1", name="email_unsubscribed", properties={}))
        assert await score_of(store, "ann") == 20
        kept = await store.database.fetch_all(
            "SELECT event_id, points FROM score_points WHERE customer_id = 'ann' ORDER BY at, rule"
        )
        assert sorted((r["event_id"], int(r["points"])) for r in kept) == [
            ("content_viewed-1", 10), ("pricing_viewed-2", 15), ("u1", -30), ("w2", 25),
        ]  # fmt: skip


async def test_points_expire_and_leave_the_base_score_alone(
    settings: Settings, project: Project
) -> None:
    async with project_store(settings, scored(project, expire_after="90d")) as store:
        store.ingest.clock = lambda: NOW
        await store.identify("ben", {"lead_score": 5}, call_id="import")
        await store.accept("ben", viewed(1, at=NOW - timedelta(days=100)))  # expired already
        await store.accept("ben", viewed(2, at=NOW - timedelta(days=30)))
        await store.accept("ben", viewed(3, at=NOW))
        assert await score_of(store, "ben") == 25
        assert await store.expire_points(NOW + timedelta(days=59)) == 0
        assert await store.expire_points(NOW + timedelta(days=61)) == 1
        assert await score_of(store, "ben") == 15
        assert await store.expire_points(NOW + timedelta(days=61)) == 0  # taken off once
        assert await store.expire_points(NOW + timedelta(days=91)) == 1
        assert await score_of(store, "ben") == 5


async def test_expiry_loses_no_points_earned_at_the_same_moment(
    settings: Settings, project: Project
) -> None:
    async with project_store(settings, scored(project, expire_after="1d")) as store:
        people = [f"p{n}" for n in range(15)]
        store.ingest.clock = lambda: NOW
        for who in people:
            await store.accept(who, viewed(1))
        later = NOW + timedelta(days=2)
        store.ingest.clock = lambda: later
        await asyncio.gather(
            store.expire_points(later),
            *(store.accept(who, viewed(2, name="pricing_viewed")) for who in people),
        )
        await store.expire_points(later)
        assert [await score_of(store, who) for who in people] == [15] * len(people)


async def test_a_score_crossing_a_segment_line_starts_its_journey_and_expiry_takes_it_out(
    settings: Settings, project: Project
) -> None:
    triggered = with_trigger(scored(project, expire_after="30d"), "customer.lead_score >= 50")
    async with project_store(settings, triggered) as store:
        store.ingest.clock = lambda: NOW
        for n in range(4):
            accepted = await store.accept("cid", viewed(n))
        assert accepted.started == {}
        accepted = await store.accept("cid", viewed(9, name="pricing_viewed"))
        assert accepted.started == {"handover": 1}
        later = NOW + timedelta(days=31)
        await store.expire_points(later)
        swept = await store.sweep_segments(later)
        assert (swept.left, await score_of(store, "cid")) == (1, 0)
