"""Reading a customer as journeys, policy and templates see them, inside a transaction.

The profile a condition or template sees is the stored profile plus the built-ins: ``id``,
``stage`` and ``consent`` (opt-in topics from the consent table, with their defaults).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb

from kairos.language.catalogue import CONSENT_TOPICS
from kairos.language.plan import Channel
from kairos.runtime import phone
from kairos.runtime.contract import Consent, ProfileSnapshot
from kairos.store.database import Connection


@dataclass
class ConsentState:
    """Each topic's current value and what recorded it (absent topics were never given)."""

    granted: dict[str, bool]
    sources: dict[str, str]

    def view(self) -> Consent:
        return Consent(**self.granted)

    def refused(self) -> dict[str, str]:
        """Topics not granted now, each with why: 'never given' or 'withdrawn (source)'."""
        view = self.view()
        refused: dict[str, str] = {}
        for topic in CONSENT_TOPICS:
            if getattr(view, topic):
                continue
            source = self.sources.get(topic)
            refused[topic] = f"withdrawn ({source})" if source else "never given (opt-in)"
        return refused


@dataclass
class CustomerRow:
    """A customer's row, locked or read, with consent."""

    id: str
    profile: dict[str, Any]
    stage: str | None
    version: int
    consent: ConsentState
    # When an identify call stated each attribute (see customers.profile_at).
    profile_at: dict[str, str] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        """The profile as conditions and templates see it."""
        return {
            **self.profile,
            "id": self.id,
            "stage": self.stage,
            "consent": self.consent.view().model_dump(),
        }

    def snapshot(self, reads: Iterable[str]) -> ProfileSnapshot:
        view = self.view()
        return ProfileSnapshot(
            version=self.version, values={k: view[k] for k in reads if view.get(k) is not None}
        )


_CUSTOMER_SQL = (
    "SELECT id, profile, stage, version, profile_at, (SELECT coalesce(json_agg("
    "json_build_array(k.topic, k.granted, k.source)), '[]'::json) FROM consent k"
    " WHERE k.customer_id = c.id) AS consent FROM customers c"
)


async def load_customer(conn: Connection, customer_id: str, *, lock: bool) -> CustomerRow | None:
    """The customer's row (``FOR UPDATE`` with ``lock``) and consent; None when unknown."""
    cursor = await conn.execute(
        _CUSTOMER_SQL + " WHERE id = %s" + (" FOR UPDATE OF c" if lock else ""), (customer_id,)
    )
    row = await cursor.fetchone()
    return None if row is None else _customer_row(row)


async def load_customers(conn: Connection, customer_ids: list[str]) -> dict[str, CustomerRow]:
    """The rows of these customers (unlocked) by id, in one statement; the unknown are absent."""
    cursor = await conn.execute(_CUSTOMER_SQL + " WHERE id = ANY(%s)", (customer_ids,))
    return {row["id"]: _customer_row(row) for row in await cursor.fetchall()}


def _customer_row(row: dict[str, Any]) -> CustomerRow:
    granted = {topic: bool(value) for topic, value, _ in row["consent"]}
    sources = {topic: source for topic, _, source in row["consent"]}
    return CustomerRow(
        id=row["id"],
        profile=dict(row["profile"]),
        stage=row["stage"],
        version=int(row["version"]),
        consent=ConsentState(granted, sources),
        profile_at=dict(row["profile_at"]),
    )


def to_json(value: Any) -> Any:
    """``value`` with dates as ISO strings, ready for a jsonb column."""
    return json.loads(json.dumps(value, default=_iso))


def jsonb(value: Any) -> Jsonb:
    return Jsonb(to_json(value))


def _iso(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


# --- suppressed addresses ---------------------------------------------------------------------

_SUPPRESSION_KEY = "suppression_key"


async def suppression_key(conn: Connection) -> bytes:
    """The installation's key for hashing suppressed addresses (created on first use)."""
    await conn.execute(
        "INSERT INTO kairos_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
        (_SUPPRESSION_KEY, secrets.token_hex(32)),
    )
    cursor = await conn.execute("SELECT value FROM kairos_meta WHERE key = %s", (_SUPPRESSION_KEY,))
    row = await cursor.fetchone()
    assert row is not None
    return bytes.fromhex(row["value"])


def customer_id_hash(key: bytes, customer_id: str) -> bytes:
    """The keyed hash an erased customer id's run numbers are kept under (retired_runs)."""
    return hmac.new(key, f"customer:{customer_id}".encode(), hashlib.sha256).digest()


def address_hash(key: bytes, channel: Channel, address: str) -> bytes:
    """The keyed hash of a normalised address: emails compare case-insensitively, phone
    numbers in E.164."""
    normal = address.strip()
    if channel is Channel.email:
        normal = normal.lower()
    else:
        with contextlib.suppress(phone.PhoneError):
            normal = phone.normalise(normal)
    return hmac.new(key, f"{channel.value}:{normal}".encode(), hashlib.sha256).digest()
