"""Commands that work on customers: emit, identify, start, customer, runs, cancel, unsubscribe,
forget, and the worker.

Every argument is checked against the compiled project (customer ids, JSON, the catalogue,
journey names) before anything is connected to, so a typo is reported even when PostgreSQL and
Temporal are down. Each failure is one line and exit code 1 (2 for bad configuration).

Why over 600 lines: a dozen short commands that share the same argument checks and the same
connection (``# --- shared``); each is a screen or less.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table
from temporalio.service import RPCError

from kairos.cli.base import app, console, quiet_logs, warn
from kairos.cli.base import fail_text as fail
from kairos.language.problems import ProjectError
from kairos.language.project import Project, load_project
from kairos.messages.models import LedgerStatus
from kairos.runtime.client import (
    CONSENT_TOPICS,
    MAX_PROPERTIES_BYTES,
    CustomerNotFound,
    Kairos,
    KairosError,
    check_customer_id,
    check_journey,
    check_profile,
    checked_event,
)
from kairos.runtime.config import ConfigError, Settings, load_settings
from kairos.runtime.contract import journey_workflow_id
from kairos.store.database import StoreError
from kairos.store.ingest import Accepted
from kairos.store.runs import RunRecord
from kairos.store.support import CustomerRecord, Forgotten, MessageRecord

T = TypeVar("T")


_YES = ("yes", "y", "true", "on", "1")
_NO = ("no", "n", "false", "off", "0")


# --- shared ----------------------------------------------------------------------------------


def load() -> tuple[Settings, Project]:
    """Configuration and the compiled project, or the one-line reason they cannot be had."""
    try:
        settings = load_settings()
    except ConfigError as err:
        raise fail(str(err), code=2) from None
    try:
        return settings, load_project(
            settings.home, actions=settings.actions, cache=settings.project_cache
        )
    except ProjectError as err:
        raise fail(f"the journeys do not compile:\n{err}") from None


def with_client(
    settings: Settings, project: Project, action: Callable[[Kairos], Awaitable[T]]
) -> T:
    """Run ``action`` with a client on the customer store (Temporal connects when needed)."""
    quiet_logs()

    async def go() -> T:
        async with await Kairos.connect(settings, project=project) as kairos:
            return await action(kairos)

    try:
        return asyncio.run(go())
    except (StoreError, KairosError) as err:
        raise fail(str(err)) from None


# The largest --data @file read: the properties limit with room for indentation and whitespace.
_MAX_JSON_FILE = 8 * MAX_PROPERTIES_BYTES


def _json_arg(raw: str | None, what: str) -> dict[str, Any]:
    if not raw:
        return {}
    text = raw
    if raw.startswith("@"):
        path = Path(raw[1:])
        if not path.is_file():
            raise fail(f"{what}: no file {path}")
        # Read no more than could ever be accepted: an event holds at most 32 KB of properties,
        # so a file far larger is a mistake, not something to load into memory.
        with path.open("rb") as handle:
            data = handle.read(_MAX_JSON_FILE + 1)
        if len(data) > _MAX_JSON_FILE:
            raise fail(
                f"{what}: {path} is larger than {_MAX_JSON_FILE // 1024} KB; one event's data "
                f"holds at most {MAX_PROPERTIES_BYTES // 1024} KB of JSON"
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise fail(f"{what}: {path} is not UTF-8 text (byte {err.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise fail(f"{what} is not valid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(value, dict):
        raise fail(f"{what} must be a JSON object such as '{{\"cart_total\": 59.9}}'")
    return value


def _consent_arg(raw: str | None) -> dict[str, bool]:
    """``marketing=yes,sms=no`` as topics granted or withdrawn."""
    if not raw:
        return {}
    consent: dict[str, bool] = {}
    for part in raw.split(","):
        topic, _, value = (s.strip().lower() for s in part.partition("="))
        if topic not in CONSENT_TOPICS or value not in (*_YES, *_NO):
            raise fail(
                f"--consent {raw!r}: expected TOPIC=yes or TOPIC=no pairs such as "
                "marketing=yes,sms=no (topics: email, sms, marketing)"
            )
        consent[topic] = value in _YES
    return consent


def _checked(check: Callable[[], T]) -> T:
    try:
        return check()
    except KairosError as err:
        raise fail(str(err)) from None


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else "-"


def _print_accepted(accepted: Accepted) -> None:
    """What an accepted event did: runs started and woken, and whether Temporal has the calls."""
    customer = accepted.customer.id
    for journey, run_no in accepted.started.items():
        workflow = journey_workflow_id(journey, customer, run_no)
        console.print(f"  started {journey}: run {run_no} ({escape(workflow)})", highlight=False)
    for journey, run_no in accepted.signalled:
        workflow = journey_workflow_id(journey, customer, run_no)
        console.print(f"  woke {journey} run {run_no} ({escape(workflow)})", highlight=False)
    if not accepted.started and not accepted.signalled and not accepted.duplicate:
        console.print("  no journey started or woken", highlight=False)
    for problem in accepted.problems:
        console.print(f"  [yellow]warning:[/] {escape(problem)}", highlight=False)
    if accepted.pending:
        console.print(
            "[yellow]Temporal unreachable: a worker will make the calls[/] "
            f"({accepted.pending} waiting in the customer store)",
            highlight=False,
        )


# --- events in -------------------------------------------------------------------------------


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
    """Send an event for a customer, and say which journeys it started or woke.

    Example: kairos emit c-42 signed_up --data '{"email": "ada@example.com", "marketing_opt_in": true}'
    """  # noqa: E501
    properties = _json_arg(data, "--data")
    settings, project = load()
    checked = _checked(
        lambda: checked_event(project.catalogue, customer, event, properties, event_id=event_id)
    )
    accepted = with_client(
        settings,
        project,
        lambda k: k.record(
            customer, event, properties, event_id=checked.id, timestamp=checked.timestamp
        ),
    )
    if accepted.duplicate:
        console.print(
            f"[yellow]already accepted[/]: event {escape(accepted.event_id)} for "
            f"{escape(customer)} was handled before; nothing changed",
            highlight=False,
        )
        return
    console.print(
        f"[green]accepted[/] {event} for {escape(customer)} (event id {escape(accepted.event_id)})",
        highlight=False,
    )
    _print_accepted(accepted)


@app.command("identify")
def identify(
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Profile attributes as JSON, or @file.json."),
    ] = None,
    consent: Annotated[
        str | None,
        typer.Option(
            help="Consent given or withdrawn: marketing=yes,sms=no (topics: email, sms, "
            "marketing). Recorded with --source as proof."
        ),
    ] = None,
    source: Annotated[
        str,
        typer.Option(help="Who or what gave the consent: 'phone call, ticket 4711'."),
    ] = "kairos identify",
) -> None:
    """Create or update a customer's profile, and record consent with its source.

    Example: kairos identify c-42 --data '{"locale": "fi"}' --consent marketing=yes --source 'phone call, ticket 4711'
    """  # noqa: E501
    attributes = _json_arg(data, "--data")
    granted = _consent_arg(consent)
    if not attributes and not granted:
        raise fail("nothing to record: give --data with profile attributes, --consent, or both")
    settings, project = load()
    _checked(lambda: check_profile(project.catalogue, customer, attributes, granted))
    accepted = with_client(
        settings,
        project,
        lambda k: k.identify(customer, attributes, consent=granted or None, source=source),
    )
    changed = ", ".join(sorted(attributes)) or "no attributes"
    console.print(f"[green]updated[/] {escape(customer)}: {changed}", highlight=False)
    if granted:
        topics = ", ".join(f"{t} {'granted' if g else 'withdrawn'}" for t, g in granted.items())
        console.print(f"  consent: {topics} (source: {escape(source)})", highlight=False)
    _print_accepted(accepted)


@app.command("start")
def start(
    journey: Annotated[str, typer.Argument(help="Journey name (journeys/<name>.yaml).")],
    customer: Annotated[str, typer.Argument(help="Customer id.")],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Profile attributes as JSON, or @file.json.")
    ] = None,
) -> None:
    """Start a journey for a customer directly, under its entry rule.

    Example: kairos start nurture c-42
    """
    profile = _json_arg(data, "--data")
    settings, project = load()
    _checked(lambda: check_journey(project, journey))
    _checked(lambda: check_profile(project.catalogue, customer, profile))

    async def enter(kairos: Kairos) -> Accepted:
        if not profile:
            # A typo'd id would become a new customer with an empty profile: with nothing to
            # create them from, only a known customer can be started.
            try:
                await kairos.customer(customer)
            except CustomerNotFound as err:
                hint = "(to create them, give --data with a profile)"
                raise CustomerNotFound(f"{err} {hint}") from None
        return await kairos.enter(journey, customer, profile)

    accepted = with_client(settings, project, enter)
    run_no = accepted.started[journey]
    console.print(
        f"[green]started[/] {journey} for {escape(customer)}: run {run_no} "
        f"({escape(journey_workflow_id(journey, customer, run_no))})",
        highlight=False,
    )
    if accepted.pending:
        console.print(
            "[yellow]Temporal unreachable: a worker will make the calls[/]", highlight=False
        )


# --- support ---------------------------------------------------------------------------------


@app.command("customer")
def customer(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a customer: profile, stage, consent and its proof, runs, messages and why.

    Reads the customer store. Consent shows each topic's current value with the change that
    set it (source and time) and the full history; runs show each run's workflow id, to
    open in the Temporal UI; recent messages say why each was or was not sent.

    Example: kairos customer c-42
    """
    settings, project = load()
    _checked(lambda: check_customer_id(customer_id))

    async def look(kairos: Kairos) -> tuple[CustomerRecord, dict[str, str]]:
        record = await kairos.customer(customer_id)
        return record, await kairos.whereabouts(record.runs)

    record, where = with_client(settings, project, look)
    if as_json:
        shown = customer_json(record)
        for run in shown["runs"]:
            run["now"] = where.get(run["workflow_id"])
        typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    print_customer(record, where)


def _consent_now(record: CustomerRecord) -> list[tuple[str, bool, str]]:
    """Each topic: granted or not, and why (the change that set it, or the default)."""
    latest = {change.topic: change for change in record.consent_history}
    rows = []
    for topic in CONSENT_TOPICS:
        granted = bool(getattr(record.consent, topic))
        change = latest.get(topic)
        if change is not None:
            why = f"since {_when(change.at)}, source: {change.source}"
        elif granted:
            why = "default: email needs no consent for transactional messages"
        else:
            why = "never given (opt-in)"
        rows.append((topic, granted, why))
    return rows


def _table(title: str | None, *columns: str) -> Table:
    # No borders: the output reads as plain columns and pastes into a ticket unchanged.
    return Table(*columns, title=title, title_justify="left", box=None, header_style="bold")


def print_customer(record: CustomerRecord, where: Mapping[str, str]) -> None:
    console.print(
        f"[bold]customer {escape(record.id)}[/]  stage: {escape(record.stage or '-')}  "
        f"known since {_when(record.created_at)}, {record.events} events",
        highlight=False,
    )
    consent = _table("consent", "topic", "granted", "why")
    for topic, granted, why in _consent_now(record):
        consent.add_row(topic, "yes" if granted else "no", escape(why))
    console.print(consent)
    if record.consent_history:
        history = _table("consent history", "at", "topic", "change", "source")
        for change in record.consent_history:
            verb = "granted" if change.granted else "withdrawn"
            history.add_row(_when(change.at), change.topic, verb, escape(change.source))
        console.print(history)
    profile = _table("profile", "attribute", "value")
    for key, value in sorted(record.profile.items()):
        profile.add_row(key, escape(_shown(value)))
    console.print(profile)
    runs = _table("runs", "journey", "run", "status", "started", "step: waiting for",
                  "workflow id")  # fmt: skip
    for run in record.runs:
        now = where.get(run.workflow_id, "?" if run.ended_at is None else "-")
        runs.add_row(run.journey, str(run.run_no), run.status, _when(run.started_at),
                     escape(now), escape(run.workflow_id))  # fmt: skip
    console.print(runs)
    for run in record.runs:
        # What the run could not evaluate or render, and went on without (docs/authoring.md).
        for problem in run.problems:
            console.print(
                f"  [yellow]problem[/] in {run.journey} run {run.run_no}: {escape(problem)}",
                highlight=False,
            )
    messages = _table("recent messages", "at", "journey", "step", "channel", "status", "why")
    for message in record.messages:
        messages.add_row(_when(message.sent_at or message.decided_at), message.journey,
                         message.step, message.channel.value, message.status,
                         escape(_why(message)))  # fmt: skip
    console.print(messages)
    if record.replies:
        # SMS replies that were no keyword: someone should read them (docs/support.md).
        replies = _table("sms replies (not keywords: read and answer them)", "at", "wrote")
        for at, body in record.replies:
            replies.add_row(_when(at), escape(body))
        console.print(replies)


def _shown(value: Any) -> str:
    """A profile value as support reads it: a score of 50, not 50.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _why(message: MessageRecord) -> str:
    if message.reason:
        return message.reason
    if message.status == LedgerStatus.sent and message.provider_id:
        return f"provider id {message.provider_id}"
    if message.defer_until:
        return f"until {_when(message.defer_until)}"
    return ""


def customer_json(record: CustomerRecord) -> dict[str, Any]:
    """The customer record as JSON: what ``kairos customer --json`` prints."""
    return {
        "id": record.id,
        "stage": record.stage,
        "profile": record.profile,
        "consent": {
            topic: {"granted": granted, "why": why} for topic, granted, why in _consent_now(record)
        },
        "consent_history": [_plain(asdict(change)) for change in record.consent_history],
        "runs": [run_json(run) for run in record.runs],
        "messages": [
            _plain(asdict(message) | {"channel": message.channel.value})
            for message in record.messages
        ],
        "events": record.events,
        "sms_replies": [{"at": at.isoformat(), "body": body} for at, body in record.replies],
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


def run_json(run: RunRecord) -> dict[str, Any]:
    return _plain(asdict(run) | {"status": run.status, "workflow_id": run.workflow_id})


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


@app.command("runs")
def runs(
    journey: Annotated[str | None, typer.Option("--journey", help="Only this journey.")] = None,
    customer_id: Annotated[
        str | None, typer.Option("--customer", help="Only this customer.")
    ] = None,
    running: Annotated[bool, typer.Option("--running", help="Only runs still going.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List journey runs from the customer store, newest first.

    Example: kairos runs --journey nurture --running
    """
    settings, project = load()
    if journey is not None:
        _checked(lambda: check_journey(project, journey))
    if customer_id is not None:
        _checked(lambda: check_customer_id(customer_id))
    found = with_client(
        settings,
        project,
        lambda k: k.runs(customer_id, journey, running=running, limit=limit),
    )
    if as_json:
        typer.echo(json.dumps([run_json(r) for r in found], indent=2, ensure_ascii=False))
        return
    if not found:
        console.print("no runs", highlight=False)
        return
    table = _table(None, "journey", "run", "customer", "status", "started", "ended", "workflow id")
    for run in found:
        table.add_row(run.journey, str(run.run_no), escape(run.customer_id), run.status,
                      _when(run.started_at), _when(run.ended_at),
                      escape(run.workflow_id))  # fmt: skip
    console.print(table)


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _temporal_target(settings: Settings) -> str:
    return str(settings.temporal.get("target_host", "localhost:7233"))


@app.command("cancel")
def cancel(
    journey: Annotated[str, typer.Argument(help="Journey name.")],
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
) -> None:
    """Cancel a customer's running journey, recorded as cancelled.

    Use this rather than terminating the run in the Temporal UI, which skips its bookkeeping.

    Example: kairos cancel nurture c-42
    """
    settings, project = load()
    _checked(lambda: check_journey(project, journey))
    _checked(lambda: check_customer_id(customer_id))

    async def go(kairos: Kairos) -> tuple[RunRecord, str]:
        try:
            return await kairos.cancel(journey, customer_id), ""
        except (RuntimeError, RPCError) as err:
            # The store has it cancelled; only the workflow did not hear it.
            latest = await kairos.runs(customer_id, journey, limit=1)
            return latest[0], _first_line(err)

    run, unreachable = with_client(settings, project, go)
    console.print(
        f"[yellow]cancelled[/] {journey} run {run.run_no} for {escape(customer_id)} "
        f"({escape(run.workflow_id)})",
        highlight=False,
    )
    if unreachable:
        # The store's cancellation stands (the run sends nothing more); only its timers go on.
        warn(
            f"Temporal at {_temporal_target(settings)} did not take the cancellation "
            f"({unreachable}): the run sends nothing more, but cancel its workflow "
            f"{run.workflow_id} in the Temporal UI once Temporal is back"
        )


@app.command("unsubscribe")
def unsubscribe(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    topic: Annotated[str, typer.Option(help="marketing, email, sms or all.")] = "marketing",
    resubscribe: Annotated[
        bool, typer.Option("--resubscribe", help="Opt back in instead (only on their request).")
    ] = False,
    source: Annotated[
        str, typer.Option(help="Who asked, recorded as proof: 'email to support, ticket 4711'.")
    ] = "kairos unsubscribe",
) -> None:
    """Opt a known customer out of a category or channel (or back in).

    Example: kairos unsubscribe c-42 --topic sms
    """
    if topic not in (*CONSENT_TOPICS, "all"):
        raise fail(f"--topic {topic!r}: use one of email, sms, marketing, all")
    settings, project = load()
    _checked(lambda: check_customer_id(customer_id))
    with_client(
        settings,
        project,
        lambda k: k.unsubscribe(customer_id, topic, granted=resubscribe, source=source),
    )
    verb = "resubscribed" if resubscribe else "unsubscribed"
    console.print(
        f"[green]{verb}[/] {escape(customer_id)} ({topic}; source: {escape(source)})",
        highlight=False,
    )


@app.command("forget")
def forget(
    customer_id: Annotated[str, typer.Argument(help="Customer id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a customer: their rows go, their runs are cancelled.

    Addresses whose consent was withdrawn stay suppressed (as keyed hashes without the
    customer id), so a later sign-up with them is not messaged against the opt-out.

    Example: kairos forget c-42 --yes
    """
    settings, project = load()
    _checked(lambda: check_customer_id(customer_id))
    if not yes and not typer.confirm(f"Erase customer {customer_id} and end all their runs?"):
        raise typer.Exit(1)

    async def go(kairos: Kairos) -> tuple[Forgotten, str]:
        forgotten = await kairos.erase(customer_id)
        try:
            for run in (*forgotten.open_runs, *forgotten.ended_runs):
                await kairos.end_forgotten_run(run)
        except (RuntimeError, RPCError) as err:
            return forgotten, _first_line(err)
        return forgotten, ""

    forgotten, unreachable = with_client(settings, project, go)
    print_forgotten(forgotten)
    if unreachable:
        warn(
            f"Temporal at {_temporal_target(settings)} did not take the termination of "
            f"{customer_id}'s runs ({unreachable}): they send nothing more (the customer is "
            "gone), but terminate the workflows above in the Temporal UI once Temporal is back"
        )


def print_forgotten(forgotten: Forgotten) -> None:
    removed = ", ".join(f"{table} {n}" for table, n in forgotten.removed.items())
    console.print(
        f"[green]forgotten[/] {escape(forgotten.customer_id)}: deleted the customer with their "
        f"profile and consent; rows per table: {removed}",
        highlight=False,
    )
    if forgotten.removed.get("data_keys"):
        console.print(
            "  deleted their data key: their payloads in Temporal histories (open, closed or "
            "archived) can no longer be decrypted by anyone",
            highlight=False,
        )
    console.print(f"  deleted {forgotten.outbox_messages} outbox messages", highlight=False)
    if forgotten.suppressed:
        console.print(
            f"  kept suppressed (hashed addresses, no customer id): "
            f"{', '.join(forgotten.suppressed)}",
            highlight=False,
        )
    else:
        console.print("  no suppression kept: no consent had been withdrawn", highlight=False)
    if forgotten.open_runs:
        for run in forgotten.open_runs:
            console.print(
                f"  terminated {run.journey} run {run.run_no} ({escape(run.workflow_id)})",
                highlight=False,
            )
    else:
        console.print("  no run was going", highlight=False)


@app.command("worker")
def worker() -> None:
    """Run a worker: the journeys, their activities and the dispatch sweeper.

    It connects to the configured Temporal (TEMPORAL_ADDRESS, ...) and customer store
    (KAIROS_DATABASE_URL, else the embedded PostgreSQL), and refuses to start on a database
    schema it does not know.

    Example: TEMPORAL_ADDRESS=temporal.internal:7233 kairos worker
    """
    from kairos import worker as worker_module

    worker_module.main()
