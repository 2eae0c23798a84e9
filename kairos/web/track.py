"""Events over HTTP: ``POST /v1/track`` and ``POST /v1/identify`` with Segment-shaped bodies.

Authenticated with an API key (``Authorization: Bearer <key>``, or Segment's Basic auth with the
key as user name), validated against the catalogue exactly as the Python client does, answered
202 with the event id once Temporal has it. Segment's ``messageId`` becomes the Kairos event id,
so a retried call is handled once. Fields Kairos does not use (``context``, ``integrations``,
``anonymousId``, ``sentAt``, ...) are accepted and ignored, so Segment libraries and Segment's
own webhook destination work unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, TypeGuard, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kairos import phone
from kairos.catalogue import AttrType
from kairos.client import InvalidEvent, Kairos
from kairos.web.errors import ApiError, media_type, read_body, temporal
from kairos.web.phonebook import Phonebook

log = logging.getLogger(__name__)

# Segment's own limit for one call.
BODY_LIMIT = 32 * 1024


def is_customer_id(value: object) -> TypeGuard[str]:
    """The client's rule for customer ids, checked before anything else touches Temporal."""
    return (
        isinstance(value, str)
        and bool(value.strip())
        and len(value) <= 200
        and not any(c in value for c in "\n\r\t")
    )


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


class TrackRoutes:
    """``/v1/track`` and ``/v1/identify``: built with the client, keys and phonebook."""

    def __init__(self, kairos: Kairos, api_keys: tuple[str, ...], phonebook: Phonebook) -> None:
        self.kairos = kairos
        self.api_keys = api_keys
        self.phonebook = phonebook
        catalogue = kairos.project.catalogue
        self.catalogue = catalogue
        self.phone_attribute = catalogue.attribute_of_type(AttrType.phone)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/track", self.track, methods=["POST"]),
            Route("/v1/identify", self.identify, methods=["POST"]),
        ]

    async def track(self, request: Request) -> Response:
        """Emit an event for a customer; 202 with its id."""
        call = await self._call(request, TrackCall, "track")
        problems = self.catalogue.validate_event(call.event, call.properties)
        if problems:
            raise ApiError(400, "invalid_event", "the event does not match the catalogue", problems)
        # Linked before the event is accepted: a retry after a 503 then repeats both.
        await self._link_phone(
            call.user_id, self.catalogue.profile_updates(call.event, call.properties)
        )
        try:
            async with temporal():
                event_id = await self.kairos.emit(
                    call.user_id,
                    call.event,
                    call.properties,
                    event_id=call.message_id,
                    timestamp=_aware(call.timestamp),
                )
        except InvalidEvent as err:
            raise ApiError(400, "invalid_event", str(err), err.problems) from None
        log.info("accepted %s for customer %s (event id %s)", call.event, call.user_id, event_id)
        return JSONResponse({"id": event_id}, status_code=202)

    async def identify(self, request: Request) -> Response:
        """Create or update a customer's profile; 202 with the call's id."""
        call = await self._call(request, IdentifyCall, "identify")
        problems = self.catalogue.validate_profile(call.traits)
        if problems:
            raise ApiError(400, "invalid_traits", "the traits do not match the catalogue", problems)
        await self._link_phone(call.user_id, call.traits)
        try:
            async with temporal():
                await self.kairos.identify(call.user_id, call.traits)
        except InvalidEvent as err:  # InvalidProfile is one
            raise ApiError(400, "invalid_traits", str(err), err.problems) from None
        call_id = call.message_id or str(uuid.uuid4())
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
        try:
            data = json.loads(body)
        except ValueError as err:
            raise ApiError(400, "invalid_json", f"the body is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_body", f"the body must be a JSON object (a {kind} call)")
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
        if not is_customer_id(call.user_id):
            raise ApiError(
                400,
                "invalid_body",
                "userId: a customer id is a non-empty string of at most 200 characters "
                "without line breaks or tabs, such as 'c-42'",
            )
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

    async def _link_phone(self, customer_id: str, attributes: dict[str, Any]) -> None:
        """Link the customer to their phone number, so SMS STOP from it reaches them."""
        raw = attributes.get(self.phone_attribute or "")
        if not isinstance(raw, str) or not raw:
            return
        try:
            number = phone.normalise(raw)
        except phone.PhoneError:
            return  # the catalogue accepted its form, but it is no real number: nothing to link
        async with temporal():
            await self.phonebook.link(number, customer_id)


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
        where = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return problems


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
