"""The ``kairos`` command line: one module per group of commands, each registering on ``app``."""

from __future__ import annotations

import importlib
import sys

from kairos.cli.app import app
from kairos.temporal import exit_process

# Each module adds its commands to ``app`` when imported.
_MODULES = (
    "kairos.cli.language",
    "kairos.cli.runtime",
    "kairos.cli.db",
    "kairos.cli.outbox",
    "kairos.cli.messages",
    "kairos.cli.simulate",
    "kairos.cli.enroll",
    "kairos.cli.report",
    "kairos.cli.serve",
)

for _name in _MODULES:
    importlib.import_module(_name)


def main() -> None:
    """The ``kairos`` command: run it, then exit without interpreter teardown."""
    try:
        app()
        code = 0
    except SystemExit as done:
        code = _exit_code(done.code)
    except KeyboardInterrupt:
        code = 130
    exit_process(code)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)  # what SystemExit("message") would have printed
    return 1


__all__ = ["app", "main"]
