"""``to_mermaid``: a journey as a flowchart a marketer can read."""

from __future__ import annotations

from pathlib import Path

from kairos.language.graph import to_mermaid
from kairos.language.project import load_project
from tests.test_language_invalid import make_project


def test_cart_journey_as_mermaid(tmp_path: Path) -> None:
    plan = load_project(make_project(tmp_path)).plans["cart"]
    assert to_mermaid(plan) == (
        "flowchart TD\n"
        '    trigger[/"on cart_updated if event.cart_total #gt; 0"\\]\n'
        '    wait_1h[/"wait_1h: wait 1h"/]\n'
        '    reminder["reminder: send email cart/reminder"]\n'
        '    wait_for_order_placed{{"wait_for_order_placed: wait for order_placed"}}\n'
        '    branch_1{"branch_1: branch"}\n'
        '    send_sms_cart_last_chance["send_sms_cart_last_chance: send sms cart/last_chance"]\n'
        '    send_email_cart_reminder["send_email_cart_reminder: send email cart/reminder"]\n'
        '    completed(("completed"))\n'
        '    goal>"goal (exit_on): order_placed → converted"]\n'
        "    trigger --> wait_1h\n"
        "    wait_1h --> reminder\n"
        "    reminder --> wait_for_order_placed\n"
        '    wait_for_order_placed -->|"order_placed"| completed\n'
        '    wait_for_order_placed -->|"timeout 23h"| branch_1\n'
        '    branch_1 -->|"customer.phone and customer.consent.sms"| send_sms_cart_last_chance\n'
        '    branch_1 -->|"else"| send_email_cart_reminder\n'
        "    send_sms_cart_last_chance --> completed\n"
        "    send_email_cart_reminder --> completed\n"
    )


def test_splits_waits_actions_loops_and_exits_are_drawn(tmp_path: Path) -> None:
    text = to_mermaid(load_project(make_project(tmp_path)).plans["welcome"])
    for line in (
        '    set_stage_consideration_onboarded[("set_stage_consideration_onboarded: set stage = '
        'consideration, onboarded = False")]',
        '    exit_bought((("exit: bought")))',
        '    test_offer -->|"coupon: weight 50"| coupon',
        '    test_offer -.->|"holdout 10%"| wait_until_0900',
        '    coupon[["coupon: issue_coupon → journey.coupon"]]',
        '    wait_until_signed_up_at[/"wait_until_signed_up_at: wait until '
        'customer.signed_up_at + 7d"/]',
        '    wait_for_order_placed_or_trial_started -->|"trial_started if event.trial_ends_at"| '
        "test_offer",
        '    loop -->|"timeout 7d"| goto_loop',
        "    goto_loop -.-> loop",
        '    set_lead_score[("set_lead_score: set lead_score += 10")]',
    ):
        assert line in text.splitlines()
    assert "goal" not in text  # no exit_on in this journey


def test_reserved_mermaid_words_are_not_used_as_node_ids(tmp_path: Path) -> None:
    home = make_project(tmp_path)
    (home / "journeys" / "ends.yaml").write_text(
        "journey: ends\ntrigger: api\nsteps:\n  - id: end\n    wait: 1h\n"
    )
    text = to_mermaid(load_project(home).plans["ends"])
    assert "    step_end[/" in text and "trigger --> step_end" in text
