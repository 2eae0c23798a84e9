"""The ``kairos`` command line: one module per group of commands, each registering on ``app``."""

from __future__ import annotations

import importlib

from kairos.cli.app import app

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
    app()


__all__ = ["app", "main"]
