"""``kairos simulate``: a marketer's dry run of a journey, weeks of it in seconds."""

from __future__ import annotations

import dataclasses
import json
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode
from typer.testing import CliRunner

from kairos.cli import app
from kairos.language.plan import ExitStep, JourneyPlan, SegmentTrigger, Webhook
from kairos.language.project import Project
from kairos.language.segments import Segment
from kairos.runtime.config import FrequencyCap, Settings
from kairos.simulation.customers import (
    ScheduledEvent,
    SimCustomer,
    SimulationError,
    load_customer,
    parse_event_spec,
    resolve_relative,
    resolve_start,
)
from kairos.simulation.engine import simulate, simulate_project
from kairos.simulation.timeline import Timeline, format_offset
from tests.commands import documented
from tests.conftest import ROOT

FIXTURES = Path(__file__).parent / "fixtures" / "simulate"
# A fixed UTC offset keeps the expected local times free of daylight-saving changes.
NO_DST = "Etc/GMT-2"


def customer(name: str) -> SimCustomer:
    loaded = load_customer(FIXTURES / f"{name}.yaml")
    return dataclasses.replace(loaded, profile={**loaded.profile, "timezone": NO_DST})


def sent(timeline: Timeline) -> list[tuple[str, str, str]]:
    """(step, time since start, local clock) of every message that went out."""
    return [
        (e.step, format_offset(e.offset_seconds), timeline.local(e.at).strftime("%H:%M"))
        for e in timeline.entries
        if e.kind == "send"
    ]


def kinds(timeline: Timeline) -> list[str]:
    return [e.kind for e in timeline.entries]


def on(settings: Settings) -> dict[str, Any]:
    """Simulate on the test's own (empty) database rather than a private server: faster."""
    return {"database_url": settings.database_url}


async def test_a_new_customer_gets_three_welcome_emails_over_three_weeks(
    project: Project, settings: Settings
) -> None:
    timeline = await simulate(project, settings, "welcome", customer("ada"), **on(settings))

    assert sent(timeline) == [
        ("welcome", "+0d 00:00", "09:00"),
        ("onboarding_tips", "+2d 01:00", "10:00"),
        ("first_order_offer", "+7d 01:00", "10:00"),
    ]
    first = next(e.message for e in timeline.entries if e.message is not None)
    assert first.subject == "Ada, welcome to Lumo Coffee"
    assert "Hi Ada" in first.text
    assert (timeline.outcome, timeline.converted, timeline.stage) == (
        "no_first_order",
        False,
        "consideration",
    )
    assert timeline.entries[-1].what == "ended: no_first_order"
    assert [e.status for e in timeline.ledger] == ["sent", "sent", "sent"]


async def test_an_order_on_day_three_converts_and_stops_the_offer(
    project: Project, settings: Settings
) -> None:
    events = (parse_event_spec("onboarding_completed@+1d"), parse_event_spec("order_placed@+3d"))
    timeline = await simulate(
        project, settings, "welcome", customer("ada"), events=events, **on(settings)
    )

    assert [s[0] for s in sent(timeline)] == ["welcome"]
    assert (timeline.outcome, timeline.converted) == ("converted", True)
    arrived = [e.what for e in timeline.entries if e.kind == "wait_for"]
    assert arrived == ["wait 2d for onboarding_completed: onboarding_completed arrived"]
    assert [e.what for e in timeline.entries if e.kind == "event"] == [
        "event signed_up (the trigger)",
        "event onboarding_completed",
        "event order_placed",
    ]


async def test_an_evening_cart_is_deferred_past_quiet_hours_and_restarts_on_change(
    project: Project, settings: Settings
) -> None:
    timeline = await simulate(
        project, settings, "cart_abandonment", customer("bo"), days=3, start="20:30",
        **on(settings),
    )  # fmt: skip

    # The second cart_updated ends run 1 and starts run 2; the timeline follows Bo across both.
    assert [(e.kind, e.what) for e in timeline.entries[:6]] == [
        ("event", "event cart_updated (the trigger)"),
        ("start", "entered cart_abandonment on cart_updated"),
        ("event", "event cart_updated"),
        ("wait", "waited: wait 1h (interrupted)"),
        ("end", "run 1 ended: restarted by a new trigger"),
        ("restart", "restarted on cart_updated: run 2 begins again"),
    ]
    assert (timeline.runs, timeline.outcome) == (2, "completed")
    deferred = [e for e in timeline.entries if e.kind == "deferred"]
    assert [(e.step, format_offset(e.offset_seconds)) for e in deferred] == [
        ("first_reminder", "+0d 01:30"),
        ("last_chance_sms", "+1d 10:30"),
    ]
    assert "quiet hours 21:00-08:00" in deferred[0].what
    assert sent(timeline) == [
        ("first_reminder", "+0d 11:30", "08:00"),
        ("last_chance_sms", "+1d 11:30", "08:00"),
    ]
    sms = [e.message for e in timeline.entries if e.kind == "send"][-1]
    assert sms is not None and sms.channel.value == "sms" and "74,80" in sms.text


async def test_a_full_frequency_cap_holds_the_third_email_until_a_slot_frees(
    project: Project, settings: Settings
) -> None:
    capped = dataclasses.replace(settings, caps={"email": FrequencyCap(2, 30 * 86400)})
    timeline = await simulate(project, capped, "welcome", customer("ada"), **on(settings))

    assert [s[0] for s in sent(timeline)] == ["welcome", "onboarding_tips"]
    deferred = [e for e in timeline.entries if e.kind == "deferred"]
    # The last slot is held a minute for a higher priority (none comes), then the cap is full.
    assert [(e.step, format_offset(e.offset_seconds), e.what) for e in deferred] == [
        ("onboarding_tips", "+2d 01:00", "email deferred: frequency cap: last slot of 2 "
         "marketing email per 4w 2d; held until the end of the minute for any higher-priority "
         "message due then"),
        ("first_order_offer", "+7d 01:00", "email deferred: frequency cap: 2 marketing email "
         "per 4w 2d reached; deferred until a slot frees"),
    ]  # fmt: skip
    assert timeline.entries[-1].kind == "horizon"
    assert [(m.step, m.status) for m in timeline.ledger] == [
        ("welcome", "sent"),
        ("onboarding_tips", "sent"),
        ("first_order_offer", "deferred"),
    ]


async def test_the_whole_project_shares_the_cap_between_welcome_and_a_cart_reminder(
    project: Project, settings: Settings
) -> None:
    # What a marketer checks before launching a second campaign: every journey at once.
    events = tuple(
        parse_event_spec(spec)
        for spec in ("signed_up", "cart_updated@+2d", "onboarding_completed@+11d",
                     "onboarding_completed@+11d")  # the same twice: two events, not one
    )  # fmt: skip
    whole = await simulate_project(
        project, settings, customer("ada"), events=events, days=12, **on(settings)
    )

    assert [t.journey for t in whole.entered] == ["cart_abandonment", "welcome"]
    assert whole.to_json()["not_entered"] == [
        "flash_sale",
        "nurture",
        "referral_reward",
        "sales_handover",
        "win_back",
    ]
    cart, welcome = whole.entered
    assert [e.what for e in welcome.entries if e.kind == "event"] == [
        "event signed_up",
        "event cart_updated",
        "event onboarding_completed",
        "event onboarding_completed",
    ]
    assert sent(welcome) == [
        ("welcome", "+0d 00:00", "09:00"),
        ("onboarding_tips", "+2d 01:00", "10:00"),
        ("first_order_offer", "+9d 01:01", "10:01"),
    ]
    # The reminder takes the last of the week's three marketing emails; welcome's offer
    # waits for a slot, and the cart's own last chance too.
    assert sent(cart) == [
        ("first_reminder", "+2d 01:01", "10:01"),
        ("last_chance_email", "+7d 00:01", "09:01"),
    ]
    capped = [(e.step, format_offset(e.offset_seconds)) for e in welcome.entries
              if e.kind == "deferred" and "3 marketing email per 1w reached" in e.what]  # fmt: skip
    assert capped == [("first_order_offer", "+7d 01:00")]


async def test_a_customer_who_never_gave_marketing_consent_gets_no_welcome_series(
    project: Project, settings: Settings
) -> None:
    silent = dataclasses.replace(customer("ada"), consent={})
    timeline = await simulate(project, settings, "welcome", silent, days=3, **on(settings))

    blocked = [(e.step, e.what) for e in timeline.entries if e.kind == "blocked"]
    assert blocked == [
        ("welcome", "email blocked: marketing consent never given (opt-in)"),
        ("onboarding_tips", "email blocked: marketing consent never given (opt-in)"),
    ]
    assert not sent(timeline)
    assert next((m.step, m.status, m.reason) for m in timeline.ledger) == (
        "welcome",
        "blocked",
        "marketing consent never given (opt-in)",
    )


async def test_a_lapsing_customer_is_won_back_from_their_last_order_date(
    project: Project, settings: Settings
) -> None:
    timeline = await simulate(
        project, settings, "win_back", customer("cy"), start="22:30", **on(settings)
    )

    assert kinds(timeline)[0] == "start"
    assert sent(timeline) == [
        ("we_miss_you", "+0d 11:30", "10:00"),
        ("win_back_reminder", "+7d 11:30", "10:00"),
    ]
    assert (timeline.outcome, timeline.stage) == ("lapsed", "lapsed")


async def test_a_customer_file_missing_a_required_event_property_is_explained(
    project: Project, settings: Settings
) -> None:
    bare = dataclasses.replace(customer("ada"), events={})
    with pytest.raises(SimulationError) as err:
        await simulate(
            project, settings, "welcome", bare, events=(ScheduledEvent("order_placed", 60),),
            **on(settings),
        )  # fmt: skip
    assert "missing required property 'order_id'" in str(err.value)
    assert "events.order_placed in" in str(err.value)


async def test_an_emptied_cart_never_enters_cart_abandonment(
    project: Project, settings: Settings
) -> None:
    shopper = customer("bo")
    empty = {**shopper.events["cart_updated"], "cart_total": 0}
    bare = dataclasses.replace(shopper, events={"cart_updated": empty}, schedule=())
    timeline = await simulate(project, settings, "cart_abandonment", bare, days=2, **on(settings))

    assert kinds(timeline) == ["event", "not_entered"]
    assert timeline.entries[-1].what == (
        "did not enter: the trigger condition `event.cart_total > 0` did not hold"
    )
    assert timeline.outcome is None and not timeline.ledger


async def test_a_journey_with_webhooks_is_not_simulated_unless_allowed(
    project: Project, settings: Settings
) -> None:
    welcome = project.plans["welcome"]
    coupon = welcome.steps["first_order_coupon"]
    hooked = welcome.model_copy(
        update={
            "steps": {
                **welcome.steps,
                coupon.id: coupon.model_copy(
                    update={"action": None, "webhook": Webhook(url="https://crm.example/hook")}
                ),
            }
        }
    )
    with_hook = dataclasses.replace(project, plans={"welcome": hooked})
    with pytest.raises(SimulationError, match=r"calls webhooks \(first_order_coupon\)"):
        await simulate(with_hook, settings, "welcome", customer("ada"), **on(settings))


def test_event_specs_read_like_offsets() -> None:
    assert parse_event_spec("order_placed@+3h") == ScheduledEvent("order_placed", 3 * 3600)
    assert parse_event_spec("order_placed@1d 2h").offset_seconds == 26 * 3600
    assert parse_event_spec("order_placed").offset_seconds == 0
    with pytest.raises(SimulationError, match="expected NAME@OFFSET"):
        parse_event_spec("@3h")
    with pytest.raises(SimulationError, match="3x"):
        parse_event_spec("order_placed@3x")


def test_start_times_and_relative_dates_follow_the_simulated_clock(project: Project) -> None:
    now = datetime(2030, 3, 4, 6, 30, tzinfo=UTC)
    assert resolve_start("09:00", now, NO_DST) == datetime(2030, 3, 4, 7, 0, tzinfo=UTC)
    assert resolve_start("now", now, NO_DST) == now
    assert resolve_start("2030-03-05", now, "UTC") == datetime(2030, 3, 5, 9, 0, tzinfo=UTC)
    with pytest.raises(SimulationError, match="in the past"):
        resolve_start("2020-01-01T09:00", now, "UTC")
    profile = {"last_order_at": "now-60d", "first_name": "now"}
    resolved = resolve_relative(profile, project.catalogue.profile, now)
    assert resolved == {"last_order_at": "2030-01-03T06:30:00+00:00", "first_name": "now"}


@pytest.mark.slow
def test_the_cli_prints_json_for_ci(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["simulate", "welcome", "--customer", str(FIXTURES / "ada.yaml"), "--days", "3", "--json"],
        env={"KAIROS_HOME": str(ROOT), "NO_COLOR": "1", "KAIROS_OUTBOX": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["journey"], data["customer_id"], data["outcome"]) == ("welcome", "ada", None)
    assert data["timeline"][-1]["kind"] == "horizon"
    messages = [e["message"] for e in data["timeline"] if "message" in e]
    assert [m["subject"] for m in messages] == [
        "Ada, welcome to Lumo Coffee",
        "Two minutes to better coffee",
    ]
    assert not list(tmp_path.iterdir()), "a simulation never writes to the real outbox"


@pytest.mark.slow
def test_the_cli_explains_mistakes_without_a_traceback() -> None:
    env = {"KAIROS_HOME": str(ROOT), "NO_COLOR": "1"}
    ada = str(FIXTURES / "ada.yaml")
    result = CliRunner().invoke(app, ["simulate", "welcom", "--customer", ada], env=env)
    assert result.exit_code == 1
    assert "no journey named 'welcom'" in result.output
    result = CliRunner().invoke(
        app, ["simulate", "welcome", "--customer", ada, "--event", "order_placed@soon"], env=env
    )
    assert result.exit_code == 1 and "order_placed@soon" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_failing_private_temporal_server_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the SDK raised after 30 s when the test server died under a simulation.
    async def broken(*args: object, **kwargs: object) -> Timeline:
        raise RPCError("h2 protocol error: error reading a body from connection",
                       RPCStatusCode.UNAVAILABLE, b"")  # fmt: skip

    monkeypatch.setattr("kairos.cli.simulate.simulate", broken)
    ada = str(FIXTURES / "ada.yaml")
    env = {"KAIROS_HOME": str(ROOT), "NO_COLOR": "1"}
    result = CliRunner().invoke(app, ["simulate", "welcome", "--customer", ada], env=env)
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: the simulation's private Temporal server failed: h2 protocol error: error "
        "reading a body from connection; run it again"
    ]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_lead_who_warms_up_is_handed_to_sales_and_the_lessons_stop(tmp_path: Path) -> None:
    # The form +10, a live tasting +25 the first afternoon, the prices +15 the next day.
    command = documented(
        "kairos simulate --customer tests/fixtures/simulate/lea.yaml --event lead_captured "
        "--days 14"
    )
    result = CliRunner().invoke(
        app,
        shlex.split(command)[1:],
        env={"KAIROS_HOME": str(ROOT), "NO_COLOR": "1", "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    summary = [line.split()[:3] for line in result.output.splitlines() if ": outcome:" in line]
    assert summary == [
        ["nurture:", "outcome:", "handed_to_sales"],
        ["sales_handover:", "outcome:", "sales_ready"],
    ]
    assert "nurture: outcome: handed_to_sales  converted: no  messages: 1 sent" in result.output
    handed = [line for line in result.output.splitlines() if "notify_sales" in line]
    assert len(handed) == 1 and "+1d 06:00" in handed[0], handed


async def test_a_segment_window_that_closes_mid_simulation_starts_its_journey_then(
    project: Project, settings: Settings
) -> None:
    # "No order for 60 days", on the simulation's clock: her last order was 55 days and 30 minutes
    # before the start, so she enters on day five (at the first hourly sweep after it), not
    # at the start, and not whenever the machine's clock would say.
    lapsed = Segment(
        "lapsed", "", "days_since(customer.last_order_at) > 60", "segments/lapsed.yaml",
        project.catalogue,
    )  # fmt: skip
    plan = JourneyPlan(
        name="noticed",
        trigger=SegmentTrigger(segment="lapsed"),
        start="noticed",
        steps={"noticed": ExitStep(id="noticed", outcome="lapsed")},
    ).with_version()
    with_lapsed = dataclasses.replace(
        project,
        plans={**project.plans, plan.name: plan},
        segments={**project.segments, "lapsed": lapsed},
    )
    fia = customer("fia")
    fia = dataclasses.replace(
        fia, profile={**fia.profile, "last_order_at": "now-55d30m"}, schedule=()
    )
    timeline = await simulate(with_lapsed, settings, "noticed", fia, days=7, **on(settings))

    starts = [format_offset(e.offset_seconds) for e in timeline.entries if e.kind == "start"]
    assert starts == ["+5d 00:00"]
    assert timeline.outcome == "lapsed"
