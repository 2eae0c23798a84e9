"""Events over HTTP: ``POST /v1/track`` and ``POST /v1/identify`` with Segment-shaped bodies.

Authenticated with an API key (``Authorization: Bearer <key>``, or Segment's Basic auth with the
key as user name), validated against the catalogue by the Python client, answered 202 with the
event id once the customer store has committed it (the journeys it starts or wakes are then
started or signalled by this process, or by a worker if Temporal is unreachable). Segment's
``messageId`` becomes the Kairos event id, so a retried call is handled once. Fields Kairos does
not use (``context``, ``integrations``, ``anonymousId``, ``sentAt``, ...) are accepted and
ignored, so Segment libraries and Segment's own webhook destination work unchanged.

``/v1/identify`` also takes two fields of Kairos's own: ``consent`` (topics granted or withdrawn,
``{"marketing": true, "sms": false}``) and ``consentSource`` (who or what gave it, recorded as
the proof of consent; ``"identify"`` when absent).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, TypeGuard, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kairos.language.catalogue import ConsentTopic
from kairos.runtime.client import (
    MAX_DEPTH,
    InvalidCustomerId,
    InvalidEvent,
    InvalidProfile,
    Kairos,
    check_customer_id,
    value_problems,
)
from kairos.web.errors import ApiError, media_type, read_body

log = logging.getLogger(__name__)

# Segment's own limit for one call.
BODY_LIMIT = 32 * 1024


def is_customer_id(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a customer id by the client's rule."""
    try:
        check_customer_id(value)
    except InvalidCustomerId:
        return False
    return True


def _id_text(value: object) -> object:
    # Segment allows numeric user ids; Kairos ids are strings.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class _SegmentCall(BaseModel):
    """What Kairos reads from any Segment call; other Segment fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    user_id: Annotated[str, BeforeValidator(_id_text)] = Field(alias="userId")
    message_id: str | None = Field(default=None, alias="messageId", min_length=1, max_length=200)
    timestamp: datetime | None = None
    type: str | None = None


Call = TypeVar("Call", bound=_SegmentCall)


class TrackCall(_SegmentCall):
    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] = Field(default_factory=dict)


class IdentifyCall(_SegmentCall):
    traits: dict[str, Any] = Field(default_factory=dict)
    consent: dict[ConsentTopic, StrictBool] | None = None
    consent_source: str = Field(
        default="identify", alias="consentSource", min_length=1, max_length=200
    )


class TrackRoutes:
    """``/v1/track`` and ``/v1/identify``: built with the client and the accepted keys."""

    def __init__(self, kairos: Kairos, api_keys: tuple[str, ...]) -> None:
        self.kairos = kairos
        self.api_keys = api_keys

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/track", self.track, methods=["POST"]),
            Route("/v1/identify", self.identify, methods=["POST"]),
        ]

    async def track(self, request: Request) -> Response:
        """Emit an event for a customer; 202 with its id once committed."""
        call = await self._call(request, TrackCall, "track")
        try:
            event_id = await self.kairos.emit(
                call.user_id,
                call.event,
                call.properties,
                event_id=call.message_id,
                timestamp=_aware(call.timestamp),
            )
        except InvalidEvent as err:
            raise ApiError(
                400, "invalid_event", "the event does not match the catalogue", err.problems
            ) from None
        log.info("accepted %s for customer %s (event id %s)", call.event, call.user_id, event_id)
        return JSONResponse({"id": event_id}, status_code=202)

    async def identify(self, request: Request) -> Response:
        """Create or update a customer's profile (and consent); 202 with the call's id."""
        call = await self._call(request, IdentifyCall, "identify")
        call_id = call.message_id or str(uuid.uuid4())
        try:
            await self.kairos.identify(
                call.user_id,
                call.traits,
                consent={str(k): v for k, v in (call.consent or {}).items()} or None,
                source=call.consent_source,
                call_id=call_id,
                timestamp=_aware(call.timestamp),
            )
        except InvalidProfile as err:
            raise ApiError(
                400, "invalid_traits", "the traits do not match the catalogue", err.problems
            ) from None
        log.info("accepted identify for customer %s (id %s)", call.user_id, call_id)
        return JSONResponse({"id": call_id}, status_code=202)

    async def _call(self, request: Request, model: type[Call], kind: str) -> Call:
        """Authenticate, read and validate one call; every failure is an ApiError."""
        self._authenticate(request)
        body = await read_body(request, BODY_LIMIT)
        if media_type(request) != "application/json":
            raise ApiError(
                415,
                "unsupported_media_type",
                f"send JSON with Content-Type: application/json "
                f"(this request is {media_type(request) or 'without a content type'})",
            )
        data = _strict_json(body)
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_body", f"the body must be a JSON object (a {kind} call)")
        depth = value_problems(data, "the values of the call")
        if depth:
            raise ApiError(400, "invalid_body", f"the {kind} call is not valid", depth)
        if data.get("type", kind) != kind:
            raise ApiError(
                400, "invalid_body", f"type is {data['type']!r}, but this endpoint takes {kind}"
            )
        if "userId" not in data and "anonymousId" in data:
            raise ApiError(
                400,
                "invalid_body",
                "userId is required: Kairos runs journeys for known customers, so a call with "
                "only an anonymousId cannot be accepted",
            )
        try:
            call = model.model_validate(data)
        except ValidationError as err:
            raise ApiError(
                400, "invalid_body", f"the {kind} call is not valid", _problems(err)
            ) from None
        try:
            check_customer_id(call.user_id)
        except InvalidCustomerId as err:
            raise ApiError(400, "invalid_body", f"userId: {err}") from None
        return call

    def _authenticate(self, request: Request) -> None:
        key = _presented_key(request.headers.get("authorization", ""))
        challenge = {"WWW-Authenticate": 'Bearer realm="kairos"'}
        if key is None:
            raise ApiError(
                401,
                "unauthorized",
                "send an API key: Authorization: Bearer <key> (or Basic auth with the key as "
                "user name and an empty password, as Segment does)",
                headers=challenge,
            )
        if not self.api_keys:
            raise ApiError(
                401,
                "unauthorized",
                "this server accepts no API keys yet: set KAIROS_API_KEYS",
                headers=challenge,
            )
        # Compare with every key, so timing does not tell which (or whether one) nearly matched.
        matched = False
        for accepted in self.api_keys:
            matched |= hmac.compare_digest(key.encode(), accepted.encode())
        if not matched:
            raise ApiError(401, "unauthorized", "the API key is not valid", headers=challenge)


def _presented_key(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _ = decoded.partition(":")
        return user or None
    return None


def _problems(err: ValidationError) -> list[str]:
    problems = []
    for error in err.errors():
        loc = [str(part) for part in error["loc"]]
        if loc[-1:] == ["[key]"]:  # a key of an object: name the key, not its position
            where = ".".join(loc[:-2]) or "body"
            problems.append(f"{where}: {loc[-2]!r} is not allowed: {error['msg']}")
        else:
            problems.append(f"{'.'.join(loc) or 'body'}: {error['msg']}")
    return problems


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _strict_json(body: bytes) -> Any:
    """The body's JSON, refusing what Python's parser would let through: NaN, Infinity and
    numbers beyond a float (1e400), and nesting too deep to parse."""

    def refuse(literal: str) -> float:
        raise _NotFinite(literal)

    def finite(literal: str) -> float:
        number = float(literal)
        if not math.isfinite(number):
            raise _NotFinite(literal)
        return number

    try:
        return json.loads(body, parse_constant=refuse, parse_float=finite)
    except _NotFinite as err:
        raise ApiError(
            400, "invalid_json", f"{err} is not a finite number: JSON numbers must be finite"
        ) from None
    except RecursionError:
        raise ApiError(
            400, "invalid_json", f"the body is nested too deeply (at most {MAX_DEPTH} levels)"
        ) from None
    except ValueError as err:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {err}") from None


class _NotFinite(Exception):
    pass
