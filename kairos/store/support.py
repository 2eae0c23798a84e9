"""What support reads and does: a customer's whole record, erasure, cancelling a run.

Reads are plain queries; nothing here locks a customer for longer than one statement except
erasure, which deletes the customer (and, by cascade, everything about them) in one
transaction after keeping the suppression hashes of addresses that withdrew consent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kairos.language.plan import Channel
from kairos.messages.models import LedgerStatus
from kairos.runtime.contract import Consent
from kairos.store.database import Connection, Database
from kairos.store.runs import RunRecord, select_runs
from kairos.store.views import address_hash, customer_id_hash, load_customer, suppression_key


@dataclass(frozen=True)
class ConsentRecord:
    """One consent change: proof of consent."""

    topic: str
    granted: bool
    source: str
    at: datetime
    event_id: str | None = None


@dataclass(frozen=True)
class MessageRecord:
    """One row of the send ledger: what was decided about a message, and why."""

    key: str
    journey: str
    step: str
    channel: Channel
    category: str
    status: LedgerStatus
    reason: str
    decided_at: datetime
    sent_at: datetime | None
    defer_until: datetime | None
    provider_id: str | None
    attempts: int
    unconfirmed: int


@dataclass(frozen=True)
class CustomerRecord:
    """Everything support sees about one customer."""

    id: str
    profile: dict[str, Any]
    stage: str | None
    consent: Consent
    consent_history: list[ConsentRecord]
    runs: list[RunRecord]
    messages: list[MessageRecord]
    events: int
    created_at: datetime
    updated_at: datetime
    # SMS replies that were no keyword, newest last: (when, what she wrote), for a human.
    replies: list[tuple[datetime, str]] = field(default_factory=list)


# The event an SMS reply that is no keyword becomes (kairos.web.twilio), when declared.
SMS_REPLIED = "sms_replied"


@dataclass
class Forgotten:
    """What erasing a customer removed."""

    customer_id: str
    open_runs: list[RunRecord] = field(default_factory=list)
    # Runs the store had ended whose workflow may still be closing (a cancellation not yet
    # handled): with the key gone no worker can finish them, so they are terminated too.
    ended_runs: list[RunRecord] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)
    suppressed: list[str] = field(default_factory=list)
    # Messages of theirs deleted from the local outbox (files, key markers, index lines).
    outbox_messages: int = 0


_COUNTED_TABLES = ("events", "consent_changes", "runs", "messages", "dispatches")


async def customer_record(
    database: Database, customer_id: str, *, runs: int = 20, messages: int = 20
) -> CustomerRecord | None:
    """The customer's profile, consent with its history, runs and recent messages."""
    async with database.connection() as conn:
        row = await load_customer(conn, customer_id, lock=False)
        if row is None:
            return None
        cursor = await conn.execute(
            "SELECT created_at, updated_at, (SELECT count(*) FROM events e"
            " WHERE e.customer_id = c.id) AS events FROM customers c WHERE id = %s",
            (customer_id,),
        )
        meta = await cursor.fetchone()
        assert meta is not None
        cursor = await conn.execute(
            "SELECT topic, granted, source, at, event_id FROM consent_changes"
            " WHERE customer_id = %s ORDER BY id",
            (customer_id,),
        )
        history = [ConsentRecord(**r) for r in await cursor.fetchall()]
        cursor = await conn.execute(
            "SELECT occurred_at, properties ->> 'body' AS body FROM events"
            " WHERE customer_id = %s AND name = %s ORDER BY seq DESC LIMIT 5",
            (customer_id, SMS_REPLIED),
        )
        replies = [(r["occurred_at"], r["body"] or "") for r in reversed(await cursor.fetchall())]
        return CustomerRecord(
            id=row.id,
            profile=row.profile,
            stage=row.stage,
            consent=row.consent.view(),
            consent_history=history,
            runs=await select_runs(conn, "customer_id = %s", (customer_id,), runs),
            messages=await _messages(conn, customer_id, messages),
            events=int(meta["events"]),
            created_at=meta["created_at"],
            updated_at=meta["updated_at"],
            replies=replies,
        )


async def _messages(conn: Connection, customer_id: str, limit: int) -> list[MessageRecord]:
    cursor = await conn.execute(
        "SELECT key, journey, step, channel, category, status, reason, decided_at, sent_at,"
        " defer_until, provider_id, attempts, unconfirmed FROM messages WHERE customer_id = %s"
        " ORDER BY decided_at DESC LIMIT %s",
        (customer_id, limit),
    )
    rows = await cursor.fetchall()
    return [MessageRecord(**{**r, "channel": Channel(r["channel"])}) for r in reversed(rows)]


async def forget(
    database: Database,
    customer_id: str,
    *,
    email_attribute: str | None,
    phone_attribute: str | None,
) -> Forgotten | None:
    """Delete the customer and everything about them; None when there is no such customer.

    Addresses whose consent was withdrawn stay suppressed (as keyed hashes, no customer id),
    so a later sign-up with the same address is not messaged against an earlier opt-out.
    """
    async with database.transaction() as conn:
        customer = await load_customer(conn, customer_id, lock=True)
        if customer is None:
            return None
        # Take the customer's runs and messages before the delete cascades to their journey
        # entries: a write to a run or message locks it, then (the report's rollup triggers,
        # migration 10) its journey entry; taking them in that order here too leaves no cycle.
        for table, order in (("runs", "journey, run_no"), ("messages", "key")):
            await conn.execute(
                f"SELECT 1 FROM {table} WHERE customer_id = %s ORDER BY {order} FOR UPDATE",
                (customer_id,),
            )
        forgotten = Forgotten(customer_id)
        forgotten.open_runs = await select_runs(
            conn, "customer_id = %s AND ended_at IS NULL", (customer_id,), 1000
        )
        forgotten.ended_runs = await select_runs(
            conn, "customer_id = %s AND ended_at IS NOT NULL", (customer_id,), 1000
        )
        for table in (*_COUNTED_TABLES, "data_keys"):
            cursor = await conn.execute(
                f"SELECT count(*) AS n FROM {table} WHERE customer_id = %s", (customer_id,)
            )
            counted = await cursor.fetchone()
            forgotten.removed[table] = int(counted["n"]) if counted else 0
        refused = customer.consent.refused()
        withdrawn = {t for t, why in refused.items() if why.startswith("withdrawn")}
        addresses = {
            Channel.email: customer.profile.get(email_attribute or ""),
            Channel.sms: customer.profile.get(phone_attribute or ""),
        }
        key = await suppression_key(conn)
        for channel, address in addresses.items():
            if not isinstance(address, str) or not address:
                continue
            if channel.value in withdrawn:
                scope = "all"
            elif "marketing" in withdrawn:
                scope = "marketing"
            else:
                continue
            await conn.execute(
                "INSERT INTO suppressions (address_hash, channel, scope, reason) VALUES"
                " (%s, %s, %s, %s) ON CONFLICT (address_hash, scope) DO NOTHING",
                (address_hash(key, channel, address), channel.value, scope,
                 "consent withdrawn before erasure"),
            )  # fmt: skip
            forgotten.suppressed.append(f"{channel.value} ({scope})")
        # Temporal keeps the erased runs' workflow ids: a later customer with this id numbers
        # its runs after them (kairos/store/ingest.py) instead of colliding with them.
        await conn.execute(
            "INSERT INTO retired_runs (id_hash, journey, last_run)"
            " SELECT %s, journey, run_base + entries FROM journey_entries WHERE customer_id = %s"
            " ON CONFLICT (id_hash, journey)"
            " DO UPDATE SET last_run = greatest(retired_runs.last_run, EXCLUDED.last_run)",
            (customer_id_hash(key, customer_id), customer_id),
        )
        await conn.execute("DELETE FROM customers WHERE id = %s", (customer_id,))
        return forgotten


async def customers_with_phone(conn: Connection, e164: str) -> list[str]:
    cursor = await conn.execute("SELECT id FROM customers WHERE phone = %s ORDER BY id", (e164,))
    return [r["id"] for r in await cursor.fetchall()]


async def suppress(
    conn: Connection, channel: Channel, address: str, *, scope: str, reason: str
) -> None:
    key = await suppression_key(conn)
    await conn.execute(
        "INSERT INTO suppressions (address_hash, channel, scope, reason) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (address_hash, scope) DO UPDATE SET reason = EXCLUDED.reason",
        (address_hash(key, channel, address), channel.value, scope, reason),
    )


async def unsuppress(conn: Connection, channel: Channel, address: str, *, scope: str) -> None:
    key = await suppression_key(conn)
    await conn.execute(
        "DELETE FROM suppressions WHERE address_hash = %s AND scope = %s",
        (address_hash(key, channel, address), scope),
    )
