"""Scheduled broadcasts on real Temporal Schedules and PostgreSQL: "Friday at 10:00 in each
customer's own time" is one schedule per timezone, each entering its members once."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, ScheduleRange
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from typer.testing import CliRunner

from activities.broadcasts import Broadcasts
from kairos.cli import app
from kairos.language.project import Project
from kairos.reporting.charts import broadcasts_section
from kairos.runtime.config import Settings
from kairos.runtime.schedules import (
    BroadcastGroup,
    GroupResult,
    broadcast_of,
    fire_time,
    first_day,
    schedule_id,
)
from kairos.store.broadcasts import BroadcastStore, MemberStatus, Reach, event_id
from kairos.store.facade import Store
from kairos.tools.broadcast import (
    BroadcastError,
    cancel_scheduled,
    create_schedules,
    plan_schedule,
    scheduled_broadcasts,
)
from tests.commands import Ran, command_env, documented
from tests.conftest import make_kairos, running_worker
from tests.helpers import eventually
from tests.test_broadcast import SEGMENT, add_regulars, scalar

ZONES = {
    "m-000001": "Europe/Helsinki",
    "m-000002": "Europe/Helsinki",
    "m-000003": "America/New_York",
    "m-000004": "Asia/Tokyo",
    "m-000005": "",  # no timezone: the default zone's group (UTC)
    "m-000006": "Mars/Olympus_Mons",  # not a timezone: the default zone's group too
}


def eu_dst_day(today: date) -> date:
    """The next last Sunday of March: Europe's clocks go forward at 01:00 UTC that day."""
    year = today.year + 1
    last = date(year, 3, 31)
    return last - timedelta(days=(last.weekday() - 6) % 7)


async def with_zones(store: Store, settings: Settings) -> None:
    """The members of ``ZONES``, and two regulars not yet in the segment (m-000007 in
    Helsinki, m-000008 in Sydney: see ``join``)."""
    await add_regulars(store, settings, len(ZONES) + 2)
    async with store.database.transaction() as conn:
        for customer, zone in {**ZONES, "m-000008": "Australia/Sydney"}.items():
            await conn.execute(
                "UPDATE customers SET profile = profile - 'timezone' || %s WHERE id = %s",
                (json.dumps({"timezone": zone} if zone else {}), customer),
            )
        await conn.execute(
            "UPDATE customers SET stage = 'consideration' WHERE id IN ('m-000007', 'm-000008')"
        )


async def join(store: Store) -> None:
    async with store.database.transaction() as conn:
        await conn.execute(
            "UPDATE customers SET stage = 'retention' WHERE id IN ('m-000007', 'm-000008')"
        )


def test_ten_o_clock_stays_ten_o_clock_across_a_dst_change() -> None:
    day = eu_dst_day(date(2026, 11, 30))
    assert day == date(2027, 3, 28)
    assert fire_time(day - timedelta(days=1), time(10), "Europe/Helsinki").hour == 8  # EET
    assert fire_time(day, time(10), "Europe/Helsinki").hour == 7  # EEST from 03:00 that day
    assert fire_time(day, time(10), "America/New_York").hour == 14  # EDT since 14 March
    now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)  # a Friday: 11:00 in Helsinki already
    assert first_day(now.date(), time(10), ["UTC"], now, weekday=4) == now.date()
    assert first_day(now.date(), time(10), ["Europe/Helsinki"], now, weekday=4) == date(
        2026, 12, 11
    )
    assert broadcast_of(schedule_id("sale-1", "Europe/Helsinki")) == "sale-1"
    assert broadcast_of("nightly-report") is None


async def group_runs(client: Client, schedule: str, count: int) -> list[GroupResult]:
    """Wait until ``schedule`` has started ``count`` broadcast runs; their results."""
    handle = client.get_schedule_handle(schedule)

    async def started() -> list[str] | None:
        actions = (await handle.describe()).info.recent_actions
        ids = [
            a.action.workflow_id
            for a in actions
            if isinstance(a.action, ScheduleActionExecutionStartWorkflow)
        ]
        return ids if len(ids) >= count else None

    ids = await eventually(started, attempts=1000)
    return [
        await client.get_workflow_handle(i, result_type=GroupResult).result() for i in ids[:count]
    ]


async def test_each_timezone_is_entered_at_its_own_ten_once_however_often_it_fires(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, project: Project
) -> None:
    await with_zones(store, settings)
    client = dev_env.client
    day = eu_dst_day(datetime.now(UTC).date())
    planned = await plan_schedule(
        BroadcastStore(store),
        project.plans["flash_sale"],
        project.segments[SEGMENT],
        datetime.now(UTC),
        at=time(10),
        day=day,
        zone=None,
        broadcast_id=None,
    )
    assert planned.broadcast == f"flash_sale-{SEGMENT}-{day:%Y%m%d}-1000-local"
    assert {g.zone: g.members for g in planned.groups} == {
        "America/New_York": 1,
        "Asia/Tokyo": 1,
        "Europe/Helsinki": 2,
        "UTC": 2,
    }
    assert await create_schedules(client, settings.task_queue, planned) == 4

    # Temporal holds each zone's wall clock and agrees on the moment, DST day included.
    for group in planned.groups:
        described = await client.get_schedule_handle(
            schedule_id(planned.broadcast, group.zone)
        ).describe()
        spec = described.schedule.spec
        assert spec.time_zone_name == group.zone
        [calendar] = spec.calendars
        assert [*calendar.hour, *calendar.minute] == [ScheduleRange(10), ScheduleRange(0)]
        assert [*calendar.year, *calendar.day_of_month] == [
            ScheduleRange(day.year),
            ScheduleRange(day.day),
        ]
        assert described.info.next_action_times == [group.fires_at]
        assert described.schedule.state.note is not None
        assert f"kairos broadcast cancel {planned.broadcast}" in described.schedule.state.note
        assert "m-0000" not in json.dumps(await described.memo())  # no customer in Temporal
    fires = {g.zone: g.fires_at.hour for g in planned.groups}
    assert fires == {"Europe/Helsinki": 7, "America/New_York": 14, "Asia/Tokyo": 1, "UTC": 10}

    # The segment is read when a group fires: a customer who joins it after scheduling is in,
    # as is one whose zone had no group of its own (they go with the default zone's).
    await join(store)
    members = len(ZONES) + 2

    async with running_worker(client, settings, store):
        results: dict[str, GroupResult] = {}
        for group in planned.groups:
            handle = client.get_schedule_handle(schedule_id(planned.broadcast, group.zone))
            await handle.trigger()
            [results[group.zone]] = await group_runs(client, handle.id, 1)
        # A second firing of every schedule (a retry, a trigger by hand): nobody again.
        for group in planned.groups:
            handle = client.get_schedule_handle(schedule_id(planned.broadcast, group.zone))
            await handle.trigger()
            again = (await group_runs(client, handle.id, 2))[1]
            assert (again.added, again.enrolled) == (0, 0)

    entered = {zone: r.enrolled for zone, r in results.items()}
    assert entered == {"America/New_York": 1, "Asia/Tokyo": 1, "Europe/Helsinki": 3, "UTC": 3}
    counts = await BroadcastStore(store).counts(planned.broadcast)
    assert counts == {
        MemberStatus.pending: 0,
        MemberStatus.enrolled: members,
        MemberStatus.refused: 0,
    }
    one_each = "SELECT count(DISTINCT customer_id) FROM events WHERE id = %s"
    assert await scalar(store, one_each, event_id(planned.broadcast)) == members
    assert (
        await scalar(
            store, "SELECT count(*) FROM events WHERE id = %s", event_id(planned.broadcast)
        )
        == members
    )
    assert await scalar(store, "SELECT count(*) FROM runs WHERE journey = 'flash_sale'") == members
    found = await BroadcastStore(store).find(planned.broadcast)
    assert found is not None and found.targeted == members and found.finished_at is not None

    # Cancelled, its schedules are gone from Temporal.
    async def listed() -> bool:
        return any(s.broadcast == planned.broadcast for s in await scheduled_broadcasts(client))

    await eventually(listed, attempts=1000)
    cancelled = await cancel_scheduled(client, planned.broadcast)
    assert len(cancelled.schedules) == 4 and cancelled.fired == 4
    for group in planned.groups:
        with pytest.raises(RPCError):
            await client.get_schedule_handle(schedule_id(planned.broadcast, group.zone)).describe()


async def test_a_time_already_past_or_a_broadcast_scheduled_twice_is_refused(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, project: Project
) -> None:
    await with_zones(store, settings)
    now = datetime.now(UTC)
    chosen: dict[str, Any] = {
        "plan": project.plans["flash_sale"],
        "segment": project.segments[SEGMENT],
    }
    with pytest.raises(BroadcastError, match=r"10:00 on 2020-01-03 has already passed in Amer"):
        await plan_schedule(
            BroadcastStore(store), **chosen, now=now, at=time(10), day=date(2020, 1, 3),
            zone=None, broadcast_id=None,
        )  # fmt: skip
    planned = await plan_schedule(
        BroadcastStore(store), **chosen, now=now, at=time(10), day=4, zone="Europe/Helsinki",
        broadcast_id="friday-once",
    )  # fmt: skip
    assert planned.day.weekday() == 4 and [g.zone for g in planned.groups] == ["Europe/Helsinki"]
    assert planned.groups[0].fires_at > now
    assert planned.group("Europe/Helsinki").rest  # one schedule: everyone, whatever their zone
    assert await create_schedules(dev_env.client, settings.task_queue, planned) == 1
    with pytest.raises(BroadcastError, match="broadcast friday-once is scheduled already"):
        await create_schedules(dev_env.client, settings.task_queue, planned)
    await dev_env.client.get_schedule_handle(schedule_id("friday-once", "Europe/Helsinki")).delete()


MISTAKES = [
    (["--at", "25:00"], "error: --at 25:00: not a time of day (HH:MM, 00:00 to 23:59, e.g. 10:00)"),
    (["--on", "friday"], "error: --on, --local and --timezone schedule a broadcast: give --at"),
    (["--at", "10:00", "--on", "fri"], "error: --on fri: not a date (YYYY-MM-DD, e.g. "),
    (["--at", "10:00", "--timezone", "Mars/Base"], "error: --timezone Mars/Base: not a timezone"),
    (["--at", "10:00", "--local", "--timezone", "UTC"], "error: --local sends at --at in each"),
    (["--segment", "sms_fans", "--at", "10:00"], "error: no segment `sms_fans` in segments/"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), MISTAKES)
def test_a_scheduling_mistake_is_one_line(args: list[str], expected: str) -> None:
    done = CliRunner().invoke(
        app, ["broadcast", "flash_sale", "--segment", SEGMENT, *args], env=command_env()
    )
    assert done.exit_code == 1
    assert done.output.startswith(expected), done.output
    assert len(done.output.strip().splitlines()) == 1, done.output


async def cli(command: str, env: dict[str, str]) -> Ran:
    """A ``kairos ...`` line run in this process (seconds faster than a new one under load)."""
    args = shlex.split(command)
    done = await asyncio.to_thread(CliRunner().invoke, app, args[1:], env=env)
    return Ran(done.exit_code, done.stdout, done.stderr)


async def test_the_documented_scheduled_broadcast_its_list_and_cancel(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    await with_zones(store, settings)
    env = command_env(
        KAIROS_DATABASE_URL=settings.database_url,
        TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
        KAIROS_TASK_QUEUE=settings.task_queue,
    )
    command = documented(
        "kairos broadcast flash_sale --segment sms_subscribers_retention --on friday --at 10:00 --local --id friday-sale"  # noqa: E501
    )
    scheduled = await cli(command, env)
    assert scheduled.code == 0, scheduled.err
    assert re.search(r"Europe/Helsinki\s*│ \d{4}-\d\d-\d\d 0[78]:00\s*│\s*2 │", scheduled.out)
    assert "warning" not in scheduled.err  # the sale has no wait of its own to trip over
    assert "Cancel: kairos broadcast cancel friday-sale" in scheduled.out, scheduled.out
    # The same in JSON; Tokyo's Friday 10:00 is 01:00 UTC, New York's is Friday afternoon UTC.
    other = await cli(command.replace("friday-sale", "friday-json") + " --json", env)
    assert other.code == 0, other.err
    body = json.loads(other.out)
    assert body["broadcast"] == "friday-json" and body["local"] is True
    zones = {s["zone"]: s["members_now"] for s in body["schedules"]}
    assert zones == {"America/New_York": 1, "Asia/Tokyo": 1, "Europe/Helsinki": 2, "UTC": 2}
    fires = {s["zone"]: datetime.fromisoformat(s["fires_at"]) for s in body["schedules"]}
    assert fires["Asia/Tokyo"].hour == 1 and fires["Asia/Tokyo"].weekday() == 4
    assert fires["America/New_York"].hour in (14, 15) and fires["America/New_York"].weekday() == 4

    async def listed() -> dict[str, Any] | None:
        shown = await cli(documented("kairos broadcast list") + " --json", env)
        assert shown.code == 0, shown.err
        return next((b for b in json.loads(shown.out) if b["broadcast"] == "friday-sale"), None)

    found = await eventually(listed, attempts=100)
    assert (found["journey"], found["segment"], len(found["schedules"])) == (
        "flash_sale",
        SEGMENT,
        4,
    )
    table = await cli("kairos broadcast list", env)
    assert "friday-sale" in table.out and "scheduled broadcasts" in table.out, table.err
    cancelled = await cli(documented("kairos broadcast cancel friday-sale"), env)
    assert cancelled.code == 0, cancelled.err
    assert "cancelled broadcast friday-sale: 4 schedules deleted (0 had already fired)" in (
        cancelled.out
    )
    assert (await cli("kairos broadcast cancel friday-json", env)).code == 0
    again = await cli("kairos broadcast cancel friday-sale", env)
    assert again.code == 1
    assert again.err.strip() == (
        "error: no scheduled broadcast 'friday-sale' (`kairos broadcast list` shows them)"
    )
    unreachable = await cli(f"{command} --id other", {**env, "TEMPORAL_ADDRESS": "127.0.0.1:9"})
    assert unreachable.code == 1 and len(unreachable.err.strip().splitlines()) == 1
    assert unreachable.err.startswith("error: cannot reach Temporal at 127.0.0.1:9"), (
        unreachable.err
    )


def test_the_report_page_shows_each_broadcasts_reach_with_its_blocked_reasons() -> None:
    began = datetime(2026, 12, 3, 20, 0, tzinfo=UTC)
    found = [
        Reach("friday-sale", "flash_sale", SEGMENT, began, 120, 110, 10, 104,
              {"sms consent withdrawn": 4, "<quiet> & caps": 2}, 17),
    ]  # fmt: skip
    page = broadcasts_section(found)
    assert 'data-chart="broadcasts"' in page and "<h2>Broadcasts</h2>" in page
    [row] = re.findall(r"<tbody>(.*)</tbody>", page)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells == [
        "friday-sale", SEGMENT, "2026-12-03 20:00 UTC", "120", "110", "104",
        "4 sms consent withdrawn, 2 &lt;quiet&gt; &amp; caps", "17",
    ]  # fmt: skip
    assert broadcasts_section([]) == ""


async def test_a_group_stopped_mid_way_goes_on_at_its_retry_and_enters_nobody_twice(
    dev_env: WorkflowEnvironment, settings: Settings, store: Store, project: Project
) -> None:
    members = 40
    await add_regulars(store, settings, members)
    broadcasts = Broadcasts(make_kairos(dev_env.client, settings, store))
    broadcasts.store.batch = 8  # a batch is one transaction: several, to stop between them
    group = BroadcastGroup(broadcast="killed", journey="flash_sale", segment=SEGMENT, rest=True)

    # The first attempt's worker dies after its first heartbeat (a batch of members in).
    first = ActivityEnvironment()
    beats: list[Any] = []

    def killed(*details: Any) -> None:
        beats.append(details)
        if details and details[0]:  # not a beat of the timer before any member is in
            first.cancel()

    first.on_heartbeat = killed
    with pytest.raises(asyncio.CancelledError):
        await first.run(broadcasts.broadcast_group, group)
    counts = await BroadcastStore(store).counts("killed")
    done = counts[MemberStatus.enrolled]
    assert beats and 0 < done < members and counts[MemberStatus.pending] == members - done

    retried = await ActivityEnvironment().run(broadcasts.broadcast_group, group)
    assert (retried.added, retried.enrolled, retried.refused) == (0, members - done, 0)
    assert await scalar(store, "SELECT count(*) FROM events WHERE id = %s", event_id("killed")) == (
        members
    )
    assert await scalar(store, "SELECT count(*) FROM runs WHERE journey = 'flash_sale'") == members
    assert await scalar(store, "SELECT count(*) FROM dispatches") == 0
