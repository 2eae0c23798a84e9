"""Where running entries are now: the one thing ``kairos report`` asks Temporal, because only
its visibility knows it (free, unlike a query to each run). Everything else is in the store.
"""

from __future__ import annotations

from collections.abc import Mapping

from temporalio.client import Client
from temporalio.service import RPCError

from kairos.reporting.queries import JourneyCount
from kairos.runtime.contract import SA_JOURNEY, SA_STEP

# Running journey workflows listed to place them at their steps, when the server cannot count
# them by step itself; beyond it the report says its step counts of running entries are partial.
HERE_NOW_LIMIT = 10_000


async def here_now(
    client: Client, task_queue: str, journeys: Mapping[str, JourneyCount], limit: int
) -> str | None:
    """Where the running entries are, from Temporal's visibility (free, unlike a query to each
    run): how many run, one Count per journey; at which step, one Count grouped by the step
    where the server's visibility store can group by a search attribute (Elasticsearch), else
    one List of at most ``limit`` running workflows (SQL visibility, as the dev server's, groups
    by ExecutionStatus only). Returns what the report must say when that List was cut short."""
    running = f"ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"
    for name, counted in journeys.items():
        query = f"{running} AND {SA_JOURNEY.name} = '{name}'"
        counted.report.running = (await client.count_workflows(query)).count
    busy = {name: counted for name, counted in journeys.items() if counted.report.running}
    if not busy or await _count_by_step(client, running, busy):
        return None
    query = running
    if len(busy) == 1:
        query += f" AND {SA_JOURNEY.name} = '{next(iter(busy))}'"
    seen = placed = 0
    async for execution in client.list_workflows(query, limit=limit, page_size=1000):
        seen += 1
        attributes = execution.typed_search_attributes
        journey = attributes.get(SA_JOURNEY)
        if journey not in busy:
            continue
        placed += 1
        here = attributes.get(SA_STEP)
        if here:
            _place(busy[journey], here, 1)
    total = sum(counted.report.running or 0 for counted in busy.values())
    if seen < limit or placed >= total:
        return None
    return (
        f"{total:,} entries are running: the steps they are at now count the first "
        f"{placed:,} Temporal listed (the report lists at most {limit:,} running workflows; "
        "this server's visibility cannot count them by step)"
    )


async def _count_by_step(client: Client, running: str, busy: Mapping[str, JourneyCount]) -> bool:
    """Count each busy journey's running workflows by step on the server; False when its
    visibility store does not group by a search attribute."""
    for name, counted in busy.items():
        query = f"{running} AND {SA_JOURNEY.name} = '{name}' GROUP BY {SA_STEP.name}"
        try:
            found = await client.count_workflows(query)
        except RPCError as err:
            if "not supported" in err.message:
                return False
            raise
        for group in found.groups:
            here = group.group_values[0] if group.group_values else None
            if isinstance(here, str) and here:
                _place(counted, here, group.count)
    return True


def _place(counted: JourneyCount, here: str, entries: int) -> None:
    step = counted.step(here)
    step.active += entries
    step.reached += entries
