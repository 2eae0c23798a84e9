"""Runs as the store knows them: listing, ending and cancelling.

A run ends in the store when it says so itself (its last activity), when support cancels it,
when a restart replaces it, or when a signal finds its workflow gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kairos.language.plan import StepKind
from kairos.runtime.contract import RunOutcome, StepRecord, journey_workflow_id
from kairos.store.database import Connection, Database


@dataclass(frozen=True)
class RunRecord:
    """One run of a journey, as the store knows it."""

    journey: str
    run_no: int
    customer_id: str
    plan_version: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def workflow_id(self) -> str:
        return journey_workflow_id(self.journey, self.customer_id, self.run_no)

    @property
    def status(self) -> str:
        return "running" if self.ended_at is None else (self.outcome or "ended")


async def runs_of(
    database: Database,
    *,
    customer_id: str | None = None,
    journey: str | None = None,
    open_only: bool = False,
    limit: int = 100,
) -> list[RunRecord]:
    """Runs, newest first, filtered by customer, journey and whether they are open."""
    clauses, params = ["TRUE"], []
    if customer_id is not None:
        clauses.append("customer_id = %s")
        params.append(customer_id)
    if journey is not None:
        clauses.append("journey = %s")
        params.append(journey)
    if open_only:
        clauses.append("ended_at IS NULL")
    async with database.connection() as conn:
        return await select_runs(conn, " AND ".join(clauses), tuple(params), limit)


async def select_runs(
    conn: Connection, where: str, params: tuple[Any, ...], limit: int
) -> list[RunRecord]:
    cursor = await conn.execute(
        "SELECT journey, run_no, customer_id, plan_version, started_at, ended_at, outcome,"
        " problems"
        f" FROM runs WHERE {where} ORDER BY started_at DESC, run_no DESC LIMIT %s",
        (*params, limit),
    )
    return [RunRecord(**r) for r in await cursor.fetchall()]


async def cancel_open_run(database: Database, customer_id: str, journey: str) -> RunRecord | None:
    """Mark the customer's open run of ``journey`` cancelled; None when none is open.

    The caller then cancels the workflow; a send the run has not handed to the provider yet
    sees the cancellation in the send transaction.
    """
    async with database.transaction() as conn:
        cursor = await conn.execute(
            "UPDATE runs SET ended_at = now(), outcome = %s WHERE customer_id = %s"
            " AND journey = %s AND ended_at IS NULL RETURNING journey, run_no, customer_id,"
            " plan_version, started_at, ended_at, outcome, problems",
            (RunOutcome.cancelled, customer_id, journey),
        )
        row = await cursor.fetchone()
        if row is None:
            return None
        await conn.execute(
            "UPDATE journey_entries SET open_run = NULL WHERE customer_id = %s AND journey = %s",
            (customer_id, journey),
        )
        return RunRecord(**row)


async def end_run(
    conn: Connection,
    customer_id: str,
    journey: str,
    run_no: int,
    outcome: str,
    *,
    final: bool,
    goal_event: str | None = None,
) -> None:
    """Mark a run ended and free its entry.

    ``final`` is the run's own word on its outcome and wins over what the store assumed
    (``restarted`` becomes ``converted`` when the restarting event was also the run's goal),
    except over ``cancelled``: support's cancellation stands even if the run got to its end
    before the workflow heard of it (its sends were cancelled in the store). Otherwise an
    outcome is only recorded for a run not yet known to have ended.
    """
    await conn.execute(
        "UPDATE runs SET ended_at = coalesce(ended_at, now()),"
        " outcome = CASE WHEN outcome = %s THEN outcome ELSE %s END,"
        " goal_event = coalesce(%s, goal_event)"
        " WHERE customer_id = %s AND journey = %s AND run_no = %s"
        + ("" if final else " AND ended_at IS NULL"),
        (RunOutcome.cancelled, outcome, goal_event, customer_id, journey, run_no),
    )
    await conn.execute(
        "UPDATE journey_entries SET open_run = NULL WHERE customer_id = %s AND journey = %s"
        " AND open_run = %s",
        (customer_id, journey, run_no),
    )


async def note_problems(
    conn: Connection, customer_id: str, journey: str, run_no: int, problems: list[str]
) -> None:
    """Add what a run could not evaluate to its record (each text once)."""
    await conn.execute(
        "UPDATE runs SET problems = ARRAY(SELECT p FROM unnest(problems || %s::text[])"
        " WITH ORDINALITY AS t(p, n) GROUP BY p ORDER BY min(n))"
        " WHERE customer_id = %s AND journey = %s AND run_no = %s",
        (problems, customer_id, journey, run_no),
    )


async def record_steps(
    conn: Connection,
    customer_id: str,
    journey: str,
    run_no: int,
    records: list[StepRecord],
    *,
    variant: str | None,
    held_out: bool,
) -> None:
    """Keep what a run recorded of its steps with its end, where the report counts it: one row
    per step it reached (visits, deferred sends, sends a holdout skipped, the last outcome),
    the step it ended at, and its split variant. Written once: a retried ``end_run`` adds
    nothing."""
    cursor = await conn.execute(
        "UPDATE runs SET last_step = %s, variant = %s, held_out = %s, steps_recorded = true"
        " WHERE customer_id = %s AND journey = %s AND run_no = %s AND NOT steps_recorded"
        " RETURNING run_no",
        (records[-1].step if records else None, variant, held_out, customer_id, journey, run_no),
    )
    if await cursor.fetchone() is None or not records:
        return
    steps: dict[str, dict[str, Any]] = {}
    for record in records:
        row = steps.setdefault(
            record.step,
            {"kind": record.kind, "visits": 0, "deferred": 0, "held_out": 0, "at": record.at},
        )
        deferred = record.kind == StepKind.send and record.outcome.startswith("deferred")
        row["visits"] += not deferred
        row["deferred"] += deferred
        row["held_out"] += record.kind == StepKind.send and " held_out" in record.outcome
        row["outcome"] = record.outcome
        if record.kind != StepKind.exit:
            row["kind"] = record.kind
    # One statement, so that the report's rollups are brought up to date once (migration 10).
    rows = [
        (step, row["kind"], max(row["visits"], 1), row["deferred"], row["held_out"],
         row["outcome"], row["at"])
        for step, row in steps.items()
    ]  # fmt: skip
    await conn.execute(
        "INSERT INTO run_steps (customer_id, journey, run_no, step, kind, visits, deferred,"
        " held_out, outcome, first_at) SELECT %s, %s, %s, * FROM unnest(%s::text[], %s::text[],"
        " %s::int[], %s::int[], %s::int[], %s::text[], %s::timestamptz[])",
        (customer_id, journey, run_no, *(list(column) for column in zip(*rows, strict=True))),
    )
