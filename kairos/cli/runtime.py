"""Commands that talk to a running Kairos: emit, identify, start, customer, runs, cancel,
unsubscribe, forget, worker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from kairos.cli.app import app, console, fail
from kairos.client import Kairos, KairosError
from kairos.config import ConfigError, load_settings
from kairos.problems import ProjectError

T = TypeVar("T")


def _with_client(action: Callable[[Kairos], Awaitable[T]]) -> T:
    """Run ``action`` with a connected client, turning every user mistake into a clear line."""
    try:
        settings = load_settings()
    except ConfigError as err:
        raise fail(str(err), code=2) from None

    async def go() -> T:
        try:
            kairos = await Kairos.connect(settings)
        except RuntimeError as err:
            target = settings.temporal.get("target_host", "localhost:7233")
            raise fail(
                f"cannot reach Temporal at {target} ({err}). Is `make dev` running, "
                "or TEMPORAL_ADDRESS set?"
            ) from None
        return await action(kairos)

    try:
        return asyncio.run(go())
    except ProjectError as err:
        raise fail(f"the journeys do not compile:\n{err}") from None
    except KairosError as err:
        raise fail(str(err)) from None


def _json_arg(raw: str | None, what: str) -> dict[str, Any]:
    if not raw:
        return {}
    text = raw
    if raw.startswith("@"):
        path = Path(raw[1:])
        if not path.is_file():
            raise fail(f"{what}: no file {path}")
        text = path.read_text(encoding="utf-8")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise fail(f"{what} is not valid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(value, dict):
        raise fail(f"{what} must be a JSON object such as '{{\"cart_total\": 59.9}}'")
    return value


@app.command("emit")
def emit(
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    event: Annotated[str, typer.Argument(help="Event name from journeys/customer.yaml.")],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Properties as JSON, or @file.json.")
    ] = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="Event id; the same id is handled once.")
    ] = None,
) -> None:
    """Send an event for a customer.

    Example: kairos emit c-42 signed_up --data '{"email": "ada@example.com", "first_name": "Ada"}'
    """
    properties = _json_arg(data, "--data")
    sent = _with_client(lambda k: k.emit(customer, event, properties, event_id=event_id))
    console.print(f"[green]accepted[/] {event} for {customer} (event id {sent})")


@app.command("identify")
def identify(
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="Profile attributes as JSON, or @file.json.")
    ],
) -> None:
    """Create or update a customer's profile.

    Example: kairos identify c-42 --data '{"timezone": "Europe/Helsinki", "locale": "fi"}'
    """
    attributes = _json_arg(data, "--data")
    _with_client(lambda k: k.identify(customer, attributes))
    console.print(f"[green]updated[/] profile of {customer}")


@app.command("start")
def start(
    journey: Annotated[str, typer.Argument(help="Journey name (journeys/<name>.yaml).")],
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Profile attributes as JSON, or @file.json.")
    ] = None,
) -> None:
    """Start a journey for a customer directly.

    Example: kairos start welcome c-42 --data '{"email": "ada@example.com", "first_name": "Ada"}'
    """
    profile = _json_arg(data, "--data")
    run_id = _with_client(lambda k: k.start(journey, customer, profile))
    console.print(f"[green]started[/] {journey} for {customer} (run {run_id})")


@app.command("customer")
def customer(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a customer: profile, stage, consent, runs, recent messages and why.

    Example: kairos customer c-42
    """

    async def load(k: Kairos) -> tuple[Any, list[Any]]:
        return await k.customer(customer_id), await k.runs(customer_id=customer_id, limit=20)

    view, runs = _with_client(load)
    if as_json:
        data = view.model_dump(mode="json")
        data["runs"] = [{"journey": r.journey, "status": r.status, "workflow_id": r.workflow_id,
                         "started": r.started.isoformat()} for r in runs]  # fmt: skip
        console.print_json(json.dumps(data))
        return
    console.print(f"[bold]customer {view.customer_id}[/]  stage: {view.stage or '-'}")
    consent = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in view.consent.model_dump().items())
    console.print(f"consent: {consent}")
    profile = Table("attribute", "value", title="profile")
    for key, value in sorted(view.profile.items()):
        if key not in ("id", "consent", "stage"):
            profile.add_row(key, str(value))
    console.print(profile)
    table = Table("journey", "status", "started", title="runs")
    for run in runs:
        table.add_row(run.journey, run.status, run.started.strftime("%Y-%m-%d %H:%M"))
    console.print(table)
    ledger = Table("at", "journey", "step", "channel", "status", "why", title="recent messages")
    for entry in view.ledger[-20:]:
        ledger.add_row(entry.at.strftime("%Y-%m-%d %H:%M"), entry.journey, entry.step,
                       entry.channel.value, entry.status, entry.reason)  # fmt: skip
    console.print(ledger)


@app.command("runs")
def runs(
    journey: Annotated[str | None, typer.Option("--journey", help="Only this journey.")] = None,
    customer_id: Annotated[
        str | None, typer.Option("--customer", help="Only this customer.")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="running, completed, canceled, ...")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """List journey runs from Temporal's visibility.

    Example: kairos runs --journey cart_abandonment --status running
    """
    found = _with_client(lambda k: k.runs(customer_id, journey, status, limit))
    table = Table("journey", "customer", "status", "started", "workflow id")
    for run in found:
        table.add_row(run.journey, run.workflow_id.rsplit(":", 1)[-1], run.status,
                      run.started.strftime("%Y-%m-%d %H:%M"), run.workflow_id)  # fmt: skip
    console.print(table)


@app.command("cancel")
def cancel(
    journey: Annotated[str, typer.Argument(help="Journey name.")],
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
) -> None:
    """Cancel a customer's running journey.

    Example: kairos cancel cart_abandonment c-42
    """
    _with_client(lambda k: k.cancel(journey, customer_id))
    console.print(f"[yellow]cancelled[/] {journey} for {customer_id}")


@app.command("unsubscribe")
def unsubscribe(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    topic: Annotated[str, typer.Option(help="marketing, email, sms or all.")] = "marketing",
    resubscribe: Annotated[
        bool, typer.Option("--resubscribe", help="Opt back in instead.")
    ] = False,
) -> None:
    """Opt a customer out of a category or channel (or back in).

    Example: kairos unsubscribe c-42 --topic sms
    """
    _with_client(lambda k: k.unsubscribe(customer_id, topic, granted=resubscribe, source="cli"))
    verb = "resubscribed" if resubscribe else "unsubscribed"
    console.print(f"[green]{verb}[/] {customer_id} ({topic})")


@app.command("forget")
def forget(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Forget a customer: end all their runs and drop their personal data.

    Example: kairos forget c-42 --yes
    """
    if not yes and not typer.confirm(f"Forget customer {customer_id} and end all their runs?"):
        raise typer.Exit(1)
    _with_client(lambda k: k.forget(customer_id))
    console.print(f"[green]forgotten[/] {customer_id}")


@app.command("worker")
def worker() -> None:
    """Run a worker against the configured Temporal (TEMPORAL_ADDRESS, ...).

    Example: TEMPORAL_ADDRESS=temporal.internal:7233 kairos worker
    """
    import worker as worker_module

    worker_module.main()
