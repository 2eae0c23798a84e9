"""Scores kept by customer.yaml's ``scoring:`` rules, for every customer whatever journey
they are in (lead scoring as HubSpot and ActiveCampaign do it).

An event that a rule names earns its points (negative points take off) when the rule's
condition holds: the profile attribute of the score's name is incremented in the event's own
transaction, and the points are kept in ``score_points`` with when they expire. The score is
therefore a profile attribute like any other: segments, journey conditions and templates read
``customer.lead_score``. A value set by an identify call, an import or a journey's ``set`` step
stays the base the points add to.

Expiry (``expire_after: 90d``) needs no event: :func:`expire_points`, run by the worker every
minute, takes expired points off the scores in one statement per score, and in the same
statement writes a profile signal for each open run that reads the score, so a journey waiting
on ``customer.lead_score`` hears of the drop as it would of any other profile change. Leaving
(and later re-entering) trigger segments follows in the same minute's segment sweep.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kairos.language import expressions
from kairos.language.catalogue import Catalogue
from kairos.language.durations import parse_duration
from kairos.runtime.contract import Event
from kairos.runtime.routing import event_view
from kairos.store.database import Connection


@dataclass(frozen=True)
class Points:
    """Points one event earned under one rule of one score."""

    score: str
    rule: int
    points: int | float
    expires_at: datetime | None


def earned(
    catalogue: Catalogue, event: Event, view: Mapping[str, Any], at: datetime
) -> tuple[list[Points], list[str]]:
    """The points ``event`` earns a customer who looks like ``view`` (as conditions see them),
    and the rule conditions that could not be evaluated (they earn nothing)."""
    found: list[Points] = []
    problems: list[str] = []
    context: dict[str, Any] | None = None
    for score, spec in catalogue.scoring.items():
        for n, rule in spec.earned(event.name):
            if rule.when is not None:
                if context is None:
                    context = {"customer": dict(view), "event": event_view(event)}
                try:
                    if not expressions.holds(rule.when, context):
                        continue
                except expressions.ExpressionError as err:
                    problems.append(f"scoring {score} rule {n + 1}: {err}")
                    continue
            lasting = parse_duration(spec.expire_after) if spec.expire_after else None
            expires = at + timedelta(seconds=lasting) if lasting is not None else None
            found.append(Points(score, n, rule.points, expires))
    return found, problems


def increments(points: list[Points], now: datetime) -> dict[str, float]:
    """What the points add to each score now (points already expired add nothing)."""
    total: dict[str, float] = {}
    for p in points:
        if p.expires_at is None or p.expires_at > now:
            total[p.score] = total.get(p.score, 0) + p.points
    return total


async def record_points(
    conn: Connection,
    customer_id: str,
    event_id: str,
    at: datetime,
    points: list[Points],
    now: datetime,
) -> None:
    """Keep the points an event earned, for expiry and for the record."""
    for p in points:
        expired = p.expires_at is not None and p.expires_at <= now
        await conn.execute(
            "INSERT INTO score_points (customer_id, score, event_id, rule, points, at,"
            " expires_at, expired) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (customer_id, p.score, event_id, p.rule, p.points, at, p.expires_at, expired),
        )


# One statement per score: mark the points that expired by now, take their sum off each
# customer's score, and tell every open run that reads the score (a profile signal, as a
# ``set`` step or an identify call that changes it would). The new value is computed from the
# row the UPDATE locks (not a snapshot read earlier), so an event scoring the customer at the
# same moment is not lost; a whole number stays whole in the profile. Points are marked expired
# by exactly one statement (a concurrent sweep finds them marked), so each change is signalled
# once, in the transaction that makes it.
_CURRENT = (
    "coalesce(CASE WHEN jsonb_typeof(c.profile -> %(score)s) = 'number'"
    " THEN (c.profile ->> %(score)s)::numeric END, 0) - l.points"
)
_EXPIRE_SQL = f"""
WITH gone AS (
    UPDATE score_points SET expired = true
    WHERE score = %(score)s AND NOT expired AND expires_at <= %(now)s
    RETURNING customer_id, points
), lost AS (
    SELECT customer_id, sum(points) AS points FROM gone GROUP BY customer_id
), changed AS (
    UPDATE customers c SET
        profile = jsonb_set(c.profile, ARRAY[%(score)s::text],
                            CASE WHEN {_CURRENT} = trunc({_CURRENT})
                                 THEN to_jsonb(trunc({_CURRENT})) ELSE to_jsonb({_CURRENT}) END),
        version = c.version + 1, updated_at = now()
    FROM lost l WHERE c.id = l.customer_id
    RETURNING c.id
), signalled AS (
    INSERT INTO dispatches (customer_id, event_id, kind, journey, run_no, payload)
    SELECT r.customer_id, NULL, 'signal', r.journey, r.run_no,
           '{{"event": null, "restart": false}}'::jsonb
    FROM changed ch
    JOIN runs r ON r.customer_id = ch.id AND r.ended_at IS NULL
    JOIN plans p ON p.journey = r.journey AND p.version = r.plan_version
    WHERE %(score)s = ANY(p.reads)
    ORDER BY r.customer_id, r.journey, r.run_no
    RETURNING customer_id
)
SELECT (SELECT count(*) FROM changed) AS changed,
       ARRAY(SELECT DISTINCT customer_id FROM signalled) AS signalled
"""


@dataclass
class Expiry:
    """What taking expired points off did: how many customers' scores changed, and the
    customers whose open runs were told (their signals wait in the dispatch outbox)."""

    changed: int = 0
    signalled: list[str] = field(default_factory=list)


async def expire_points(conn: Connection, catalogue: Catalogue, now: datetime) -> Expiry:
    """Take the points that expired by ``now`` off every score, and write a profile signal
    for every open run that reads a score that changed."""
    expiry = Expiry()
    for score, spec in catalogue.scoring.items():
        if spec.expire_after is None:
            continue
        cursor = await conn.execute(_EXPIRE_SQL, {"score": score, "now": now})
        row = await cursor.fetchone()
        assert row is not None  # the statement's last SELECT gives one row
        expiry.changed += int(row["changed"])
        expiry.signalled.extend(c for c in row["signalled"] if c not in expiry.signalled)
    return expiry
