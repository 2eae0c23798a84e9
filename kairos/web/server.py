"""Serving the front door with uvicorn: from ``kairos serve``, or inside another process.

The app needs PostgreSQL to start (``build_app`` says clearly when it cannot reach it) and
closes its connections when it stops. The Temporal client connects lazily, so the server starts
and accepts events while Temporal is still coming up or down: the events are committed, ``/ready``
answers 503 and the Temporal calls are made once it is back (by a worker, if not by this
process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.applications import Starlette

from kairos.language.project import load_project
from kairos.runtime.client import Kairos
from kairos.runtime.config import Settings
from kairos.web.app import create_app
from kairos.web.config import WebConfig

log = logging.getLogger(__name__)


async def build_app(settings: Settings, web: WebConfig) -> Starlette:
    """The app for this project (journeys compiled from ``settings.home``), with its own
    connection to the customer store, closed when the app stops.

    Raises:
        ProjectError: The journeys do not compile.
        StoreUnavailable: PostgreSQL cannot be reached.
        SchemaMismatch: The database needs `kairos db upgrade`.
    """
    project = load_project(settings.home, actions=settings.actions, cache=settings.project_cache)
    kairos = await Kairos.connect(settings, project=project)
    return create_app(kairos, settings, web, close_client=True)


async def serve(app: Starlette, *, host: str, port: int, log_level: str = "info") -> None:
    """Serve until SIGINT or SIGTERM (uvicorn's own handling, with a graceful shutdown)."""
    server = uvicorn.Server(_config(app, host, port, log_level))
    await server.serve()


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the process it runs in."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def running(
    app: Starlette, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> AsyncIterator[str]:
    """Serve ``app`` in this event loop for the duration of the block; yields its base URL.

    Port 0 picks a free port. The app's lifespan runs (an app that owns its client closes it
    when the block ends). Used by ``make dev`` next to the worker, and by tests.
    """
    server = _EmbeddedServer(_config(app, host, port, log_level))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # raises why it could not start
                raise RuntimeError(f"the web server did not start on {host}:{port}")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()
        yield f"http://{host}:{bound[1]}"
    finally:
        server.should_exit = True
        await task


def _config(app: Starlette, host: str, port: int, log_level: str) -> uvicorn.Config:
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    # After Config, which (re)configures uvicorn's loggers.
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactedAccessLog) for f in access.filters):
        access.addFilter(RedactedAccessLog())
    return config


class RedactedAccessLog(logging.Filter):
    """Access log lines without secrets: an unsubscribe token (a bearer capability for 60 days)
    becomes ``/u/[token]`` and a query string (where a client may have put an API key)
    ``?[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn's access line: client address, method, path with query, HTTP version, status.
        if isinstance(args, tuple) and len(args) == 5:
            record.args = (args[0], args[1], redacted_path(str(args[2])), *args[3:])
        return True


def redacted_path(target: str) -> str:
    """A request target fit for a log (see :class:`RedactedAccessLog`)."""
    path, question, _query = target.partition("?")
    if path.startswith("/u/"):
        path = "/u/[token]"
    return path + ("?[redacted]" if question else "")
