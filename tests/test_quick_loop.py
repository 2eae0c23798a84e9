"""The developers' quick loop (docs/architecture.md) is what `make test` runs first; the tests
marked ``slow`` (by tests/conftest.py, for every test that asks for a server) run after it, so
each test runs once and the quick loop passes whenever `make test` does."""

from __future__ import annotations

import re

from tests.commands import ROOT, documented

QUICK = documented('.venv/bin/pytest -q -m "not slow" -n 2')


def recipe(target: str) -> list[str]:
    """The command lines of a Makefile target, as make would run them."""
    text = (ROOT / "Makefile").read_text()
    found = re.search(rf"^{target}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert found is not None, f"no target {target} in the Makefile"
    lines = [line.strip() for line in found.group(1).splitlines()]
    return [line.replace("$(BIN)", ".venv/bin") for line in lines]


def test_make_test_runs_the_quick_loop_first_then_the_slow_tests() -> None:
    pytest_lines = [line for line in recipe("pytest") if line.startswith(".venv/bin/pytest")]
    assert pytest_lines == [QUICK, ".venv/bin/pytest -q -m slow -n $(TEST_WORKERS)"]
    test = re.search(r"^test:(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert test is not None and "pytest" in test.group(1).split()
