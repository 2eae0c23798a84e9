"""The customers' data keys in PostgreSQL, wrapped by the master key (kairos.runtime.crypto).

A customer's key is created in the transaction that creates the customer and deleted, by
cascade, in the one that forgets them. :class:`DatabaseKeys` is the key ring of the payload
codec (kairos.runtime.codec): it reads keys by customer and by id and keeps unwrapped keys in memory
for a minute, shared by everything in the process that uses the same database, so a journey's
activities do not read the same key again and again. Erasure in this process evicts the key at
once; another process may hold it for up to :data:`CACHE_SECONDS` more, which
docs/operations.md states.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from kairos.runtime import crypto
from kairos.runtime.crypto import INSTALLATION_KEY, KeyUnavailable, MasterKeys
from kairos.store.database import Connection, Database

CACHE_SECONDS = 60.0
CACHE_SIZE = 20_000


@dataclass
class _Cache:
    """Unwrapped keys by id, and each customer's key id, each with its expiry."""

    keys: OrderedDict[str, tuple[float, bytes]] = field(default_factory=OrderedDict)
    customers: OrderedDict[str, tuple[float, str]] = field(default_factory=OrderedDict)

    def get_key(self, key_id: str) -> bytes | None:
        found = self.keys.get(key_id)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def get_customer(self, customer_id: str) -> str | None:
        found = self.customers.get(customer_id)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, key_id: str, key: bytes, customer_id: str | None = None) -> None:
        expires = time.monotonic() + CACHE_SECONDS
        self.keys[key_id] = (expires, key)
        self.keys.move_to_end(key_id)
        if customer_id is not None:
            self.customers[customer_id] = (expires, key_id)
            self.customers.move_to_end(customer_id)
        for table in (self.keys, self.customers):
            while len(table) > CACHE_SIZE:
                table.popitem(last=False)

    def evict(self, customer_id: str) -> None:
        found = self.customers.pop(customer_id, None)
        if found is not None:
            self.keys.pop(found[1], None)


# One cache per database in the process (tests open many databases in one process).
_CACHES: dict[str, _Cache] = {}


def _cache(url: str) -> _Cache:
    return _CACHES.setdefault(url, _Cache())


async def create_customer_key(conn: Connection, customer_id: str, master: MasterKeys) -> None:
    """Give a customer their data key, unless they have one (inside their transaction)."""
    key_id = crypto.new_key_id()
    master_id, wrapped = master.wrap(key_id, crypto.new_data_key())
    await conn.execute(
        "INSERT INTO data_keys (id, customer_id, wrapped, master_key_id)"
        " SELECT %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM customers WHERE id = %s)"
        " ON CONFLICT (customer_id) DO NOTHING",
        (key_id, customer_id, wrapped, master_id, customer_id),
    )


class DatabaseKeys:
    """The key ring of a customer store (see the module)."""

    def __init__(self, database: Database, master: MasterKeys) -> None:
        self.database = database
        self.master = master
        self._cache = _cache(database.url)

    async def customer_key(self, customer_id: str) -> tuple[str, bytes]:
        key_id = self._cache.get_customer(customer_id)
        key = self._cache.get_key(key_id) if key_id else None
        if key_id and key:
            return key_id, key
        query = "SELECT id, wrapped, master_key_id FROM data_keys WHERE customer_id = %s"
        row = await self.database.fetch_one(query, (customer_id,))
        if row is None:
            # A customer from before keys existed: give them one now.
            async with self.database.transaction() as conn:
                await create_customer_key(conn, customer_id, self.master)
            row = await self.database.fetch_one(query, (customer_id,))
        if row is None:
            raise KeyUnavailable(
                f"customer {customer_id} is not in the customer store (forgotten, or never "
                "identified): nothing of theirs is written to Temporal"
            )
        key = self.master.unwrap(row["id"], row["master_key_id"], row["wrapped"])
        self._cache.put(row["id"], key, customer_id)
        return row["id"], key

    async def prefetch(self, customer_ids: list[str]) -> None:
        """Read and unwrap the keys of these customers in one statement, into the cache, so
        that a batch of journey starts (a broadcast's) does not read them one by one."""
        wanted = [c for c in customer_ids if self._cache.get_customer(c) is None]
        if not wanted:
            return
        rows = await self.database.fetch_all(
            "SELECT id, customer_id, wrapped, master_key_id FROM data_keys"
            " WHERE customer_id = ANY(%s)",
            (wanted,),
        )
        for row in rows:
            key = self.master.unwrap(row["id"], row["master_key_id"], row["wrapped"])
            self._cache.put(row["id"], key, row["customer_id"])

    async def installation_key(self) -> tuple[str, bytes]:
        key = self._cache.get_key(INSTALLATION_KEY)
        if key is not None:
            return INSTALLATION_KEY, key
        master_id, wrapped = self.master.wrap(INSTALLATION_KEY, crypto.new_data_key())
        async with self.database.transaction() as conn:
            await conn.execute(
                "INSERT INTO data_keys (id, wrapped, master_key_id) VALUES (%s, %s, %s)"
                " ON CONFLICT (id) DO NOTHING",
                (INSTALLATION_KEY, wrapped, master_id),
            )
        return INSTALLATION_KEY, await self.key(INSTALLATION_KEY)

    async def key(self, key_id: str) -> bytes:
        key = self._cache.get_key(key_id)
        if key is not None:
            return key
        row = await self.database.fetch_one(
            "SELECT customer_id, wrapped, master_key_id FROM data_keys WHERE id = %s", (key_id,)
        )
        if row is None:
            raise KeyUnavailable(
                f"data key {key_id} has been deleted (its customer was forgotten): what it "
                "encrypted cannot be read by anyone"
            )
        key = self.master.unwrap(key_id, row["master_key_id"], row["wrapped"])
        self._cache.put(key_id, key, row["customer_id"])
        return key

    def evict(self, customer_id: str) -> None:
        """Forget a customer's key in this process (their row is gone from the store)."""
        self._cache.evict(customer_id)

    async def rotate(self) -> tuple[int, int]:
        """Wrap every data key not yet wrapped by the current master key with it; returns
        (keys rewrapped, keys already current). Each key is its own short transaction."""
        current = self.master.current.id
        rows = await self.database.fetch_all(
            "SELECT id FROM data_keys WHERE master_key_id <> %s ORDER BY id", (current,)
        )
        for row in rows:
            async with self.database.transaction() as conn:
                cursor = await conn.execute(
                    "SELECT wrapped, master_key_id FROM data_keys WHERE id = %s FOR UPDATE",
                    (row["id"],),
                )
                found = await cursor.fetchone()
                if found is None or found["master_key_id"] == current:
                    continue  # forgotten meanwhile, or rotated by another process
                key = self.master.unwrap(row["id"], found["master_key_id"], found["wrapped"])
                master_id, wrapped = self.master.wrap(row["id"], key)
                await conn.execute(
                    "UPDATE data_keys SET wrapped = %s, master_key_id = %s WHERE id = %s",
                    (wrapped, master_id, row["id"]),
                )
        total = await self.database.fetch_one("SELECT count(*) AS n FROM data_keys")
        rewrapped = len(rows)
        return rewrapped, (int(total["n"]) if total else 0) - rewrapped
