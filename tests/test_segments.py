"""Segments: conditions in the journeys' language, answered by PostgreSQL for every customer.

The same condition must pick the same customers whether the store answers it in SQL or a journey
evaluates it in Python for one customer; history (events, messages, dates) is counted in SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from kairos.language.expressions import holds
from kairos.language.project import Project
from kairos.language.segment_sql import SegmentSyntaxError, to_sql
from kairos.language.segments import Segment
from kairos.store.facade import Store
from kairos.store.segments import count_members, sample_members
from tests.commands import command_env, documented, run

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)

# id, profile, stage, consent (topic -> granted)
PEOPLE: list[tuple[str, dict[str, Any], str | None, dict[str, bool]]] = [
    ("ann", {"lead_score": 60, "interest": "espresso", "phone": "+358401234567",
             "onboarded": True}, "retention", {"sms": True, "marketing": True}),
    ("ben", {"lead_score": 10, "interest": "filter", "onboarded": False}, "consideration",
     {"email": False}),
    ("cid", {}, None, {}),
    ("dee", {"lead_score": 50, "interest": "office",
             "last_order_at": (NOW - timedelta(days=70)).isoformat()}, "retention",
     {"sms": False, "marketing": True}),
    ("eve", {"lead_score": 50.5, "interest": "", "phone": "+491701234567",
             "last_order_at": (NOW - timedelta(days=3)).isoformat()}, "advocacy", {"sms": True}),
]  # fmt: skip

# Conditions journeys could also evaluate: the store must agree with Python on each.
SAME_IN_BOTH = [
    "customer.lead_score > 50",
    "not (customer.lead_score > 50)",
    "customer.lead_score >= 50",
    "customer.lead_score != 50",
    "customer.lead_score == 50",
    "10 < customer.lead_score",
    "10 < customer.lead_score <= 50",
    "customer.lead_score",
    "customer.interest == 'espresso' or customer.interest == 'office'",
    "customer.interest != 'espresso'",
    "customer.interest",
    "not customer.interest",
    "customer.interest in ['filter', 'office']",
    "customer.interest not in ['filter', 'office']",
    "'ff' in customer.interest",
    "customer.stage in ['retention', 'advocacy']",
    "customer.stage not in ['retention']",
    "customer.stage == 'retention' and customer.consent.sms",
    "customer.phone",
    "not customer.phone",
    "customer.onboarded",
    "customer.onboarded == false",
    "customer.onboarded != true",
    "customer.consent.sms",
    "customer.consent.email",
    "not customer.consent.marketing",
    "customer.consent.transactional",
    "customer.id == 'ann'",
    "customer.last_order_at < '2026-10-01'",
    "customer.last_order_at",
    "not customer.last_order_at",
    "true",
    "not (customer.consent.sms or customer.lead_score < 20)",
]


async def add_people(store: Store) -> None:
    """The people of PEOPLE, written in bulk as an import would, bypassing no constraint."""
    async with store.database.transaction() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO customers (id, profile, stage) VALUES (%s, %s, %s)",
            [(cid, Jsonb(profile), stage) for cid, profile, stage, _ in PEOPLE],
        )
        await cur.executemany(
            "INSERT INTO consent (customer_id, topic, granted, source, changed_at)"
            " VALUES (%s, %s, %s, 'test', now())",
            [(cid, t, g) for cid, _, _, consent in PEOPLE for t, g in consent.items()],
        )


def python_view(
    cid: str, profile: dict[str, Any], stage: str | None, consent: dict[str, bool]
) -> dict[str, Any]:
    granted = {"email": True, "sms": False, "marketing": False, "transactional": True} | consent
    return {**profile, "id": cid, "stage": stage, "consent": granted}


def segment(when: str, project: Project) -> Segment:
    to_sql(when, project.catalogue, NOW)  # compiles, or the test fails here
    return Segment("test", "", when, "segments/test.yaml", project.catalogue)


async def members(store: Store, project: Project, when: str) -> set[str]:
    found = await sample_members(store.database, segment(when, project), NOW, 1000)
    return {cid for cid, _ in found}


@pytest.mark.parametrize("when", SAME_IN_BOTH)
async def test_the_store_picks_whom_a_journey_condition_would(
    when: str, store: Store, project: Project
) -> None:
    await add_people(store)
    expected = {
        cid for cid, profile, stage, consent in PEOPLE
        if holds(when, {"customer": python_view(cid, profile, stage, consent)})
    }  # fmt: skip
    assert await members(store, project, when) == expected
    assert await count_members(store.database, segment(when, project), NOW) == len(expected)


async def test_history_counts_events_and_messages_in_their_windows(
    store: Store, project: Project
) -> None:
    await add_people(store)
    days = [1, 30, 120]  # ann ordered three times, one of them long ago
    async with store.database.transaction() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO events (customer_id, id, name, properties, occurred_at)"
            " VALUES (%s, %s, %s, '{}', %s)",
            [("ann", f"o{d}", "order_placed", NOW - timedelta(days=d)) for d in days]
            + [("dee", "o1", "order_placed", NOW - timedelta(days=70)),
               ("ben", "open1", "email_opened", NOW - timedelta(days=10)),
               ("dee", "open1", "email_opened", NOW - timedelta(days=200))],
        )  # fmt: skip
        await cur.execute(
            "INSERT INTO messages (key, customer_id, journey, step, channel, category,"
            " priority, status, due_at, decided_at, sent_at) VALUES"
            " ('k1', 'eve', 'flash_sale', 'sms', 'sms', 'marketing', 0, 'sent', %s, %s, %s),"
            " ('k2', 'ann', 'flash_sale', 'sms', 'sms', 'marketing', 0, 'blocked', %s, %s,"
            " NULL)",
            (NOW, NOW, NOW - timedelta(days=2), NOW, NOW),
        )
    cases = {
        'events("order_placed") >= 2': {"ann"},
        'events("order_placed", within="90d") >= 2': {"ann"},
        'events("order_placed", within="90d") == 1': {"dee"},
        'events("order_placed") == 0': {"ben", "cid", "eve"},
        'events("order_placed") < 1': {"ben", "cid", "eve"},
        'not events("order_placed")': {"ben", "cid", "eve"},
        '2 <= events("order_placed")': {"ann"},
        'events("email_opened", within="90 days") == 0': {"ann", "cid", "dee", "eve"},
        'messages(channel="sms", within="7d") >= 1': {"eve"},
        'messages(journey="flash_sale") == 0': {"ann", "ben", "cid", "dee"},
        "days_since(customer.last_order_at) > 60": {"dee"},
        "not (days_since(customer.last_order_at) <= 60)": {"ann", "ben", "cid", "dee"},
        'customer.stage == "retention" and events("order_placed") >= 1'
        " and customer.consent.marketing": {"ann", "dee"},
    }
    for when, expected in cases.items():
        assert await members(store, project, when) == expected, when


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("customer.lead_score > customer.loyalty_points", "compares two values that are not"),
        ("customer.phone == none", "a missing attribute is not equal to none"),
        ("event.total > 5", "a segment reads `customer` only"),
        ("journey.name == 'x'", "a segment reads `customer` only"),
        ("customer.lead_score + 5 > 10", "cannot be answered by the customer store"),
        ("customer.consent.fax", "is no consent topic"),
        ('events("order_placed") > "two"', "is a count, compared with 'two'"),
        ("days_since(customer.interest) > 3", "is no date attribute"),
        ("customer.onboarded > true", "is true or false, compared with True"),
        ('messages(channel="fax") > 0', "messages(channel='fax')"),
        ('lookup("x")', "is not a segment function"),
        ("customer.last_order_at > 'yesterday'", "is a date, compared with 'yesterday'"),
    ],
)
def test_what_sql_cannot_answer_is_refused_with_what_would_be_right(
    when: str, message: str, project: Project
) -> None:
    with pytest.raises(SegmentSyntaxError) as refused:
        to_sql(when, project.catalogue, NOW)
    assert message in refused.value.message


def test_a_literal_with_quotes_and_percent_stays_a_literal(project: Project) -> None:
    text = to_sql(
        "customer.interest == \"it's 100%'; DROP TABLE customers; --\"", project.catalogue, NOW
    )
    assert "'it''s 100%''; DROP TABLE customers; --'" in text.as_string(None)


async def test_segment_count_and_sample_on_the_command_line(
    store: Store, database_url: str
) -> None:
    await add_people(store)
    async with store.database.transaction() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO events (customer_id, id, name, properties, occurred_at)"
            " VALUES (%s, %s, 'order_placed', '{}', now())",
            [("ann", "o1"), ("ann", "o2"), ("eve", "o1"), ("eve", "o2")],
        )
    env = command_env(KAIROS_DATABASE_URL=database_url)
    counted = await run(documented("kairos segment count sms_subscribers_retention"), env)
    assert (counted.code, counted.out) == (0, "sms_subscribers_retention: 1 customer\n")
    sampled = await run(
        documented("kairos segment sample sms_subscribers_retention --limit 5"), env
    )
    assert sampled.code == 0 and "ann" in sampled.out and "eve" not in sampled.out
    unknown = await run(["segment", "count", "sms_subscriber"], env)
    assert unknown.code == 1
    assert unknown.err.strip() == (
        "error: no segment `sms_subscriber` in segments/ (did you mean "
        "`sms_subscribers_retention`?)"
    )


def test_validate_checks_segments_alone_or_with_the_journeys(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kairos.cli import app
    from tests.test_language_invalid import INVALID, make_project

    home = make_project(tmp_path, INVALID / "segment_type_mismatch")
    (home / "segments" / "buyers.yaml").write_text(
        'segment: buyers\nwhen: events("order_placed") >= 2\n', encoding="utf-8"
    )
    env = {"KAIROS_HOME": str(home), "NO_COLOR": "1"}
    everything = CliRunner().invoke(app, ["validate"], env=env)
    assert everything.exit_code == 1
    assert everything.output.splitlines()[0] == (
        "segments/warm.yaml:2:7: when: customer.lead_score is a number, compared with 'high' "
        "(compare it with a number such as 50)"
    )
    assert everything.output.splitlines()[-1] == "✗ 1 error in journeys/ and segments/"
    one = CliRunner().invoke(app, ["validate", str(home / "segments" / "buyers.yaml")], env=env)
    assert (one.exit_code, one.output) == (0, "✓ 1 segment valid\n")
