"""A segment's members, counted and sampled by PostgreSQL (the SQL is the language's:
:mod:`kairos.language.segments`)."""

from __future__ import annotations

from datetime import datetime

from kairos.language.segments import Segment, count_query, sample_query
from kairos.store.database import Database


async def count_members(database: Database, segment: Segment, now: datetime) -> int:
    """How many customers are in ``segment`` at ``now``, counted by PostgreSQL."""
    row = await database.fetch_one(count_query(segment, now))
    return int(row["members"]) if row else 0


async def sample_members(
    database: Database, segment: Segment, now: datetime, limit: int
) -> list[tuple[str, str | None]]:
    """Up to ``limit`` members (id and stage), lowest ids first."""
    rows = await database.fetch_all(sample_query(segment, now, limit))
    return [(row["id"], row["stage"]) for row in rows]
