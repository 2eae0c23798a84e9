"""``python -m benchmarks --only events``: what one event costs the customer store, with and
without lead scoring and segment-entry triggers.

Each variant gets a fresh database on the embedded PostgreSQL with N customers (written by
SQL), then accepts one ``content_viewed`` event for each (a scoring rule earns 10 points for it;
no journey starts on it) through :meth:`kairos.store.facade.Store.accept`, as the API does. Counted:
PostgreSQL transactions (``pg_stat_database``) and the statements this process sent, per event.
No Temporal: these events decide no Temporal call.

* ``plain``: the shipped project without its scoring rules and without the journeys that
  trigger on a segment;
* ``scoring``: with the scoring rules (``lead_score``);
* ``scoring_and_triggers``: the shipped project (``sales_ready`` triggers sales_handover).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import psycopg

from benchmarks import infra
from benchmarks.broadcast import ROOT, counting_statements
from kairos.language.plan import SegmentTrigger
from kairos.language.project import Project, load_project
from kairos.runtime.config import load_settings
from kairos.runtime.contract import Event
from kairos.store.facade import Store

VARIANTS = ("plain", "scoring", "scoring_and_triggers")
EVENT = "content_viewed"


def variant(project: Project, name: str) -> Project:
    """The shipped project with or without its scoring rules and segment triggers."""
    if name == "scoring_and_triggers":
        return project
    plans = {k: p for k, p in project.plans.items() if not isinstance(p.trigger, SegmentTrigger)}
    catalogue = project.catalogue
    if name == "plain":
        catalogue = catalogue.model_copy(update={"scoring": {}})
    return dataclasses.replace(project, plans=plans, catalogue=catalogue)


async def measure(admin_url: str, events: int) -> dict[str, Any]:
    """Statements and transactions per event in each variant."""
    shipped = load_project(ROOT)
    found: dict[str, Any] = {}
    for name in VARIANTS:
        project = variant(shipped, name)
        database = f"bench_events_{name}_{os.getpid()}"
        async with infra.database(admin_url, database) as url:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO customers (id, stage) SELECT 'e-' || i, 'consideration'"
                    " FROM generate_series(1, %s) i",
                    (events,),
                )
            settings = dataclasses.replace(
                load_settings({"KAIROS_HOME": str(ROOT)}, dotenv=False), database_url=url
            )
            async with await Store.open(settings, project):  # the first opening records the plans
                pass
            before = await infra.transactions(admin_url, database)
            with counting_statements() as opening_statements:  # what opening costs, alone
                async with await Store.open(settings, project):
                    pass
            opening = await infra.transactions(admin_url, database) - before
            before += opening
            with counting_statements() as statements:
                async with await Store.open(settings, project) as store:
                    started = time.perf_counter()
                    for i in range(1, events + 1):
                        event = Event(id=f"v-{i}", name=EVENT, properties={}, timestamp=None)
                        await store.accept(f"e-{i}", event)
                    seconds = time.perf_counter() - started
                    scored = await store.database.fetch_one(
                        "SELECT count(*) AS n FROM score_points"
                    )
            transactions = await infra.transactions(admin_url, database) - before - opening
        found[name] = {
            "events": events,
            "transactions_per_event": round(transactions / events, 3),
            # Less what opening the store sends (not the events'), and the count of scores.
            "statements_per_event": round((statements[0] - opening_statements[0] - 1) / events, 2),
            "score_rows": int(scored["n"]) if scored else 0,
            "events_per_second": round(events / seconds, 1),
        }
    return found
