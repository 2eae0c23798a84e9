"""The developers' quick loop (docs/architecture.md) runs, passes, and is the suite without the
tests that start servers or processes."""

from __future__ import annotations

import re

import pytest

from tests.commands import command_env, documented, run

QUICK = documented('.venv/bin/pytest -q -m "not slow" -n 4')

pytestmark = pytest.mark.slow  # it runs pytest


@pytest.mark.timeout(600)
async def test_the_quick_loop_passes_without_the_slow_tests() -> None:
    ran = await run(QUICK, command_env(), timeout=540)

    assert ran.code == 0, ran.output[-3000:]
    summary = re.search(r"(\d+) passed(?:, \d+ skipped)?, (\d+) deselected", ran.out)
    assert summary is not None, ran.out[-2000:]
    passed, deselected = (int(n) for n in summary.groups())
    assert passed > 0 and deselected > 0
