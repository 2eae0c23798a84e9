"""Every recorded history still replays on today's interpreter: no non-determinism.

A change to workflows/ that alters the commands an old history recorded fails here; guard it
with ``workflow.patched()`` so runs in flight finish on their old path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import workflow_runner
from workflows.customer import CustomerWorkflow
from workflows.journey import JourneyWorkflow

HISTORIES = sorted((Path(__file__).parent / "fixtures" / "histories").glob("*.json"))


def test_there_is_a_recorded_history_of_every_journey() -> None:
    journeys = {p.name.split("-")[1] for p in HISTORIES}
    assert journeys == {"cart_abandonment", "welcome", "nurture", "win_back", "referral_reward"}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=[JourneyWorkflow, CustomerWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer.replay_workflow(history)
