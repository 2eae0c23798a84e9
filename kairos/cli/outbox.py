"""``kairos outbox``: the newest messages in the local outbox, where mail goes without credentials.

It reads ``<outbox>/index.jsonl``, which the outbox provider appends one JSON object to per
message (see ``activities/providers/outbox.py`` for the fields).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kairos.cli.base import app, console, err_console
from kairos.language.plan import Channel
from kairos.runtime.config import ConfigError, load_settings
from kairos.runtime.outbox_files import INDEX_FILE

_EPILOG = (
    "Example: [bold]kairos outbox --channel email --customer c-42 --limit 5[/]  "
    "(then open the .eml file in a mail client)"
)


@app.command("outbox", epilog=_EPILOG)
def outbox(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="How many messages to show, newest first.")
    ] = 20,
    channel: Annotated[
        Channel | None, typer.Option("--channel", help="Only email or only sms messages.")
    ] = None,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Only messages to this customer id.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the index entries as a JSON array.")
    ] = False,
) -> None:
    """List the newest messages in the local outbox (KAIROS_OUTBOX).

    Without SendGrid or Twilio credentials, email and SMS are written there as files.
    """
    try:
        outbox_dir = load_settings().outbox_dir
    except ConfigError as exc:
        for problem in exc.problems:
            err_console.print(f"[bold red]error:[/] {escape(problem)}", highlight=False)
        raise typer.Exit(2) from None
    entries = newest(outbox_dir / INDEX_FILE, limit=limit, channel=channel, customer=customer)
    if as_json:
        typer.echo(json.dumps(entries, indent=2, ensure_ascii=False))
    elif entries:
        console.print(_table(outbox_dir, entries))
    else:
        console.print(_nothing(outbox_dir, filtered=channel is not None or customer is not None))


def newest(
    index: Path, *, limit: int, channel: Channel | None = None, customer: str | None = None
) -> list[dict[str, Any]]:
    """The newest ``limit`` index entries that match, newest first.

    Args:
        index: The outbox's ``index.jsonl``; a missing file has no entries.
        limit: At most this many entries.
        channel: Only entries on this channel.
        customer: Only entries for this customer id.
    """
    kept: deque[dict[str, Any]] = deque(maxlen=limit)
    for entry in _entries(index):
        if channel is not None and entry.get("channel") != channel.value:
            continue
        if customer is not None and entry.get("customer_id") != customer:
            continue
        kept.append(entry)
    return list(reversed(kept))


def _entries(index: Path) -> Iterator[dict[str, Any]]:
    """Every readable entry, oldest first, read line by line so a large index costs no memory."""
    try:
        lines = index.open(encoding="utf-8")
    except FileNotFoundError:
        return
    with lines:
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                # A line another process is still appending, or a hand edit: not a message.
                continue
            if isinstance(entry, dict):
                yield entry


def _table(outbox_dir: Path, entries: list[dict[str, Any]]) -> Table:
    table = Table(title=f"Outbox {escape(str(outbox_dir))}", title_justify="left")
    for column in ("time (UTC)", "channel", "to"):
        table.add_column(column, no_wrap=True)
    for column in ("subject / preview", "journey / step", "file"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            *(
                escape(value)
                for value in (
                    str(entry.get("time", "")).replace("T", " ")[:19],
                    str(entry.get("channel", "")),
                    str(entry.get("to", "")),
                    str(entry.get("subject") or entry.get("preview") or ""),
                    " / ".join(str(entry[k]) for k in ("journey", "step") if entry.get(k)),
                    str(entry.get("file", "")),
                )
            )
        )
    return table


def _nothing(outbox_dir: Path, *, filtered: bool) -> str:
    if filtered:
        return f"No messages in {escape(str(outbox_dir))} match."
    return (
        f"No messages in {escape(str(outbox_dir))} yet. Messages land here when "
        "KAIROS_EMAIL_PROVIDER or KAIROS_SMS_PROVIDER is outbox (the default without credentials)."
    )
