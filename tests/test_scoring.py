"""Lead scoring on real PostgreSQL: customer.yaml's rules turn events into points in the event's
own transaction, for every customer whatever journey they are in; points expire; the score is
a profile attribute segments read.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.testing import WorkflowEnvironment

from kairos.language.catalogue import ScoreRule, ScoreSpec
from kairos.language.plan import BranchCase, BranchStep, ExitStep, JourneyPlan, WaitStep
from kairos.language.project import Project
from kairos.runtime.config import Settings
from kairos.runtime.contract import Event, JourneyResult, journey_workflow_id
from kairos.store.facade import Store
from tests.conftest import make_kairos, project_store, running_worker
from tests.helpers import finish, started
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
        assert (await store.expire_points(NOW + timedelta(days=59))).changed == 0
        assert (await store.expire_points(NOW + timedelta(days=61))).changed == 1
        assert await score_of(store, "ben") == 15
        assert (await store.expire_points(NOW + timedelta(days=61))).changed == 0  # taken off once
        assert (await store.expire_points(NOW + timedelta(days=91))).changed == 1
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


def cooling(project: Project) -> Project:
    """``scored`` with 30-day points, the segment ``warm`` (score 50 or more) starting
    ``handover``, and ``cooling``: waits an hour, then asks whether the lead is still warm."""
    triggered = with_trigger(scored(project, expire_after="30d"), "customer.lead_score >= 50")
    plan = JourneyPlan(
        name="cooling",
        start="pause",
        steps={
            "pause": WaitStep(id="pause", duration_seconds=3600, next="still_warm"),
            "still_warm": BranchStep(
                id="still_warm",
                cases=(BranchCase(when="customer.lead_score >= 50", next="warm"),),
                otherwise="cooled",
            ),
            "warm": ExitStep(id="warm", outcome="warm"),
            "cooled": ExitStep(id="cooled", outcome="cooled"),
        },
    ).with_version()
    return dataclasses.replace(triggered, plans={**triggered.plans, plan.name: plan})


async def signals(store: Store, customer_id: str) -> list[tuple[str, Any, Any]]:
    rows = await store.database.fetch_all(
        "SELECT journey, event_id, payload FROM dispatches WHERE customer_id = %s"
        " AND kind = 'signal' ORDER BY id",
        (customer_id,),
    )
    return [(r["journey"], r["event_id"], r["payload"]) for r in rows]


async def test_expiry_tells_each_run_that_reads_the_score_once_and_moves_segments(
    settings: Settings, project: Project
) -> None:
    async with project_store(settings, cooling(project)) as store:
        store.ingest.clock = lambda: NOW
        await store.start("cooling", "eve", call_id="go")
        for n in range(4):
            await store.accept("eve", viewed(n))
        await store.accept("eve", viewed(9, name="pricing_viewed"))  # 55: warm, handover runs
        await store.start("welcome", "eve", call_id="w")
        open_runs = await store.database.fetch_all(
            "SELECT journey FROM runs WHERE customer_id = 'eve' AND ended_at IS NULL ORDER BY 1"
        )
        assert [r["journey"] for r in open_runs] == ["cooling", "handover", "welcome"]
        before = await signals(store, "eve")

        later = NOW + timedelta(days=31)
        # Two workers sweeping the same minute: the points go once, and so does the signal.
        first, second = await asyncio.gather(store.expire_points(later), store.expire_points(later))
        assert sorted([first.changed, second.changed]) == [0, 1]
        assert [*first.signalled, *second.signalled] == ["eve"]
        assert await score_of(store, "eve") == 0
        # Only the run whose conditions read the score hears of it (handover's wait and
        # welcome read no score), with no event: a newer profile, as a `set` step would send.
        told = (await signals(store, "eve"))[len(before) :]
        assert told == [("cooling", None, {"event": None, "restart": False})]
        assert (await store.expire_points(later)).signalled == []  # nothing more to tell

        # The same minute's segment sweep takes her out of `warm`; points earned again bring
        # her back in, and `handover` (entry: after_exit, its run still open) is not doubled.
        swept = await store.sweep_segments(later)
        assert (swept.left, swept.entered) == (1, 0)
        store.ingest.clock = lambda: later
        for n in range(21, 26):
            accepted = await store.accept("eve", viewed(n, at=later))
        assert accepted.segments.entered == ["warm"]
        assert "handover" not in accepted.started  # its run is still open (entry: after_exit)
        member = await store.database.fetch_one(
            "SELECT entries, left_at FROM segment_members WHERE segment = 'warm'"
            " AND customer_id = 'eve'"
        )
        assert member == {"entries": 2, "left_at": None}


async def test_a_run_waiting_on_the_score_sees_it_drop_when_points_expire(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    async with project_store(settings, cooling(project)) as store:
        kairos = make_kairos(ts_env.client, settings, store)  # events stamped now
        async with running_worker(ts_env.client, settings, store):
            for n in range(5):
                await kairos.emit("fay", "content_viewed", {"content_id": f"guide-{n}"})
            await kairos.start("cooling", "fay")
            handle = await started(
                ts_env.client, journey_workflow_id("cooling", "fay", 1), JourneyResult
            )
            expired = await store.expire_points(datetime.now(UTC) + timedelta(days=31))
            assert expired.signalled == ["fay"]
            assert await kairos.dispatcher.run(expired.signalled) == 1
            result: JourneyResult = await finish(ts_env, handle)
        assert result.outcome == "cooled"
        assert await score_of(store, "fay") == 0
