"""The Starlette application: every route of the front door, and how errors are answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from kairos.runtime.client import Kairos
from kairos.runtime.config import Settings
from kairos.store.database import StoreUnavailable
from kairos.web.codec import CodecRoutes
from kairos.web.config import WebConfig
from kairos.web.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    unavailable_handler,
)
from kairos.web.health import HealthRoutes
from kairos.web.sendgrid import SendGridRoutes
from kairos.web.track import TrackRoutes
from kairos.web.twilio import TwilioRoutes
from kairos.web.unsubscribe import UnsubscribeRoutes


def create_app(
    kairos: Kairos,
    settings: Settings,
    web: WebConfig,
    *,
    close_client: bool = False,
) -> Starlette:
    """The front door's ASGI application.

    Args:
        kairos: A client on the customer store; its Temporal client may be connected lazily,
            so the app starts and accepts events while Temporal is down (``/ready`` says so).
        settings: Public URL, secret, Twilio auth token, sender name.
        web: API keys, SendGrid verification key, codec tokens: read once, where the
            process starts (``kairos serve``, ``kairos dev``).
        close_client: Close ``kairos`` (and the store it opened) when the app stops, through
            the ASGI lifespan; for an app that owns its client (:func:`server.build_app`).
    """
    routes = [
        *HealthRoutes(kairos.store.database, kairos.client).routes(),
        *UnsubscribeRoutes(kairos, settings).routes(),
        *TwilioRoutes(kairos, settings).routes(),
        *SendGridRoutes(kairos, web.sendgrid_public_key).routes(),
        *TrackRoutes(kairos, web.api_keys).routes(),
        *CodecRoutes(kairos.store.keys, web.codec_tokens, web.codec_origins).routes(),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if close_client:
                await kairos.close()

    return Starlette(
        routes=routes,
        exception_handlers={
            ApiError: api_error_handler,
            StoreUnavailable: unavailable_handler,
            HTTPException: http_error_handler,
        },
        lifespan=lifespan,
    )
