"""The developers' quick loop (docs/architecture.md) runs, passes, and is the suite without the
tests that start servers or processes."""

from __future__ import annotations

import re

import pytest

from tests.commands import command_env, documented, run

QUICK = documented('.venv/bin/pytest -q -m "not slow" -n 2')

pytestmark = pytest.mark.slow  # it runs pytest


@pytest.mark.timeout(600)
async def test_the_quick_loop_passes_without_the_slow_tests() -> None:
    ran = await run(QUICK, command_env(), timeout=540)

    assert ran.code == 0, ran.output[-3000:]
    # xdist's summary: "622 passed in 95.20s", without the deselected.
    summary = re.search(r"\n(\d+) passed[ ,]", ran.out)
    assert summary is not None and int(summary.group(1)) > 0, ran.out[-2000:]
    assert " failed" not in ran.out and " error" not in ran.out
