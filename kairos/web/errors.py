"""How the front door says no: JSON errors, size limits, and a store outage as 503.

Every refusal names what is wrong. A request is answered 2xx once what it carries is committed
to the customer store (PostgreSQL); the Temporal calls it leads to are made afterwards, by this
process or a worker, so a Temporal outage delays journeys but refuses nothing. When PostgreSQL
cannot be reached the answer is 503 with Retry-After, so the sender tries again instead of
losing the event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 10


class ApiError(Exception):
    """A request the front door refuses: answered with ``status`` and a JSON body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        problems: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = list(problems)
        self.headers = dict(headers or {})


def json_error(
    status: int,
    code: str,
    message: str,
    problems: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The one shape of every JSON error: ``{"error", "message", "problems"?}``."""
    body: dict[str, Any] = {"error": code, "message": message}
    if problems:
        body["problems"] = list(problems)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def unavailable_headers() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_error(exc.status, exc.code, exc.message, exc.problems, exc.headers)


async def unavailable_handler(request: Request, exc: Exception) -> Response:
    """A :class:`kairos.store.database.StoreUnavailable`: 503, so the sender retries."""
    # The cause names internal hosts: it goes to the log, not to the caller.
    log.warning("answering 503 to %s %s: %s", request.method, request.url.path, exc)
    return json_error(
        503,
        "store_unavailable",
        "Kairos cannot record this right now: retry later",
        headers=unavailable_headers(),
    )


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    phrase = HTTPStatus(exc.status_code).phrase
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    message = exc.detail if exc.detail != phrase else _http_message(exc.status_code, request)
    return json_error(exc.status_code, code, message, headers=exc.headers)


def _http_message(status: int, request: Request) -> str:
    if status == 404:
        return f"no endpoint at {request.url.path} (see docs/web.md for the endpoints)"
    if status == 405:
        return f"{request.method} is not allowed on {request.url.path}"
    return HTTPStatus(status).phrase


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything longer than ``limit`` bytes."""
    too_large = ApiError(413, "payload_too_large", f"the request body is larger than {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def with_body(request: Request, body: bytes) -> Request:
    """A copy of ``request`` whose body is ``body`` (already read), so forms can be parsed."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


def media_type(request: Request) -> str:
    """The request's content type without parameters, lower-cased."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()
