"""The ``kairos`` Typer application that every command module registers on."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperOption

app = typer.Typer(
    name="kairos",
    help="Kairos: customer-lifecycle journeys in YAML, run durably on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _flag_type(option: TyperOption, ctx: Any) -> str | None:
    """No type for a flag in --help: ``--json  Machine-readable output``, not ``--json <bool>``."""
    if option.is_flag:
        return None
    return _option_type(option, ctx)


# Typer 0.2x shows ``<bool>`` after every flag in the rich help (--help included), as if it
# took a value.
_option_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign,assignment]


@app.callback()
def _group() -> None:
    """Kairos: customer-lifecycle journeys in YAML, run durably on Temporal.

    (A callback keeps ``kairos`` a group of commands even when only the one being run was
    loaded by kairos.cli.load_commands: Typer would otherwise make a lone command the root.)
    """


# Colours only on a terminal: rich decides from isatty, NO_COLOR and FORCE_COLOR. Lines are
# never broken to the terminal's width: a path or a one-line error stays one line (tables still
# fit the width).
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a user-facing error (no traceback) and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def fail_text(message: str, code: int = 1) -> typer.Exit:
    """:func:`fail` for plain text: brackets in a customer id, a URL or a value stay as they are."""
    return fail(escape(message), code)


def warn(message: str) -> None:
    """Print a user-facing warning (plain text): what was done, and what is left to do."""
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False)


def quiet_logs() -> None:
    """Keep library logs out of a command's output: what they would say (a connection retried,
    a call left to a worker) the command says itself, in one line. Errors still show."""
    logging.basicConfig(level=logging.ERROR, format="kairos: %(message)s")
    # The pool logs each failed attempt; StoreUnavailable says it once, with what to do.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[], None]]:
    """A progress bar on a terminal (nothing when output is piped); yields ``advance()``."""
    # Imported here: most commands (validate among them) never show one.
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )
    task = progress.add_task(label, total=total)
    with progress:
        yield lambda: progress.advance(task)
