"""The schema: schema.sql is the truth, the migrations build exactly it, and a process refuses
a database whose schema it does not know, saying which command to run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import psycopg
import pytest

from kairos.runtime.config import Settings
from kairos.runtime.contract import RunOutcome
from kairos.store import database as database_module
from kairos.store.database import (
    SQL_DIR,
    Database,
    SchemaMismatch,
    latest_version,
    migrations,
)
from kairos.store.embedded import pg_binary


def dump(url: str) -> str:
    """The schema as pg_dump writes it, without comments and blank lines."""
    out = subprocess.run(
        [str(pg_binary("pg_dump")), "--schema-only", "--no-owner", "--no-privileges", "-d", url],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    lines = [line for line in out.splitlines() if line.strip() and not line.startswith("--")]
    # pg_dump 17+ guards the dump with a random \restrict key.
    return "\n".join(line for line in lines if not re.match(r"\\(un)?restrict ", line))


async def test_the_migrations_build_exactly_schema_sql(
    database_url: str, empty_database: str
) -> None:
    # database_url was built by the migrations (the test template); empty_database gets the
    # schema file as written.
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute((SQL_DIR / "schema.sql").read_text().encode())
    assert dump(database_url) == dump(empty_database)


def test_migrations_have_distinct_numbers_in_order() -> None:
    versions = [m.version for m in migrations()]
    assert versions == sorted(set(versions)) and versions[-1] == latest_version()


async def test_a_migration_merged_after_a_newer_one_was_applied_is_applied_on_upgrade(
    empty_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two branches add migrations 2 and 3; the one with 3 merges (and is deployed) first.
    (tmp_path / "migrations").mkdir()
    first = sorted((SQL_DIR / "migrations").glob("0001_*.sql"))[0]
    (tmp_path / "migrations" / first.name).write_text(first.read_text())
    (tmp_path / "migrations" / "0003_third.sql").write_text("CREATE TABLE third (x int);")
    monkeypatch.setattr(database_module, "SQL_DIR", tmp_path)
    async with await Database.open(empty_database, check_schema=False) as database:
        assert [m.version for m in await database.upgrade()] == [1, 3]
        await database.check_schema()
        (tmp_path / "migrations" / "0002_second.sql").write_text("CREATE TABLE second (x int);")
        with pytest.raises(SchemaMismatch, match=r"lacks migration 2 .*run `kairos db upgrade`"):
            await database.check_schema()
        assert [m.version for m in await database.upgrade()] == [2]
        await database.check_schema()
        assert await database.applied_versions() == {1, 2, 3}


async def test_a_database_without_the_schema_is_refused_with_the_command_to_run(
    empty_database: str,
) -> None:
    want = latest_version()
    with pytest.raises(SchemaMismatch, match=rf"has schema version 0, this Kairos needs {want}: "
                       r"run `kairos db upgrade`"):  # fmt: skip
        await Database.open(empty_database)
    async with await Database.open(empty_database, check_schema=False) as database:
        assert [m.version for m in await database.upgrade()] == [m.version for m in migrations()]
        assert await database.upgrade() == []  # applying again changes nothing
        await database.check_schema()


async def test_a_schema_newer_than_this_kairos_is_refused(empty_database: str) -> None:
    async with await Database.open(empty_database, check_schema=False) as database:
        await database.upgrade()
        await database.fetch_one(
            "INSERT INTO kairos_migrations (version, name) VALUES (99, 'future') RETURNING 1"
        )
    with pytest.raises(SchemaMismatch, match="newer than this Kairos knows"):
        await Database.open(empty_database)


async def test_the_worker_refuses_to_start_on_an_unknown_schema(
    settings: Settings, empty_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses

    from kairos import worker

    code = await worker.run(dataclasses.replace(settings, database_url=empty_database))
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("kairos worker: the database at ") and "run `kairos db upgrade`" in err
    assert "Traceback" not in err


async def test_an_unreachable_database_is_one_clear_line() -> None:
    from kairos.store.database import StoreUnavailable

    with pytest.raises(StoreUnavailable) as caught:
        await Database.open("postgresql://kairos@127.0.0.1:9/kairos", timeout=1)
    message = str(caught.value)
    assert message.startswith("cannot reach PostgreSQL at postgresql://kairos@127.0.0.1:9/kairos")
    assert "KAIROS_DATABASE_URL" in message and "\n" not in message


def test_run_outcomes_keep_the_words_the_store_and_histories_hold() -> None:
    # runs.outcome and recorded histories hold these words: renaming one strands every stored
    # run that has it, and the report's index of restarted runs is on the word itself.
    assert {outcome.name: outcome.value for outcome in RunOutcome} == {
        "completed": "completed",
        "converted": "converted",
        "restarted": "restarted",
        "cancelled": "cancelled",
    }
    index = re.search(
        r"CREATE INDEX runs_restarted .* WHERE outcome = '(\w+)'",
        (SQL_DIR / "schema.sql").read_text(encoding="utf-8"),
    )
    assert index is not None
    assert index.group(1) == RunOutcome.restarted
