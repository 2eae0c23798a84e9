"""``kairos preview``: render one send step's message for one customer, exactly as it would go out.

Email shows the subject, the headers that carry the unsubscribe link, the preheader and the text
part, and writes the HTML to a file to open in a browser. SMS shows the body with the encoding
and segment count a carrier will bill.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from kairos.cli.base import app, console, err_console, fail
from kairos.language.catalogue import BUILTIN_EVENT, AttrType, Catalogue
from kairos.language.plan import Category, EventTrigger, JourneyPlan
from kairos.language.problems import suggestion
from kairos.language.yaml_source import load_data
from kairos.messages.models import EmailContent, SmsContent
from kairos.messages.rendering import RenderError, email_headers, render_preview
from kairos.messages.sms import analyse
from kairos.messages.unsubscribe import unsubscribe_url
from kairos.runtime.config import ConfigError, load_settings

_EPILOG = (
    "Example: [bold]kairos preview cart_abandonment first_reminder --customer "
    "tests/fixtures/preview/anna.yaml --event tests/fixtures/preview/cart.json --locale fi[/]"
)


@app.command("preview", epilog=_EPILOG)
def preview(
    journey: Annotated[str, typer.Argument(help="Journey name (its file stem in journeys/).")],
    step_id: Annotated[str, typer.Argument(help="Id of a send step in that journey.")],
    customer: Annotated[
        Path, typer.Option("--customer", "-c", help="Customer profile as a JSON or YAML file.")
    ],
    event: Annotated[
        Path | None,
        typer.Option("--event", "-e", help="Properties of the current event, JSON or YAML."),
    ] = None,
    locale: Annotated[
        str | None, typer.Option("--locale", "-l", help="Render in this locale (fi, de-DE).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write the HTML (default .kairos/preview)."),
    ] = None,
) -> None:
    """Render the message of a send step for one customer, as it would be sent.

    The locale is --locale, else the customer's locale attribute, else the journey's default;
    a missing locale falls back the same way it does when sending (fi-FI, then fi).
    """
    # Imported here so that other commands (and --help) do not pay for loading the compiler.
    from kairos.language.problems import ProjectError
    from kairos.language.project import load_project

    try:
        settings = load_settings()
        project = load_project(
            settings.home, actions=settings.actions, cache=settings.project_cache
        )
    except (ConfigError, ProjectError) as exc:
        raise fail(escape(str(exc))) from None
    plan = _plan(project.plans, journey)
    profile = _read_mapping(customer, "--customer")
    event_data = _read_mapping(event, "--event") if event else {}
    _warn_catalogue(project.catalogue, plan, profile, event_data)
    wanted = locale or _customer_locale(project.catalogue, profile)
    marketing = plan.category == Category.marketing
    url = None
    if marketing:  # as the send activity does: only marketing messages carry the link
        customer_id = str(profile.get("id") or "preview-customer")
        url = unsubscribe_url(
            settings.public_url, customer_id, secret=settings.secret, now=int(time.time())
        )
    try:
        content = render_preview(project.templates, plan, step_id, profile, event_data, wanted, url)
    except RenderError as exc:
        said = str(exc)
        if not event_data and isinstance(plan.trigger, EventTrigger):
            # Most messages read the event that started the run (a cart's total, an order).
            said += (
                f" — this journey starts on `{plan.trigger.event}`: give that event's properties"
                " with --event FILE (JSON or YAML), as its trigger would"
            )
        raise fail(escape(said)) from None
    console.print(
        f"[bold]{escape(plan.name)}[/] / [bold]{escape(step_id)}[/] "
        f"({plan.category.value}, locale {escape(content.locale)}"
        + (f", asked for {escape(wanted)}" if wanted and wanted != content.locale else "")
        + ")",
        highlight=False,
    )
    if isinstance(content, EmailContent):
        target = (out or settings.home / ".kairos" / "preview") / (
            f"{plan.name}-{step_id}.{content.locale}.html"
        )
        brand = project.catalogue.brand
        sender = f"{brand} <{settings.from_email}>" if brand else settings.from_email
        _show_email(content, {"From": sender, **email_headers(url)}, target)
    else:
        _show_sms(content)


def _plan(plans: dict[str, JourneyPlan], name: str) -> JourneyPlan:
    plan = plans.get(name)
    if plan is None:
        raise fail(escape(f"no journey `{name}` ({suggestion(name, plans, kind='journeys')})"))
    return plan


def _read_mapping(path: Path, option: str) -> dict[str, Any]:
    """A JSON or YAML file whose top level is a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(escape(f"{option} {path}: cannot read it ({exc.strerror or exc})")) from None
    try:
        data = load_data(text, str(path))
    except ValueError as exc:
        raise fail(escape(f"{option} {exc}")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise fail(escape(f"{option} {path}: expected a mapping of names to values at the top"))
    return {str(key): value for key, value in data.items()}


def _customer_locale(catalogue: Catalogue, profile: dict[str, Any]) -> str | None:
    attribute = catalogue.attribute_of_type(AttrType.locale) or "locale"
    value = profile.get(attribute)
    return value if isinstance(value, str) and value else None


def _warn_catalogue(
    catalogue: Catalogue, plan: JourneyPlan, profile: dict[str, Any], event: dict[str, Any]
) -> None:
    """Say (without stopping) where the files disagree with customer.yaml."""
    problems = catalogue.validate_profile(profile)
    if event and isinstance(plan.trigger, EventTrigger):
        properties = {k: v for k, v in event.items() if k not in BUILTIN_EVENT}
        problems += catalogue.validate_event(plan.trigger.event, properties)
    for problem in problems:
        err_console.print(f"[yellow]warning:[/] {escape(problem)}", highlight=False)


def _show_email(content: EmailContent, headers: dict[str, str], target: Path) -> None:
    """The sender, subject, unsubscribe headers and preheader; the text; the HTML to a file."""
    sender = headers.pop("From")
    console.print(f"[bold]From:[/]      {escape(sender)}", highlight=False)
    console.print(f"[bold]Subject:[/]   {escape(content.subject)}", highlight=False)
    for name, value in headers.items():
        console.print(f"[bold]{name}:[/] {escape(value)}", highlight=False, soft_wrap=True)
    if content.preheader:
        console.print(f"[bold]Preheader:[/] {escape(content.preheader)}", highlight=False)
    console.rule("text part", align="left")
    console.print(content.text, markup=False, highlight=False, soft_wrap=True)
    console.rule(align="left")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content.html, encoding="utf-8")
    except OSError as exc:
        raise fail(escape(f"cannot write the HTML to {target}: {exc.strerror or exc}")) from None
    console.print(f"HTML written to [bold]{escape(_shown(target))}[/]", highlight=False)


def _show_sms(content: SmsContent) -> None:
    analysis = analyse(content.body)
    console.print(content.body, markup=False, highlight=False, soft_wrap=True)
    console.rule(align="left")
    unit = "septets" if analysis.encoding == "GSM-7" else "UTF-16 units"
    segments = f"{content.segments} segment" + ("" if content.segments == 1 else "s")
    console.print(
        f"{content.encoding}, {segments}, {analysis.chars} characters ({analysis.units} {unit})",
        highlight=False,
    )
    if analysis.non_gsm:
        shown = " ".join(repr(ch) for ch in analysis.non_gsm)
        console.print(
            f"[yellow]UCS-2 because of:[/] {escape(shown)} (a GSM-7 message fits 160 "
            "characters, a UCS-2 one 70)",
            highlight=False,
        )


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
