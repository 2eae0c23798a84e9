"""Liveness and readiness: ``GET /health`` (the process answers) and ``GET /ready`` (PostgreSQL
and Temporal answer too, each reported on its own).

An orchestrator should restart an instance only when ``/health`` fails, never because a service
it depends on is down. ``/ready`` is 503 only while PostgreSQL is unreachable: that is all the
front door needs to accept events (the Temporal calls they lead to wait for a worker). While
Temporal is unreachable it answers 200 ``degraded`` and says so, for monitoring.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from temporalio.client import Client
from temporalio.service import RPCError

from kairos.store.database import Database, StoreUnavailable
from kairos.web.errors import unavailable_headers

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 3.0
OK = "ok"


class HealthRoutes:
    """``/health`` and ``/ready``: built with the database and the Temporal client to check."""

    def __init__(self, database: Database, client: Client) -> None:
        self.database = database
        self.client = client

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
        ]

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """200 while PostgreSQL answers (``degraded`` when Temporal does not), else 503 with
        Retry-After; the body says which is down (internal host names stay in the log)."""
        postgres, temporal = await asyncio.gather(self._postgres(), self._temporal())
        body = {"postgres": postgres, "temporal": temporal}
        if postgres != OK:
            return JSONResponse(
                {"status": "unavailable", **body}, status_code=503, headers=unavailable_headers()
            )
        return JSONResponse({"status": "ready" if temporal == OK else "degraded", **body})

    async def _postgres(self) -> str:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await self.database.fetch_one("SELECT 1")
        except (StoreUnavailable, TimeoutError) as err:
            log.warning("not ready: PostgreSQL: %s", err or "timed out")
            return "unreachable"
        return OK

    async def _temporal(self) -> str:
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                serving = await self.client.service_client.check_health()
        except (RPCError, RuntimeError, TimeoutError) as err:
            # A lazily connected client reports a server it cannot reach as RuntimeError.
            log.warning("not ready: Temporal: %s", err or "timed out")
            return "unreachable"
        return OK if serving else "not serving"
