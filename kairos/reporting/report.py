"""Customer-lifecycle analysis: journeys, steps, variants and stages.

``kairos report`` is a handful of SQL queries over the customer store, however many customers
went through the journeys: which runs of which journey started when and how each ended (a run
writes its step records, its split variant and the step it ended at to the store with its end),
every message the send ledger decided and the provider feedback about it, the goal events'
worth, and every stage change. From Temporal it asks one thing only the server knows, how many
entries are running and at which step: visibility queries, one Count per journey and, where the
server cannot count by step, one List of at most ``HERE_NOW_LIMIT`` workflows (no billable
action); without Temporal the report says it could not tell, and everything else stands.

What is counted:

* an *entry* is one customer going through the journey once. A restart (``entry: restart``)
  ends the running run as ``restarted`` and starts the next run; the runs a restart chains
  together are one entry, and each restart is counted apart;
* per journey: entries, active, each outcome, converted (the goal in ``exit_on`` was reached
  within the journey's conversion window, ``goal: {within: 7d}``; a goal reached later is
  counted apart as *late*) and the conversion rate: converted of the *ended* entries the
  journey messaged (a holdout is kept apart and compared, see ``kairos.reporting.experiments``),
  messages by status: sent, blocked and failed as the send ledger decided them, held out (a
  holdout group's sends, which never reach the ledger) and deferred (each time quiet hours or a
  frequency cap put a send off) from the runs' step records; and of the sent emails, how many
  SendGrid's event webhook said were delivered, opened and clicked (each message once, however
  often it was opened: the ledger keeps when SendGrid first said so);
* per step (a generated step, ``branch_1`` or ``set_lead_score_7``, only when something
  happened there: the journey file's own ``id:`` names are what a marketer reads): entries
  that reached it (ended entries by their records, running ones where they are now), entries
  there now, messages sent / delivered / opened / clicked / blocked / failed / deferred / held
  out there, and entries that ended there, by outcome;
* per journey, of its messaged entries that converted: the median and 90th-percentile time from
  entering to the goal; and entries by the ISO week they began (cohorts), with their rate;
* per journey, the messaged entries' conversion by the customer's locale (their profile's,
  now), and messages by channel and status;
* revenue: the numeric ``total`` (in its ``currency``) of each goal event that converted an
  entry (``order_placed`` carries both), summed per currency, and per ended entry for the
  messaged entries and the holdout, so the two can be compared;
* per split step (a journey may have several, with the same variant names): customers, ended,
  conversions and rate per variant, each against that split's holdout with the difference, its
  95% interval and a verdict in words;
* the lifecycle: customers per stage now, how long they have been there, and the stage changes
  in the window (from, to, and the journey that made each).

The window (``--since``) selects entries by the time their first run started, and stage changes
by when they happened.

Where it is counted: the figures are read from rollups the store keeps at write time
(:mod:`kairos.reporting.queries`); the time to convert is kept there in buckets (the next whole
minute up to an hour, hour up to three days, day up to a year), so its median and 90th
percentile are the upper edge of the bucket they fall in, and a conversion window that is not
on such an edge (``within: 90s``) makes the report read every entry of the window instead.

This module builds the report; :mod:`kairos.reporting.model` holds the figures and their JSON and
CSV forms, :mod:`kairos.reporting.queries` the SQL, :mod:`kairos.reporting.here_now` the one
question put to Temporal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from temporalio.client import Client
from temporalio.service import RPCError

from kairos.language.durations import DurationError, parse_duration
from kairos.language.plan import JourneyPlan, Stage
from kairos.reporting.here_now import HERE_NOW_LIMIT, here_now
from kairos.reporting.model import (
    CONVERTED,
    END,
    HOLDOUT,
    MESSAGE_COUNTS,
    NO_STAGE,
    UNKNOWN_LOCALE,
    Cohort,
    JourneyReport,
    Report,
    StageMove,
    StageNow,
    StepStats,
    VariantStats,
    csv_rows,
    in_lifecycle_order,
    per_entry,
    versus,
)
from kairos.reporting.queries import JourneyCount, count_journeys, lifecycle
from kairos.store.database import Database

__all__ = [
    "CONVERTED", "DEFAULT_SINCE", "END", "HERE_NOW_LIMIT", "HOLDOUT", "MESSAGE_COUNTS",
    "NO_STAGE", "UNKNOWN_LOCALE", "Cohort", "JourneyReport", "Report", "ReportError",
    "StageMove", "StageNow", "StepStats", "VariantStats", "build_report", "csv_rows",
    "in_lifecycle_order", "parse_since", "per_entry", "versus",
]  # fmt: skip

DEFAULT_SINCE = "30d"


class ReportError(Exception):
    """The report cannot be made as asked (an unreadable ``--since``)."""


def parse_since(text: str, now: datetime) -> datetime | None:
    """The start of the window: ``7d`` ago, an ISO date, or None for ``all``.

    Raises:
        ReportError: ``text`` is neither a duration, a date nor ``all``.
    """
    if text.strip().lower() == "all":
        return None
    try:
        return now - timedelta(seconds=parse_duration(text))
    except DurationError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(
            f"--since {text!r}: expected a duration such as 7d or 12h, a date such as "
            "2026-01-31, or all"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def build_report(
    database: Database,
    client: Client | None,
    task_queue: str,
    plans: Mapping[str, JourneyPlan],
    *,
    journey: str | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
    here_now_limit: int = HERE_NOW_LIMIT,
) -> Report:
    """Count the window's entries in the store; journeys with none are listed with zeros.

    ``client`` (None: Temporal is not reachable) is asked how many entries are running and
    where (see :func:`kairos.reporting.here_now.here_now`; at most ``here_now_limit`` workflows
    are listed).
    """
    generated = now or datetime.now(UTC)
    names = [journey] if journey else sorted(plans)
    async with database.transaction() as conn:
        found = await count_journeys(conn, plans, journey, since)
        stages_now, moves = await lifecycle(conn, since, generated)
    for name in found:
        if name not in names and journey is None:
            names.append(name)
    built = {name: found.get(name) or JourneyCount(name, plans.get(name)) for name in names}
    temporal_error = here_now_note = None
    if client is None:
        temporal_error = "Temporal is not reachable"
    else:
        try:
            here_now_note = await here_now(client, task_queue, built, here_now_limit)
        except RPCError as err:
            temporal_error = f"Temporal did not answer: {err.message}"
    stages = {stage.value: 0 for stage in Stage}
    stages[NO_STAGE] = 0
    for row in stages_now:
        key = row.stage if row.stage in stages else NO_STAGE
        stages[key] += row.customers
    return Report(
        generated=generated,
        since=since,
        task_queue=task_queue,
        journeys=in_lifecycle_order(j.finish() for j in built.values()),
        stages=stages,
        stages_now=stages_now,
        moves=moves,
        temporal_error=temporal_error,
        here_now_note=here_now_note,
    )
