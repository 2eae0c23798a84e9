"""Valid journeys compile into the plan graph the workflow interprets."""

from __future__ import annotations

from pathlib import Path

from kairos.language.compiler import check_project
from kairos.language.plan import (
    ActionStep,
    BranchCase,
    BranchStep,
    EventTrigger,
    ExitStep,
    GotoStep,
    JourneyPlan,
    SendStep,
    SetStep,
    SplitStep,
    SplitVariant,
    Stage,
    WaitForOutcome,
    WaitForStep,
    WaitStep,
    Webhook,
)
from kairos.language.project import load_project
from tests.test_language_invalid import make_project

ROOT = Path(__file__).resolve().parent.parent


def _plans(tmp_path: Path) -> dict[str, JourneyPlan]:
    return load_project(make_project(tmp_path)).plans


def test_nested_paths_flatten_into_steps_that_name_what_follows(tmp_path: Path) -> None:
    cart = _plans(tmp_path)["cart"]
    assert cart.start == "wait_1h"
    assert cart.trigger == EventTrigger(event="cart_updated", when="event.cart_total > 0")
    assert cart.steps == {
        "wait_1h": WaitStep(id="wait_1h", duration_seconds=3600, next="reminder"),
        "reminder": SendStep(
            id="reminder", channel="email", template="cart/reminder", next="wait_for_order_placed"
        ),
        "wait_for_order_placed": WaitForStep(
            id="wait_for_order_placed",
            events=(WaitForOutcome(event="order_placed"),),
            timeout_seconds=23 * 3600,
            on_timeout="branch_1",
        ),
        "branch_1": BranchStep(
            id="branch_1",
            cases=(
                BranchCase(
                    when="customer.phone and customer.consent.sms", next="send_sms_cart_last_chance"
                ),
            ),
            otherwise="send_email_cart_reminder",
        ),
        "send_sms_cart_last_chance": SendStep(
            id="send_sms_cart_last_chance", channel="sms", template="cart/last_chance"
        ),
        "send_email_cart_reminder": SendStep(
            id="send_email_cart_reminder", channel="email", template="cart/reminder"
        ),
    }


def test_wait_for_paths_splits_actions_and_loops(tmp_path: Path) -> None:
    welcome = _plans(tmp_path)["welcome"]
    steps = welcome.steps
    assert welcome.quiet_hours is not None and welcome.quiet_hours.end == "08:00"
    assert steps["set_stage_consideration_onboarded"] == SetStep(
        id="set_stage_consideration_onboarded",
        stage=Stage.consideration,
        attributes={"onboarded": False},
        next="hello",
    )
    assert steps["wait_for_order_placed_or_trial_started"] == WaitForStep(
        id="wait_for_order_placed_or_trial_started",
        events=(
            WaitForOutcome(event="order_placed", next="set_lead_score"),
            WaitForOutcome(event="trial_started", when="event.trial_ends_at", next="test_offer"),
        ),
        timeout_seconds=2 * 86400,
        on_timeout="test_offer",
    )
    assert steps["set_lead_score"] == SetStep(
        id="set_lead_score", increment={"lead_score": 10}, next="exit_bought"
    )
    assert steps["exit_bought"] == ExitStep(id="exit_bought", outcome="bought")
    assert steps["test_offer"] == SplitStep(
        id="test_offer",
        variants=(
            SplitVariant(name="coupon", weight=50, next="coupon"),
            SplitVariant(name="control", weight=50, next="wait_until_0900"),
        ),
        holdout_percent=10,
        holdout_next="wait_until_0900",
    )
    assert steps["coupon"] == ActionStep(
        id="coupon",
        action="issue_coupon",
        args={"percent": 10, "valid_days": 14},
        save_as="coupon",
        next="send_email_welcome_offer",
    )
    assert steps["send_email_welcome_offer"].next == "wait_until_0900"  # type: ignore[union-attr]
    assert steps["wait_until_0900"] == WaitStep(
        id="wait_until_0900", time_of_day="09:00", next="webhook_hooks_example_com"
    )
    assert steps["webhook_hooks_example_com"] == ActionStep(
        id="webhook_hooks_example_com",
        webhook=Webhook(
            url="https://hooks.example.com/kairos",
            body={"customer": "{{ customer.id }}", "score": "{{ customer.lead_score }}"},
        ),
        next="wait_until_signed_up_at",
    )
    assert steps["wait_until_signed_up_at"] == WaitStep(
        id="wait_until_signed_up_at",
        until_attribute="signed_up_at",
        offset_seconds=7 * 86400,
        next="loop",
    )
    assert steps["goto_loop"] == GotoStep(id="goto_loop", target="loop")
    assert next(iter(steps)) == welcome.start == "set_stage_consideration_onboarded"


def _write(home: Path, name: str, body: str) -> None:
    (home / "journeys" / f"{name}.yaml").write_text(f"journey: {name}\ntrigger: api\n{body}")


def _compile(home: Path, name: str) -> JourneyPlan:
    project, report = check_project(home, [home / "journeys" / f"{name}.yaml"])
    assert project is not None, report.format()
    return project.plans[name]


def test_repeated_steps_get_numbered_in_order_of_appearance(tmp_path: Path) -> None:
    home = make_project(tmp_path)
    _write(
        home,
        "ids",
        "steps:\n  - wait: 1d\n  - branch:\n      - if: customer.onboarded\n"
        "        steps: [{wait: 1d}]\n  - wait: 1 day\n  - wait: {until: '9:30'}\n",
    )
    ids = ["wait_1d", "branch_1", "wait_1d_2", "wait_1d_3", "wait_until_0930"]
    assert list(_compile(home, "ids").steps) == ids


def test_derived_ids_stay_put_when_an_unrelated_step_is_inserted(tmp_path: Path) -> None:
    home = make_project(tmp_path)
    before = "steps:\n  - wait: 1h\n  - send: email\n    template: welcome/hello\n  - wait: 2d\n"
    _write(home, "stable", before)
    ids_before = list(_compile(home, "stable").steps)
    _write(home, "stable", before.replace("steps:\n", "steps:\n  - set: {stage: retention}\n"))
    ids_after = list(_compile(home, "stable").steps)
    assert ids_before == ["wait_1h", "send_email_welcome_hello", "wait_2d"]
    assert ids_after == ["set_stage_retention", *ids_before]


def test_explicit_ids_are_never_taken_by_derived_ones(tmp_path: Path) -> None:
    home = make_project(tmp_path)
    _write(home, "taken", "steps:\n  - wait: 1h\n  - id: wait_1h_2\n    wait: 1h\n  - wait: 1h\n")
    assert list(_compile(home, "taken").steps) == ["wait_1h", "wait_1h_2", "wait_1h_3"]


def test_version_follows_content_not_comments_or_layout(tmp_path: Path) -> None:
    home = make_project(tmp_path)
    original = _compile(home, "cart").version
    path = home / "journeys" / "cart.yaml"
    text = path.read_text()
    path.write_text("# a new comment\n" + text.replace("  - wait: 1h", "  -   wait:   1h  # soon"))
    assert _compile(home, "cart").version == original
    path.write_text(text.replace("  - wait: 1h", "  - wait: 2h"))
    changed = _compile(home, "cart").version
    assert changed != original and len(changed) == 12


def test_warnings_do_not_stop_a_project(tmp_path: Path) -> None:
    home = make_project(tmp_path)
    _write(
        home,
        "loopy",
        "steps:\n  - id: again\n    set: {increment: {lead_score: 1}}\n  - goto: again\n",
    )
    project = load_project(home)
    assert "loopy" in project.plans
    assert [p.message for p in project.warnings.problems] == ["`goto: again` loops without waiting"]


def test_the_repository_journeys_compile() -> None:
    project, report = check_project(ROOT)
    assert project is not None, report.format()
    assert not report.has_errors


def test_a_conversion_window_changes_what_the_report_counts_not_the_run() -> None:
    project, report = check_project(ROOT)
    assert project is not None, report.format()
    win_back = project.plans["win_back"]
    assert win_back.goal_window == 14 * 86400
    assert project.plans["welcome"].goal_window is None  # a goal counts whenever it comes
    # Not part of what a run is started with, nor of its version: runs in flight are unchanged.
    assert "goal_window" not in win_back.model_dump()
    assert win_back.with_version().version == win_back.version
