"""Liveness and readiness: ``GET /health`` (the process answers) and ``GET /ready`` (Temporal too).

A load balancer should route to an instance only while ``/ready`` is 200; an orchestrator should
restart one only when ``/health`` fails, never because Temporal is down.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from temporalio.client import Client
from temporalio.service import RPCError

from kairos.web.errors import TemporalUnavailable, temporal, unavailable_headers

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 3.0


class HealthRoutes:
    """``/health`` and ``/ready``: built with the Temporal client to check."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/health", self.health, methods=["GET"]),
            Route("/ready", self.ready, methods=["GET"]),
        ]

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        """200 when Temporal answers its health check, else 503 with Retry-After."""
        try:
            async with temporal(READY_TIMEOUT_SECONDS):
                serving = await self.client.service_client.check_health()
        except (TemporalUnavailable, RPCError) as err:
            log.warning("not ready: %s", err)
            return _not_ready("unreachable")
        if not serving:
            return _not_ready("not serving")
        return JSONResponse({"status": "ready", "temporal": "ok"})


def _not_ready(temporal_status: str) -> Response:
    # Internal host names stay in the log; the answer only says what is wrong.
    return JSONResponse(
        {"status": "unavailable", "temporal": temporal_status},
        status_code=503,
        headers=unavailable_headers(),
    )
