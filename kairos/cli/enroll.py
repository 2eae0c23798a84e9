"""``kairos enroll``: start a journey for an imported list of customers, once each."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from kairos.cli.base import app, console, err_console, fail, progress_bar
from kairos.language.plan import JourneyPlan
from kairos.language.problems import ProjectError
from kairos.language.project import Project, load_project
from kairos.runtime.client import Kairos
from kairos.runtime.config import ConfigError, Settings, load_settings
from kairos.store.database import StoreError
from kairos.tools.enroll import (
    DEFAULT_CONCURRENCY,
    DEFAULT_RATE,
    EnrollError,
    Enrollment,
    EnrollState,
    Row,
    RowResult,
    Status,
    read_rows,
    summarise,
)

_EPILOG = (
    "Example: [bold]kairos enroll nurture --csv leads.csv --rate 10[/]  "
    "(Ctrl-C stops; the same command resumes)"
)
_LABELS = {
    Status.enrolled: "enrolled",
    Status.already_enrolled: "already enrolled (running)",
    Status.already_entered: "already went through it (entry: once)",
    Status.rejected: "rejected",
    Status.failed: "failed (retried on the next run)",
}
_SHOWN_PROBLEMS = 50


@app.command("enroll", epilog=_EPILOG)
def enroll_command(
    journey: Annotated[str, typer.Argument(help="Journey name (journeys/<name>.yaml).")],
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="CSV with an `id` column and profile columns.")
    ] = None,
    jsonl_file: Annotated[
        Path | None, typer.Option("--jsonl", help='JSON Lines: one {"id": ...} per line.')
    ] = None,
    rate: Annotated[
        float, typer.Option(min=0.1, help="At most this many starts per second.")
    ] = DEFAULT_RATE,
    concurrency: Annotated[
        int, typer.Option(min=1, help="Starts in flight at once.")
    ] = DEFAULT_CONCURRENCY,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only validate the file; enroll nobody.")
    ] = False,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh", help="Ignore saved progress (running customers are still skipped)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Start a journey for every customer in a CSV or JSON Lines file, once each.

    Every row is validated first (customer id, profile attributes, types);
    rejected rows are listed with the reason. Running the same file again
    enrolls nobody twice: progress is kept under .kairos/enroll/, and the
    journey's entry rule decides in the customer store: customers already in
    the journey are skipped, and so, for entry: once journeys, is anyone who
    went through it before. An import never restarts anyone's run.
    """
    if (csv_file is None) == (jsonl_file is None):
        raise fail("give the customers with exactly one of --csv FILE or --jsonl FILE", code=2)
    source = csv_file or jsonl_file
    assert source is not None
    job = _prepare(journey, source, jsonl=jsonl_file is not None, fresh=fresh)
    earlier = len(job.state.done)
    results: list[RowResult] = []
    if dry_run:
        waiting = sum(1 for row in job.rows if row.line not in job.state.done)
        err_console.print(f"dry run: {waiting} valid rows would be enrolled", highlight=False)
    else:
        _enroll(job, results, rate=rate, concurrency=concurrency)
    _report(job, results, earlier, as_json=as_json)
    if any(r.status is Status.failed for r in results):
        raise typer.Exit(1)


@dataclass(frozen=True)
class _Job:
    """One enrollment as asked: where, which journey, the file's rows, saved progress."""

    settings: Settings
    project: Project
    plan: JourneyPlan
    source: Path
    rows: list[Row]
    rejected: list[RowResult]
    state: EnrollState


def _prepare(journey: str, source: Path, *, jsonl: bool, fresh: bool) -> _Job:
    try:
        settings = load_settings()
        project = load_project(
            settings.home, actions=settings.actions, cache=settings.project_cache
        )
    except ConfigError as err:
        raise fail(str(err), code=2) from None
    except ProjectError as err:
        raise fail(f"the journeys do not compile:\n{err}") from None
    plan = project.plans.get(journey)
    if plan is None:
        known = ", ".join(sorted(project.plans)) or "none"
        raise fail(f"no journey named {journey!r} (journeys: {known})")
    try:
        rows, rejected = read_rows(source, project.catalogue, jsonl=jsonl)
        state = EnrollState.open(settings.home, plan.name, source, fresh=fresh)
    except EnrollError as err:
        raise fail(str(err)) from None
    return _Job(settings, project, plan, source, rows, rejected, state)


def _enroll(job: _Job, results: list[RowResult], *, rate: float, concurrency: int) -> None:
    async def go() -> None:
        async with await Kairos.connect(job.settings, project=job.project) as kairos:
            enrollment = Enrollment(kairos, job.plan, job.state, rate=rate, concurrency=concurrency)
            pending = enrollment.pending(job.rows)
            if len(pending) < len(job.rows):
                err_console.print(
                    f"resuming: {len(job.rows) - len(pending)} rows were handled by an earlier "
                    f"run ({escape(str(job.state.path))})",
                    highlight=False,
                )
            if not pending:
                return
            await enrollment.ensure_worker()
            with progress_bar("enrolling", len(pending)) as advance:

                def heard(result: RowResult) -> None:
                    results.append(result)
                    advance()

                enrollment.on_result = heard
                await enrollment.run(pending)

    try:
        asyncio.run(go())
    except (EnrollError, StoreError) as err:
        raise fail(str(err)) from None
    except KeyboardInterrupt:
        raise fail(
            f"interrupted after {len(results)} rows; progress is saved in {job.state.path}. "
            "Run the same command again to resume.",
            code=130,
        ) from None


def _report(job: _Job, results: list[RowResult], earlier: int, *, as_json: bool) -> None:
    counts = summarise([*job.rejected, *results])
    failed = [r for r in results if r.status is Status.failed]
    if as_json:
        typer.echo(json.dumps(_json(job, counts, failed, earlier), indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{job.plan.name} ← {job.source.name}", title_justify="left")
    table.add_column("rows")
    table.add_column("count", justify="right")
    for status, label in _LABELS.items():
        table.add_row(label, str(counts[status.value]))
    if earlier:
        table.add_row("handled by an earlier run", str(earlier))
    console.print(table)
    _problems("rejected rows", job.rejected)
    _problems("failed rows", failed)


def _json(
    job: _Job, counts: dict[str, int], failed: list[RowResult], earlier: int
) -> dict[str, Any]:
    return {
        "journey": job.plan.name,
        "file": str(job.source),
        "state_file": str(job.state.path),
        "valid_rows": len(job.rows),
        "done_in_earlier_runs": earlier,
        "counts": counts,
        "rejected": [_row_json(r) for r in job.rejected],
        "failed": [_row_json(r) for r in failed],
    }


def _row_json(result: RowResult) -> dict[str, Any]:
    return {"line": result.line, "customer_id": result.customer_id, "reason": result.reason}


def _problems(title: str, results: list[RowResult]) -> None:
    if not results:
        return
    table = Table("line", "customer", "why", title=title, title_justify="left")
    for result in results[:_SHOWN_PROBLEMS]:
        table.add_row(str(result.line), escape(result.customer_id), escape(result.reason))
    console.print(table, style="red" if title.startswith("failed") else None)
    if len(results) > _SHOWN_PROBLEMS:
        console.print(f"... and {len(results) - _SHOWN_PROBLEMS} more (--json lists them all)")
