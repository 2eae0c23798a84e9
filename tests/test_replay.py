"""Every recorded history still replays on today's interpreter: no non-determinism.

A change to workflows/ that alters the commands an old history recorded fails here; guard it
with ``workflow.patched()`` so runs in flight finish on their old path. The recordings
(tests/record_histories.py) cover every shipped journey and the paths that issue unusual
commands: a restart, a cancellation, a quiet-hours deferral, a failed send, a condition that
cannot be evaluated, and a run that continues as new. Every ``workflow.patched()`` id in
workflows/ must appear in some recording, or its old path is untested.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from kairos.worker import workflow_runner
from workflows.journey import JourneyWorkflow

HISTORIES = sorted((Path(__file__).parent / "fixtures" / "histories").glob("*.json"))


def test_there_is_a_recorded_history_of_every_journey_and_unusual_path() -> None:
    journeys = {p.name.split("-")[1] for p in HISTORIES}
    assert journeys == {"cart_abandonment", "welcome", "nurture", "win_back", "referral_reward"}
    histories = {p.stem.split("-", 1)[1]: p.read_text() for p in HISTORIES}
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED" in histories["welcome-welcome-cancelled-1"]
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED" in histories["cart_abandonment-cart-restart-1"]
    assert histories["cart_abandonment-cart-night-1"].count("ACTIVITY_TASK_SCHEDULED") > 3
    assert '"record_failed_send"' in histories["cart_abandonment-cart-failed-1"]
    assert '"note_problems"' in histories["cart_abandonment-cart-problem-1"]
    first = histories["welcome-welcome-continued-1-first"]
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW" in first


def _payload_text(value: Any) -> str:
    """Every payload in a history, decoded, as one text (patch ids live in marker payloads)."""
    if isinstance(value, dict):
        return "".join(
            base64.b64decode(v).decode(errors="replace") if k == "data" and isinstance(v, str)
            else _payload_text(v)
            for k, v in value.items()
        )  # fmt: skip
    if isinstance(value, list):
        return "".join(_payload_text(v) for v in value)
    return ""


def patch_ids() -> set[str]:
    """Every id the interpreter passes to ``workflow.patched()`` (literal or constant)."""
    found: set[str] = set()
    for source in Path(__file__).parent.parent.glob("workflows/*.py"):
        text = source.read_text()
        constants = dict(re.findall(r'^([A-Z_]+) = "([^"]+)"', text, flags=re.M))
        for argument in re.findall(r"patched\(\s*([A-Z_]+|\"[^\"]+\")\s*\)", text):
            found.add(argument.strip('"') if argument.startswith('"') else constants[argument])
    return found


def test_every_patched_path_has_a_recorded_history() -> None:
    recorded = "".join(_payload_text(json.loads(p.read_text())) for p in HISTORIES)
    missing = sorted(p for p in patch_ids() if p not in recorded)
    assert not missing, (
        f"no recorded history takes the old path of {missing}: record one before the "
        "patch (python -m tests.record_histories) so its replay is tested"
    )


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    replayer = Replayer(
        workflows=[JourneyWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await replayer.replay_workflow(history)
