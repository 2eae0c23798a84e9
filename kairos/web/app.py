"""The Starlette application: every route of the front door, and how errors are answered."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException

from kairos.client import Kairos
from kairos.config import Settings
from kairos.web.config import WebConfig, load_web_config
from kairos.web.errors import (
    ApiError,
    TemporalUnavailable,
    api_error_handler,
    http_error_handler,
    unavailable_handler,
)
from kairos.web.health import HealthRoutes
from kairos.web.phonebook import Phonebook
from kairos.web.sendgrid import SendGridRoutes
from kairos.web.track import TrackRoutes
from kairos.web.twilio import TwilioRoutes
from kairos.web.unsubscribe import UnsubscribeRoutes


def create_app(
    kairos: Kairos,
    settings: Settings,
    web: WebConfig | None = None,
    *,
    phonebook: Phonebook | None = None,
) -> Starlette:
    """The front door's ASGI application.

    Args:
        kairos: A client; it may be connected lazily, so the app starts while Temporal is down
            (``/ready`` says so, and calls that need Temporal answer 503).
        settings: Public URL, secret, Twilio auth token, sender name.
        web: API keys, SendGrid verification key, port; read from the environment when None.
        phonebook: Where phone numbers are linked to customers; by default the phone workflows
            on the worker's task queue (tests pass their own).
    """
    web = web or load_web_config(home=settings.home)
    phonebook = phonebook or Phonebook(kairos.client, settings.secret, kairos.task_queue)
    routes = [
        *HealthRoutes(kairos.client).routes(),
        *UnsubscribeRoutes(kairos, settings).routes(),
        *TwilioRoutes(settings, phonebook).routes(),
        *SendGridRoutes(kairos, web.sendgrid_public_key).routes(),
        *TrackRoutes(kairos, web.api_keys, phonebook).routes(),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            ApiError: api_error_handler,
            TemporalUnavailable: unavailable_handler,
            HTTPException: http_error_handler,
        },
    )
