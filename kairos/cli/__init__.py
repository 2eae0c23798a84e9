"""The ``kairos`` command line: one module per group of commands, each registering on ``app``."""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from kairos.exits import exit_process

if TYPE_CHECKING:
    import typer

# Each module adds its commands to ``app`` when imported; the command names it registers.
COMMANDS: dict[str, tuple[str, ...]] = {
    "kairos.cli.language": ("validate", "schema", "graph"),
    "kairos.cli.runtime": (
        "emit", "identify", "start", "customer", "runs", "cancel", "unsubscribe", "forget",
        "worker",
    ),
    "kairos.cli.db": ("db",),
    "kairos.cli.outbox": ("outbox",),
    "kairos.cli.messages": ("preview",),
    "kairos.cli.simulate": ("simulate",),
    "kairos.cli.enroll": ("enroll",),
    "kairos.cli.report": ("report",),
    "kairos.cli.serve": ("serve",),
}  # fmt: skip


def load_commands(argv: list[str] | None = None) -> typer.Typer:
    """The ``kairos`` Typer app with its commands: only the one ``argv`` names, when it names
    one (a command then starts without importing what the others need), else all of them."""
    wanted = next((arg for arg in argv or [] if not arg.startswith("-")), None)
    chosen = [m for m, names in COMMANDS.items() if wanted in names] or list(COMMANDS)
    for name in chosen:
        importlib.import_module(name)
    from kairos.cli.base import app

    return app


def __getattr__(name: str) -> typer.Typer:
    # ``from kairos.cli import app``: the whole command line, as tests and tools want it.
    if name == "app":
        return load_commands()
    raise AttributeError(name)


def main() -> None:
    """The ``kairos`` command: run it, then exit without interpreter teardown."""
    app = load_commands(sys.argv[1:])
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


__all__ = ["app", "load_commands", "main"]
