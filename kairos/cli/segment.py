"""``kairos segment count|sample NAME``: who is in a segment, answered by the customer store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kairos.cli.base import app, console
from kairos.cli.base import fail_text as fail
from kairos.cli.runtime import load, with_client
from kairos.language.problems import suggestion
from kairos.language.project import Project
from kairos.language.segments import Segment
from kairos.runtime.client import Kairos
from kairos.store.segments import count_members, sample_members

segment = typer.Typer(
    help="Segments (segments/*.yaml): count and sample their members in the customer store.",
    no_args_is_help=True,
)
app.add_typer(segment, name="segment")

_NAME = Annotated[str, typer.Argument(help="Segment name (segments/<name>.yaml).")]
_JSON = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def find_segment(project: Project, name: str) -> Segment:
    """The compiled segment called ``name``, or the one-line error that says which exist."""
    found = project.segments.get(name)
    if found is None:
        hint = suggestion(name, list(project.segments), kind="segments")
        raise fail(f"no segment `{name}` in segments/ ({hint})")
    return found


@segment.command("count")
def count(name: _NAME, as_json: _JSON = False) -> None:
    """How many customers are in the segment now.

    Example: kairos segment count sms_subscribers_retention
    """
    settings, project = load()
    chosen = find_segment(project, name)
    now = datetime.now(UTC)

    async def go(kairos: Kairos) -> int:
        return await count_members(kairos.store.database, chosen, now)

    members = with_client(settings, project, go)
    if as_json:
        typer.echo(json.dumps({"segment": name, "members": members, "at": now.isoformat()}))
        return
    noun = "customer" if members == 1 else "customers"
    console.print(f"{name}: {members:,} {noun}", highlight=False)


@segment.command("sample")
def sample(
    name: _NAME,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many to show.")] = 10,
    as_json: _JSON = False,
) -> None:
    """Show some members of the segment (lowest customer ids first), with their stage.

    Example: kairos segment sample sms_subscribers_retention --limit 5
    """
    settings, project = load()
    chosen = find_segment(project, name)
    now = datetime.now(UTC)

    async def go(kairos: Kairos) -> list[tuple[str, str | None]]:
        return await sample_members(kairos.store.database, chosen, now, limit)

    members = with_client(settings, project, go)
    if as_json:
        rows = [{"customer_id": cid, "stage": stage} for cid, stage in members]
        typer.echo(json.dumps({"segment": name, "members": rows}, ensure_ascii=False))
        return
    table = Table("customer", "stage", title=f"{name} (first {limit})", title_justify="left")
    for customer_id, stage in members:
        table.add_row(escape(customer_id), escape(stage or "-"))
    console.print(table)
    if not members:
        console.print("no customer is in this segment now", highlight=False)
