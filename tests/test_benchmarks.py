"""The benchmark harness keeps measuring what it claims: the same work on both sides.

A benchmark that silently measures different work on its two sides (a journey twin that drifted,
a workload that is not deterministic) gives ratios that mean nothing, so `make test` runs a
miniature of `make bench`: a handful of customers through both sides on a fresh dev server, with
separate worker processes and a database of its own on the session's PostgreSQL, exactly as
the harness does at scale. It asserts counts — outcomes, messages, billable actions,
transactions — never times.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as bench_main
from benchmarks import analytics, engine, micro, profiles
from benchmarks.baseline import BASELINE_WORKFLOWS
from benchmarks.project import BENCH_JOURNEYS, make_home
from benchmarks.report import markdown, ratios, table
from benchmarks.workload import JOURNEY_CYCLE, customers
from kairos.language.project import load_project
from kairos.runtime import routing

# Billable actions per message Kairos may need on this ten-customer miniature (4.46 before the
# step moved to the current details and the run's end into its last activity, 5.3 before
# that). The benchmark's target is 3.5 from N = 100 on; ten customers have more waits per
# message (1.4 timers against 1.15), so the same code needs 3.75-3.85 here, moving by a timer
# or a signal with timing (a date already past, an order arriving after the run ended).
# Since nurture is scored by customer.yaml's rules and hands over on a segment trigger, the
# engaged lead's series ends after one lesson and the handover run (a start, an action and a
# set) sends nothing: actions with no message, 4.09 measured on the first run of that shape.
ACTIONS_BUDGET = 4.25
# Timing moves a few actions on either side whatever the code, on a loaded machine: a wait
# until a profile date that has already passed when the run reaches it needs no timer, an order
# that arrives while a run is still open is signalled (and that run then records its own end)
# where one arriving after it ended is not, and an engaging lead's points are signalled to the
# nurture run only while it is open. Fresh-clone runs measured Kairos up to two actions above the
# hand-written side in total; anything structural — one action more per run or per message — is
# eleven or more.
RACE_ACTIONS = 4


def total(history: dict[str, Any], per_message: float) -> float:
    """A per-message figure of a side's sampled histories, back as a count."""
    return per_message * float(history["sampled_messages"])


pytestmark = pytest.mark.slow  # every test here starts a process or a server


def test_the_workload_is_the_same_for_every_run_and_covers_every_journey() -> None:
    first, again = customers(20), customers(20)

    assert first == again
    # Every journey is entered: bench_sales_handover by the leads who engage.
    assert {c.journey for c in first} == set(JOURNEY_CYCLE)
    assert set(JOURNEY_CYCLE) | {"bench_sales_handover"} == set(BENCH_JOURNEYS)
    assert any(c.engages for c in first) and not all(c.engages for c in first)
    assert any(c.converts for c in first)
    assert any("phone" in c.profile for c in first)
    assert any("phone" not in c.profile for c in first)


def test_every_benchmark_journey_compiles_and_has_a_hand_written_twin(tmp_path: Path) -> None:
    project = load_project(make_home(tmp_path / "home"))

    assert set(project.plans) == set(BENCH_JOURNEYS) == set(BASELINE_WORKFLOWS)
    # Each twin asks the store back for what its YAML journey reads, no more and no less.
    for name, (_, twin) in BASELINE_WORKFLOWS.items():
        assert set(twin.READS) == routing.reads(project.plans[name], "timezone"), name


def test_rendering_is_measured_on_every_template_and_locale() -> None:
    rendering = micro.rendering(seconds=0.2)

    for channel in ("email", "sms"):
        assert rendering[channel]["rendered"] > 0
        assert rendering[channel]["per_second"] > 0


@pytest.fixture(scope="module")
def pair(postgres: str) -> dict[str, Any]:
    """Ten customers (two per journey, one of them buying from the cart) through each side."""
    import asyncio

    async def every_side() -> dict[str, Any]:
        # Side by side (each has its own dev server, workers and database): the counts compared
        # below do not depend on timing, and the suite waits for the slowest side only.
        kairos, baseline, plain = await asyncio.gather(
            engine.measure(engine.Phase("kairos", 10, 1), 240, postgres),
            engine.measure(engine.Phase("baseline", 10, 1), 240, postgres),
            engine.measure(engine.Phase("plain", 10, 1), 240, postgres),
        )
        return {"kairos": kairos, "baseline": baseline, "plain": plain}

    return asyncio.run(every_side())


def test_both_sides_complete_the_same_journeys_with_the_same_messages(
    pair: dict[str, Any],
) -> None:
    kairos, baseline = pair["kairos"], pair["baseline"]

    assert kairos["complete"] and baseline["complete"]
    # Ten entries, win-back for the customer who ordered from the cart and the sales handover
    # of the lead who engaged (whose nurture ends early, handed_to_sales).
    assert kairos["journeys"] == baseline["journeys"] == 12
    assert kairos["journeys_not_completed"] == baseline["journeys_not_completed"] == {}
    assert kairos["outcomes"] == baseline["outcomes"]
    assert kairos["outcomes"]["converted"] == 1
    assert kairos["outcomes"]["handed_to_sales"] == kairos["outcomes"]["sales_ready"] == 1
    assert kairos["outcomes"]["not_ready"] == 1
    assert kairos["messages"] == baseline["messages"] > 0
    assert kairos["messages_by_channel"] == baseline["messages_by_channel"]
    assert set(kairos["messages_by_channel"]) == {"email", "sms"}


def test_kairos_costs_no_more_billable_actions_than_hand_written_code(
    pair: dict[str, Any],
) -> None:
    kairos, baseline = pair["kairos"]["history"], pair["baseline"]["history"]

    assert kairos["sampled_customers"] == baseline["sampled_customers"] == 10
    assert kairos["sampled_runs"] == baseline["sampled_runs"] == 12
    assert total(kairos, kairos["actions_per_message"]) <= (
        total(baseline, baseline["actions_per_message"]) + RACE_ACTIONS
    )
    assert kairos["actions_per_message"] <= ACTIONS_BUDGET
    # Every wait of the benchmark journeys is seconds long: the step is shown in the current
    # details (free), and the outcome is the store's, so no search attribute is upserted.
    assert "search_attributes" not in kairos["actions_by_kind_per_message"]
    # Starts, the store's signals, and activities (sends, actions, set steps, each run's end)
    # are the same work on both sides; nothing is left of the customer entity's updates,
    # workflow-to-workflow signals and routing markers.
    by_kind = kairos["actions_by_kind_per_message"], baseline["actions_by_kind_per_message"]
    for kind in ("activity", "workflow_started", "signal"):
        counts = [total(side, figures.get(kind, 0.0)) for side, figures in
                  zip((kairos, baseline), by_kind, strict=True)]  # fmt: skip
        assert abs(counts[0] - counts[1]) <= RACE_ACTIONS, (kind, counts)
    for kind in ("update", "signal_external", "local_activity"):
        assert kind not in by_kind[0] and kind not in by_kind[1], kind


def test_the_plain_anchor_sends_twice_per_run_for_two_actions_a_message(
    pair: dict[str, Any],
) -> None:
    plain = pair["plain"]

    assert plain["complete"]
    # The same entries as the other sides (win-back included), each run two messages, but no
    # sales handover: its segment needs the stage nurture's `set` step gives, and plain runs
    # set nothing.
    assert plain["journeys"] == pair["kairos"]["journeys"] - 1 == 11
    assert plain["journeys_not_completed"] == {}
    assert plain["messages"] == 2 * plain["journeys"]
    # A start, two deliver activities and a timer per run: 4 actions for 2 messages, and the
    # goal signal the store sends the cart run if the order finds it still running.
    by_kind = plain["history"]["actions_by_kind_per_message"]
    assert (by_kind["activity"], by_kind["timer"], by_kind["workflow_started"]) == (1.0, 0.5, 0.5)
    assert set(by_kind) <= {"activity", "timer", "workflow_started", "signal"}


def test_both_sides_commit_their_work_to_the_same_store(pair: dict[str, Any]) -> None:
    kairos, baseline = pair["kairos"], pair["baseline"]

    # Every event, decision, send and run end is a PostgreSQL transaction on either side.
    assert kairos["postgres_transactions"] > kairos["messages"]
    assert baseline["postgres_transactions"] > baseline["messages"]


def test_the_report_shows_the_pair_with_its_ratios(pair: dict[str, Any]) -> None:
    figures = {"customers": 10, "workers": 1, **pair}
    figures["ratio"] = ratios(pair["kairos"], pair["baseline"])
    figures["ratio_plain"] = ratios(pair["kairos"], pair["plain"])
    printed = table({"engine": [figures]})

    assert "Kairos" in printed and "hand-written" in printed and "K/plain" in printed
    baseline = pair["baseline"]["history"]
    actions = total(baseline, baseline["actions_per_message"])
    assert figures["ratio"]["actions_per_message"] <= round(1 + RACE_ACTIONS / actions, 3)
    assert figures["ratio_plain"]["actions_per_message"] > 1.0
    rows = markdown({"engine": [figures]}).splitlines()
    assert [row.split(" | ")[2] for row in rows[2:]] == [
        "Kairos", "hand-written", "plain anchor",
        "**Kairos / hand-written**", "**Kairos / plain**",
    ]  # fmt: skip
    assert all(row.count("|") == rows[0].count("|") for row in rows)


def test_a_profile_is_summarised_by_area_with_waiting_threads_set_apart(tmp_path: Path) -> None:
    folded = tmp_path / "kairos-n10-w1-123.folded"
    folded.write_text(
        "run (asyncio/runners.py:44);EpollSelector.select (selectors.py:468) 60\n"
        "_bootstrap (threading.py:995);_worker (concurrent/futures/thread.py:81) 20\n"
        "run (asyncio/runners.py:44);_send (workflows/journey.py:251);"
        "validate (pydantic/main.py:10) 15\n"
        "run (asyncio/runners.py:44);deliver (activities/messaging.py:88) 5\n"
    )

    summary = profiles.sides(tmp_path)["kairos"]

    assert summary["samples"] == 100
    assert summary["idle_percent"] == 80.0
    busy = summary["busy_area_percent"]
    assert busy["journey interpreter (workflows/journey.py)"] == 75.0
    assert busy["pydantic"] == 75.0
    assert busy["deliver activity (activities/messaging.py)"] == 25.0
    assert summary["top_busy_self_percent"]["validate (pydantic/main.py)"] == 75.0


async def test_the_report_benchmark_counts_its_synthetic_entries_in_a_fixed_number_of_queries(
    postgres: str,
) -> None:
    """``python -m benchmarks --only report`` at a size a test affords: the same rows, the
    same report, figures that follow from how the rows were generated."""
    measured = await analytics.measure(postgres, 2000)
    assert measured["entries"] == 2000
    # Every fifth customer's runs converted; every twentieth is still running.
    assert measured["converted"] == 2000 // 5
    assert measured["rows"]["run_steps"] == 3 * (2000 - 2000 // 20)
    assert measured["report_queries"] == 6 and measured["temporal_actions"] == 0
    # The report read the rollups the back-fill made (a few rows per journey and day), and the
    # --since 30d report every entry (all began within 28 days).
    assert 0 < measured["rows"]["report_entry_days"] < 2000
    assert measured["report_30d_entries"] == 2000
    writes = measured["write_cost"]
    assert writes["client_statements_added"] == 0
    assert writes["with_rollups"]["message_update_ms"] > 0 < writes["without"]["run_end_ms"]
    # Measured, not asserted: on rollups a report of 2,000 entries can take less of
    # PostgreSQL's CPU than the operating system's 10 ms tick counts.
    assert "postgres_cpu_seconds" in measured
    assert sum(measured["stages"].values()) == 1000
    assert "report" in bench_main._parser().parse_args(["--only", "report"]).only
