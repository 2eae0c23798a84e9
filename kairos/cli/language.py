"""``kairos validate``, ``kairos schema`` and ``kairos graph``: the journey language's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from kairos.cli.base import app, console, err_console, fail
from kairos.language.actions_catalogue import ActionModuleError, load_action_modules
from kairos.language.compiler import check_project
from kairos.language.graph import to_mermaid
from kairos.language.problems import Problem, Report, plural, suggestion
from kairos.language.project_files import CATALOGUE_FILE, display_path
from kairos.language.schema_export import customer_json_schema, journey_json_schema
from kairos.language.segments import SEGMENTS_DIR
from kairos.runtime.config import ConfigError, load_settings

_VALIDATE_EPILOG = (
    "Examples: [bold]kairos validate[/] (every journey) · "
    "[bold]kairos validate journeys/welcome.yaml[/] (one file). "
    "Exit code 0 when there are no errors (warnings allowed), 1 otherwise."
)
_SCHEMA_EPILOG = (
    "Example: [bold]kairos schema[/] writes schema/journey.schema.json and "
    "schema/customer.schema.json, which the first line of each journey file points editors at."
)
_GRAPH_EPILOG = (
    "Example: [bold]kairos graph cart_abandonment > cart.mmd[/], then paste it into a Mermaid "
    "viewer, or into a ```mermaid block on GitHub."
)


def _home() -> Path:
    """The project home, with the actions KAIROS_ACTIONS adds declared (as a worker has them)."""
    try:
        settings = load_settings(temporal=False)  # none of these commands connects
        load_action_modules(settings.actions)
    except ConfigError as err:
        lines = "\n".join(f"  - {p}" for p in err.problems)
        raise fail(escape(f"invalid configuration:\n{lines}"), 2) from None
    except ActionModuleError as err:
        raise fail(escape(str(err))) from None
    return settings.home


@app.command("validate", epilog=_VALIDATE_EPILOG)
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Journey or segment files, or folders, to check (default: journeys/ and "
            "segments/).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check journeys, segments, templates and customer.yaml; report every problem at once."""
    home = _home()
    project, report = check_project(home, paths or None)
    _print_report(report)
    files = _checked_files(home, paths)
    if report.has_errors:
        console.print(Text(f"✗ {report.summary()} in {files}", style="bold red"))
        raise typer.Exit(1)
    plans = len(project.plans) if project else 0
    segments = len(project.segments) if project else 0
    kinds = [plural(plans, "journey")] if plans or not segments else []
    checked = " and ".join([*kinds, *([plural(segments, "segment")] if segments else [])])
    warnings = f" ({report.summary()})" if report.problems else ""
    console.print(Text(f"✓ {checked} valid{warnings}", style="bold green"))


def _checked_files(home: Path, paths: list[Path] | None) -> str:
    if not paths:
        journeys = f"{display_path(home / 'journeys', home)}/"
        if (home / SEGMENTS_DIR).is_dir():
            return f"{journeys} and {SEGMENTS_DIR}/"
        return journeys
    return ", ".join(display_path(p, home) for p in paths)


def _print_report(report: Report) -> None:
    """Each problem: its headline, the source line and a caret; coloured on a terminal."""
    for problem in report.sorted():
        console.print(_headline(problem), soft_wrap=True)
        snippet = report.snippet(problem)
        if snippet:
            console.print(Text(snippet, style="dim"), soft_wrap=True)
        if problem.note:
            console.print(Text(f"    note: {problem.note}", style="dim"), soft_wrap=True)


def _headline(problem: Problem) -> Text:
    colour = "red" if problem.severity == "error" else "yellow"
    text = Text(problem.location, style="bold")
    text.append(": ")
    if problem.severity == "warning":
        text.append("warning", style=f"bold {colour}")
        text.append(": ")
    if problem.path:
        text.append(problem.path, style=colour)
        text.append(": ")
    text.append(problem.message)
    if problem.hint:
        text.append(f" ({problem.hint})", style="cyan")
    return text


@app.command("schema", epilog=_SCHEMA_EPILOG)
def schema(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the journey schema (default: schema/journey.schema.json in the "
            "project); customer.schema.json is written beside it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write the JSON Schemas that give editors completion and checks for journeys."""
    target = out if out is not None else _home() / "schema" / "journey.schema.json"
    customer = target.with_name("customer.schema.json")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_json(journey_json_schema()), encoding="utf-8")
        customer.write_text(_json(customer_json_schema()), encoding="utf-8")
    except OSError as err:
        raise fail(escape(f"cannot write {err.filename}: {err.strerror}")) from None
    home = target.parent.parent
    shown = f"{display_path(target, home)} and {display_path(customer, home)}"
    console.print(f"wrote {shown}", highlight=False, soft_wrap=True, markup=False)


def _json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


@app.command("graph", epilog=_GRAPH_EPILOG)
def graph(
    journey: Annotated[str, typer.Argument(help="A journey name, or the path of its file.")],
) -> None:
    """Print a journey as a Mermaid flowchart: steps, branches, waits and exits."""
    home = _home()
    path = _journey_path(home, journey)
    project, report = check_project(home, [path])
    if project is None:
        _print_report(report)
        err_console.print(Text(f"✗ {report.summary()}", style="bold red"))
        raise typer.Exit(1)
    plan = next(iter(project.plans.values()))
    console.print(to_mermaid(plan), end="", markup=False, highlight=False, soft_wrap=True)


def _journey_path(home: Path, journey: str) -> Path:
    candidate = Path(journey)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return candidate
    path = home / "journeys" / f"{journey}.yaml"
    if path.is_file() and journey != Path(CATALOGUE_FILE).stem:
        return path
    names = [p.stem for p in (home / "journeys").glob("*.yaml") if p.name != CATALOGUE_FILE]
    raise fail(escape(f"no journey `{journey}` ({suggestion(journey, names, kind='journeys')})"))
