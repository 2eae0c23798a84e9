"""The ``kairos`` command line: one module per group of commands, each registering on ``app``."""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import TYPE_CHECKING

from kairos.runtime.exits import exit_process

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
    "kairos.cli.segment": ("segment",),
    "kairos.cli.broadcast": ("broadcast",),
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
        # Not standalone: a usage mistake comes back here, to be said in one line.
        code = _exit_code(app(standalone_mode=False))
    except SystemExit as done:
        code = _exit_code(done.code)
    except KeyboardInterrupt:
        code = 130
    except Exception as err:
        code = _click_exit(err)
    exit_process(code)


def _is(err: BaseException, name: str) -> bool:
    # By name: Typer 0.17+ vendors Click as ``typer._click`` and does not export these
    # classes, older Typer raises Click's own.
    return any(cls.__name__ == name for cls in type(err).__mro__)


def _click_exit(err: Exception) -> int:
    """What a Click exception out of a command line means: said in one line, with its code."""
    if _is(err, "NoArgsIsHelpError"):  # plain ``kairos``: the help is the answer
        print(getattr(err, "ctx").get_help())  # noqa: B009 (Click's, untyped)
        return 0
    if _is(err, "UsageError"):  # an unknown option, a missing argument, a bad value
        ctx = getattr(err, "ctx", None)
        where = ctx.command_path if ctx is not None else "kairos"
        message = " ".join(getattr(err, "format_message")().split()).rstrip(".")  # noqa: B009
        print(f"error: {message} (see `{where} --help`)", file=sys.stderr)
        return int(getattr(err, "exit_code", 2))
    if _is(err, "ClickException"):
        getattr(err, "show")()  # noqa: B009
        return int(getattr(err, "exit_code", 1))
    if _is(err, "Abort"):  # Ctrl-C or the end of input at a confirmation
        print("kairos: aborted", file=sys.stderr)
        return 1
    # A bug, not a mistake: show where, then end as every command ends (a normal teardown
    # after a Temporal client can abort the interpreter).
    traceback.print_exc()
    return 1


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)  # what SystemExit("message") would have printed
    return 1


__all__ = ["app", "load_commands", "main"]
