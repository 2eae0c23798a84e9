"""``kairos db``: the customer store's schema, applied by migrations and never by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.markup import escape

from kairos.cli.base import app, console, quiet_logs
from kairos.cli.base import fail_text as fail
from kairos.runtime.config import ConfigError, Settings, load_settings
from kairos.runtime.crypto import KeyUnavailable
from kairos.store.database import (
    Database,
    Migration,
    StoreError,
    latest_version,
    migrations,
    redact,
)
from kairos.store.embedded import data_dir
from kairos.store.facade import database_url

T = TypeVar("T")

db = typer.Typer(
    help="The customer store (PostgreSQL): apply and check schema migrations.",
    no_args_is_help=True,
)
app.add_typer(db, name="db")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as err:
        raise fail(str(err), code=2) from None


def _where(settings: Settings) -> str:
    if settings.database_url:
        return redact(settings.database_url)
    home = settings.home
    shown = data_dir(home).relative_to(home) if data_dir(home).is_relative_to(home) else home
    return f"the embedded PostgreSQL in {shown} (KAIROS_DATABASE_URL is not set)"


def _with_database(settings: Settings, action: Callable[[Database], Awaitable[T]]) -> T:
    quiet_logs()

    async def go() -> T:
        database = await Database.open(await database_url(settings), check_schema=False)
        async with database:
            return await action(database)

    try:
        return asyncio.run(go())
    except StoreError as err:
        raise fail(str(err)) from None


def _names(found: list[Migration]) -> str:
    return ", ".join(f"{m.version:04d}_{m.name}" for m in found)


@db.command("upgrade")
def upgrade() -> None:
    """Apply the schema migrations this Kairos ships that the database has not had yet.

    Safe to run at any time and from several places at once (migrations are applied in order
    under a lock, each in its own transaction). Uses KAIROS_DATABASE_URL, or the project's
    embedded PostgreSQL when it is unset.

    Example: kairos db upgrade
    """
    settings = _settings()
    want = latest_version()

    async def go(database: Database) -> tuple[int, list[Migration]]:
        have = await database.schema_version()
        if have > want:
            return have, []
        return have, await database.upgrade()

    have, applied = _with_database(settings, go)
    console.print(f"customer store: {escape(_where(settings))}", highlight=False)
    if have > want:
        raise fail(
            f"the database has schema version {have}, newer than this Kairos knows ({want}): "
            "upgrade Kairos instead"
        )
    for migration in applied:
        console.print(f"applied {migration.version:04d}_{migration.name}", highlight=False)
    if applied:
        console.print(f"[green]now at schema version {want}[/]", highlight=False)
    else:
        console.print(f"already at version {want}: nothing to apply", highlight=False)


@db.command("status")
def status() -> None:
    """Say which schema version the database has, and what `kairos db upgrade` would apply.

    Exits 1 when the schema is not the one this Kairos needs (a worker would refuse it).

    Example: kairos db status
    """
    settings = _settings()
    want = latest_version()
    applied = _with_database(settings, lambda database: database.applied_versions())
    have = max(applied, default=0)
    console.print(f"customer store: {escape(_where(settings))}", highlight=False)
    # Not applied: newer ones, and any merged after a newer one was applied.
    pending = [m for m in migrations() if m.version not in applied]
    if have == want and not pending:
        console.print(f"schema version {have}: up to date", highlight=False)
        return
    if have > want:
        raise fail(
            f"schema version {have}, newer than this Kairos knows ({want}): upgrade Kairos "
            "before running it against this database"
        )
    raise fail(
        f"schema version {have}, this Kairos needs {want}: run `kairos db upgrade` to apply "
        f"{_names(pending)}"
    )


@db.command("rotate-keys")
def rotate_keys() -> None:
    """Wrap every customer's data key with the current KAIROS_MASTER_KEY.

    After a master key rotation (the new key in KAIROS_MASTER_KEY, the old one in
    KAIROS_MASTER_KEY_PREVIOUS), run this once; when it reports no key left under an old master
    key, remove KAIROS_MASTER_KEY_PREVIOUS. Payloads in Temporal are not touched: they are
    encrypted with the data keys, which do not change.

    Example: kairos db rotate-keys
    """
    from kairos.runtime.crypto import MasterKeys
    from kairos.store.keys import DatabaseKeys

    settings = _settings()
    master = MasterKeys(settings.master_key, settings.master_key_previous)

    async def go(database: Database) -> tuple[int, int]:
        return await DatabaseKeys(database, master).rotate()

    try:
        rewrapped, current = _with_database(settings, go)
    except KeyUnavailable as err:
        raise fail(str(err)) from None
    console.print(f"customer store: {escape(_where(settings))}", highlight=False)
    console.print(
        f"[green]rewrapped {rewrapped} data keys[/] with master key {master.current.id}; "
        f"{current} already used it. KAIROS_MASTER_KEY_PREVIOUS can now be removed",
        highlight=False,
    )
