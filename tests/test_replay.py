"""Every recorded history still replays on today's interpreter: no non-determinism.

A change to workflows/ that alters the commands an old history recorded fails here; guard it
with ``workflow.patched()`` so runs in flight finish on their old path. The recordings
(tests/record_histories.py) cover every shipped journey and the paths that issue unusual
commands: a restart, a cancellation, a quiet-hours deferral.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import workflow_runner
from workflows.journey import JourneyWorkflow

HISTORIES = sorted((Path(__file__).parent / "fixtures" / "histories").glob("*.json"))


def test_there_is_a_recorded_history_of_every_journey_and_unusual_path() -> None:
    journeys = {p.name.split("-")[1] for p in HISTORIES}
    assert journeys == {"cart_abandonment", "welcome", "nurture", "win_back", "referral_reward"}
    histories = {p.stem.split("-", 1)[1]: p.read_text() for p in HISTORIES}
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED" in histories["welcome-welcome-cancelled-1"]
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED" in histories["cart_abandonment-cart-restart-1"]
    assert histories["cart_abandonment-cart-night-1"].count("ACTIVITY_TASK_SCHEDULED") > 3


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=[JourneyWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer.replay_workflow(history)
