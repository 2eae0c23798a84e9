"""A broadcast's --at and a journey that begins by waiting until a time of day: "Friday 10:00"
must not quietly become Saturday 10:00. No servers: the check runs before anything connects."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kairos.cli import app
from kairos.language.plan import JourneyPlan
from kairos.language.project import load_project
from kairos.runtime.schedules import opening_wait
from kairos.tools.broadcast import CATCHUP
from tests.commands import command_env
from tests.conftest import ROOT
from tests.test_pinning import copy_project

SEGMENT = "sms_subscribers_retention"
ZONE = ("--timezone", "Europe/Helsinki")
LOCAL_FRIDAY_TEN = ("--on", "friday", "--at", "10:00", "--local")
# The flash sale as it was written before the broadcast timed it: first a stage, then (for
# texters) "wait until 10:00", which is the *next* 10:00.
MORNING_SALE = """\
journey: morning_sale
description: The flash sale, waiting for the morning itself.
stage: retention
category: marketing
locales: [en, fi, sv, de]
default_locale: en
trigger: api
steps:
  - set:
      stage: retention
  - branch:
      - if: "customer.consent.sms"
        steps:
          - wait: {until: "10:00"}
  - id: offer
    send: sms
    fallback: email
    template: flash_sale/offer
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = copy_project(tmp_path_factory.mktemp("project"))
    (home / "journeys" / "morning_sale.yaml").write_text(MORNING_SALE)
    return home


@pytest.fixture(scope="module")
def morning_sale(home: Path) -> JourneyPlan:
    return load_project(home).plans["morning_sale"]


def test_the_shipped_flash_sale_leaves_the_timing_to_the_broadcast() -> None:
    plan = load_project(ROOT).plans["flash_sale"]
    assert plan.opening_waits() == []
    assert opening_wait(plan, time(10), None, CATCHUP) is None


def test_an_opening_wait_is_found_through_set_and_branch_steps(morning_sale: JourneyPlan) -> None:
    [wait] = morning_sale.opening_waits()
    assert wait.time_of_day == "10:00"
    assert morning_sale.step_lines[wait.id] == 14  # the `- wait:` line of MORNING_SALE


@pytest.mark.parametrize(
    ("at", "refuse"),
    [
        (time(10), True),  # the same minute: every text a day late
        (time(9, 30), True),  # a group may start late, or take minutes: some today, some not
        (time(9, 1), True),
        (time(20), False),  # the evening before on purpose: warned, it goes next morning
        (time(12), False),
    ],
)
def test_a_broadcast_time_the_wait_skips_past_is_refused_or_warned(
    morning_sale: JourneyPlan, at: time, refuse: bool
) -> None:
    found = opening_wait(morning_sale, at, None, CATCHUP)
    assert found is not None and found.refuse is refuse
    assert found.text.startswith(
        "journeys/morning_sale.yaml:14: morning_sale begins by waiting until 10:00 in the "
        "customer's timezone"
    )


def test_a_wait_that_only_holds_the_message_until_later_that_day_is_fine(
    morning_sale: JourneyPlan,
) -> None:
    assert opening_wait(morning_sale, time(8), None, CATCHUP) is None
    assert opening_wait(morning_sale, time(9), None, timedelta(minutes=30)) is None
    fixed = opening_wait(morning_sale, time(9, 1), "Europe/Helsinki", CATCHUP)
    assert fixed is not None and fixed.refuse
    assert "enters its members at 09:01 Europe/Helsinki time" in fixed.text


def test_the_command_refuses_friday_ten_local_in_one_line(home: Path) -> None:
    done = CliRunner().invoke(
        app,
        ["broadcast", "morning_sale", "--segment", SEGMENT, *LOCAL_FRIDAY_TEN],
        env=command_env(KAIROS_HOME=home),
    )
    assert done.exit_code == 1, done.output
    assert done.output.startswith(
        "error: journeys/morning_sale.yaml:14: morning_sale begins by waiting until 10:00 in the "
        "customer's timezone, and the broadcast enters its members at 10:00 each customer's own "
        "time (a group may start up to 60 minutes late), so each message would wait for the next "
        "day's 10:00"
    ), done.output
    assert "(remove that wait and let --at time the message" in done.output
    assert len(done.output.strip().splitlines()) == 1, done.output


def test_the_command_warns_of_a_next_morning_send_and_goes_on(home: Path) -> None:
    # Goes on to schedule it: with no Temporal here, that is where it stops.
    done = CliRunner().invoke(
        app,
        ["broadcast", "morning_sale", "--segment", SEGMENT, "--at", "20:00", *ZONE],
        env=command_env(
            KAIROS_HOME=home,
            TEMPORAL_ADDRESS="127.0.0.1:1",
            KAIROS_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        ),
    )
    assert done.exit_code == 1, done.output
    assert (
        "warning: journeys/morning_sale.yaml:14: morning_sale begins by waiting until 10:00 in "
        "the customer's timezone: members entered at 20:00 Europe/Helsinki time get their first "
        "message at 10:00 the next day"
    ) in " ".join(done.output.split()), done.output
