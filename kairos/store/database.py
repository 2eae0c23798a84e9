"""The connection to the customer store: a psycopg 3 async pool, migrations, the schema check.

Connections are in autocommit mode; every change happens in an explicit, short transaction
(:meth:`Database.transaction`). Migrations are the numbered SQL scripts in ``sql/migrations``,
applied in order by ``kairos db upgrade`` under an advisory lock, each in its own transaction.
A process refuses to use a database whose schema it does not know.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).parent / "sql"
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Serialises concurrent upgrades (two workers starting at once): any fixed 64-bit number.
_UPGRADE_LOCK = 7_305_421_950_113
CONNECT_SECONDS = 10.0

Connection = psycopg.AsyncConnection[DictRow]


class StoreError(Exception):
    """The customer store cannot be used; the message says why and what to do."""


class StoreUnavailable(StoreError):
    """PostgreSQL cannot be reached."""


class SchemaMismatch(StoreError):
    """The database's schema is not the one this Kairos was built for."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def migrations() -> list[Migration]:
    """Every migration shipped with Kairos, oldest first."""
    found = []
    for path in sorted((SQL_DIR / "migrations").glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise StoreError(f"{path}: migrations are named NNNN_words.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migrations share a number: {versions}")
    return found


def latest_version() -> int:
    """The newest migration's number (0 when none)."""
    return max((m.version for m in migrations()), default=0)


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Database:
    """A pool of connections to the customer store."""

    def __init__(self, pool: AsyncConnectionPool[Connection], url: str) -> None:
        self.pool = pool
        self.url = url

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        max_size: int = 10,
        check_schema: bool = True,
        timeout: float = CONNECT_SECONDS,
    ) -> Database:
        """Connect to ``url``; with ``check_schema``, refuse a schema this Kairos does not know.

        Raises:
            StoreUnavailable: PostgreSQL did not answer within ``timeout`` seconds.
            SchemaMismatch: The schema is older or newer than this Kairos.
        """
        try:
            # One plain connection first: a server that refuses or does not exist is said at
            # once, where the pool would keep retrying until its timeout.
            probe = await psycopg.AsyncConnection.connect(url, connect_timeout=max(1, int(timeout)))
        except psycopg.OperationalError as err:
            raise StoreUnavailable(
                f"cannot reach PostgreSQL at {redact(url)}: {_why(err)}. "
                "Is `make dev` running, or KAIROS_DATABASE_URL right?"
            ) from None
        await probe.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            connection_class=psycopg.AsyncConnection[DictRow],
            timeout=timeout,
            name="kairos",
        )
        try:
            await pool.open(wait=True, timeout=timeout)
        except PoolTimeout as err:
            await pool.close()
            raise StoreUnavailable(
                f"cannot reach PostgreSQL at {redact(url)} within {timeout:.0f}s: {_why(err)}. "
                "Is `make dev` running, or KAIROS_DATABASE_URL right?"
            ) from None
        database = cls(pool, url)
        if check_schema:
            try:
                await database.check_schema()
            except BaseException:
                await database.close()
                raise
        return database

    async def close(self) -> None:
        await self.pool.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection in autocommit mode (each statement its own transaction)."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as err:
            raise StoreUnavailable(
                f"no connection to PostgreSQL at {redact(self.url)}: {_why(err)}"
            ) from None
        except psycopg.OperationalError as err:
            raise StoreUnavailable(f"PostgreSQL at {redact(self.url)} failed: {err}") from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside one transaction: committed when the block ends, rolled back
        when it raises."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetch_one(self, query: str | sql.Composed, params: Any = None) -> DictRow | None:
        async with self.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchone()

    async def fetch_all(self, query: str | sql.Composed, params: Any = None) -> list[DictRow]:
        async with self.connection() as conn:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

    # --- schema -------------------------------------------------------------------------------

    async def schema_version(self) -> int:
        """The newest migration applied; 0 for an empty database."""
        row = await self.fetch_one("SELECT to_regclass('kairos_migrations') IS NOT NULL AS present")
        if row is None or not row["present"]:
            return 0
        row = await self.fetch_one("SELECT coalesce(max(version), 0) AS v FROM kairos_migrations")
        return int(row["v"]) if row else 0

    async def applied_versions(self) -> set[int]:
        """Every migration number applied to the database (empty for an empty database)."""
        if await self.schema_version() == 0:
            return set()
        rows = await self.fetch_all("SELECT version FROM kairos_migrations")
        return {int(row["version"]) for row in rows}

    async def check_schema(self) -> None:
        """Raise SchemaMismatch unless the database has exactly this Kairos's migrations.

        Compared as sets, not by the newest number: branches developed side by side may ship
        migrations 3 and 4 in either order, and a database that got 4 before 3 existed still
        lacks 3 (``kairos db upgrade`` applies it).
        """
        have, want = await self.schema_version(), latest_version()
        applied = await self.applied_versions()
        shipped = {m.version for m in migrations()}
        if applied == shipped:
            return
        if applied <= shipped and have < want:
            raise SchemaMismatch(
                f"the database at {redact(self.url)} has schema version {have}, this Kairos "
                f"needs {want}: run `kairos db upgrade`"
            )
        if applied <= shipped:
            lacking = ", ".join(str(v) for v in sorted(shipped - applied))
            raise SchemaMismatch(
                f"the database at {redact(self.url)} lacks migration {lacking} (merged after "
                "a newer one was applied): run `kairos db upgrade`"
            )
        raise SchemaMismatch(
            f"the database at {redact(self.url)} has schema version {have}, newer than this "
            f"Kairos knows ({want}): upgrade Kairos before running it against this database"
        )

    async def upgrade(self) -> list[Migration]:
        """Apply every migration not yet applied, in order; returns the ones applied."""
        applied: list[Migration] = []
        async with self.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS kairos_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for migration in migrations():
            async with self.transaction() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_LOCK,))
                cursor = await conn.execute(
                    "SELECT 1 FROM kairos_migrations WHERE version = %s", (migration.version,)
                )
                if await cursor.fetchone():
                    continue
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO kairos_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            log.info("applied migration %04d_%s", migration.version, migration.name)
            applied.append(migration)
        return applied


def _why(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


async def ensure_database(url: str, name: str, *, timeout: float = CONNECT_SECONDS) -> str:
    """Create database ``name`` on the server of ``url`` if missing; returns its URL."""
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=int(timeout)
    ) as conn:
        cursor = await conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if await cursor.fetchone() is None:
            # Another process starting at the same moment may create it first.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                await conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(url, name)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))
