"""A fake of SendGrid's v3 ``POST /v3/mail/send``, close enough for the official SDK.

It checks what SendGrid checks first (Bearer auth, size, the shape of the JSON) and answers
like SendGrid: 202 with an empty body and an X-Message-Id header, 200 in sandbox mode, and
``{"errors": [{"message", "field", "help"}]}`` otherwise.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from tests.fakes import Answer, Failure, FakeProviderServer

MAIL_SEND = "/v3/mail/send"
MAX_BYTES = 30 * 1024 * 1024  # SendGrid's limit for a whole message
_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;.]+$")
_RESERVED_HEADERS = frozenset(
    {
        *("x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type"),
        *("content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc"),
    }
)
_DEFAULT_MESSAGES = {
    400: "Bad Request",
    401: "The provided authorization grant is invalid, expired, or revoked",
    403: "access forbidden",
    413: "The total size of your email exceeds 30MB",
    429: "too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class FakeSendGrid(FakeProviderServer):
    """SendGrid's Mail Send API on 127.0.0.1.

    Attributes:
        api_key: The only API key it accepts.
        received: Each accepted request; ``body`` is the parsed JSON payload.
        message_ids: The X-Message-Id given to each message sent (not in sandbox mode).
    """

    def __init__(
        self, api_key: str = "SG.fake-key.for-tests", *, max_bytes: int = MAX_BYTES
    ) -> None:
        """Create the fake; it serves once started (``with FakeSendGrid() as sg``).

        Args:
            api_key: The API key clients must send as ``Authorization: Bearer <key>``.
            max_bytes: The largest request body accepted; larger ones get 413.
        """
        super().__init__()
        self.api_key = api_key
        self.max_bytes = max_bytes
        self.message_ids: list[str] = []  # the X-Message-Id of each message sent

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """Validate one mail/send request like SendGrid does, and accept it or say why not."""
        if method != "POST" or path.split("?")[0] != MAIL_SEND:
            return _errors(404, "resource not found")
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error(Failure(401))
        if len(body) > self.max_bytes:
            return self.error(Failure(413))
        try:
            payload = json.loads(body)
        except ValueError:
            return _errors(400, "Bad Request")
        if not isinstance(payload, dict):
            return _errors(400, "Bad Request")
        problem = _validate(payload)
        if problem is not None:
            field, message = problem
            return _errors(400, message, field=field)
        for recipient in _recipients(payload):
            failure = self.recipient_failure(recipient)
            if failure is not None:
                return self.error(failure)
        if payload.get("mail_settings", {}).get("sandbox_mode", {}).get("enable") is True:
            self.record(method, path, headers, payload)
            return Answer(200)  # validated, not sent: SendGrid assigns no message id
        message_id = secrets.token_urlsafe(16)[:22]
        self.record(method, path, headers, payload, message_id)
        self.message_ids.append(message_id)
        return Answer(202, {"X-Message-Id": message_id})

    def error(self, failure: Failure) -> Answer:
        """SendGrid's error body for ``failure``, with its rate-limit headers for 429."""
        message = failure.message or _DEFAULT_MESSAGES.get(failure.status, "error")
        answer = _errors(failure.status, message, field=failure.field)
        if failure.retry_after is not None:
            answer.headers["Retry-After"] = failure.retry_after
        answer.headers.update(failure.headers)
        return answer


# SendGrid's own wording for the problems this fake checks.
_NO_PERSONALIZATIONS = (
    "The personalizations field is required and must have at least one personalization."
)
_NO_TO = (
    "The to array is required for all personalization objects, and must have at least one "
    "email object with a valid email address."
)
_BAD_ADDRESS = "Does not contain a valid address."
_BAD_FROM = "The from email does not contain a valid address."
_NO_SUBJECT = (
    "The subject is required. You can get around this requirement if you use a template with "
    "a subject defined or if every personalization has a subject defined."
)
_NO_CONTENT = (
    "Unless a valid template_id is provided, the content parameter is required. There must be "
    "at least one defined content block."
)
_EMPTY_CONTENT = "The content value must be a string at least one character in length."
_CONTENT_ORDER = "If present, text/plain and text/html may only be provided in that order."
_ORDER = ("text/plain", "text/html")

Problem = tuple[str, str]  # (field, message)


def _validate(payload: dict[str, Any]) -> Problem | None:
    """The first problem SendGrid would report, or None."""
    checks = (
        _check_personalizations,
        _check_from,
        _check_subject,
        _check_content,
        _check_headers,
        _check_custom_args,
        _check_categories,
    )
    return next((p for p in (check(payload) for check in checks) if p is not None), None)


def _check_personalizations(payload: dict[str, Any]) -> Problem | None:
    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        return "personalizations", _NO_PERSONALIZATIONS
    for p, personalization in enumerate(personalizations):
        to = personalization.get("to") if isinstance(personalization, dict) else None
        if not isinstance(to, list) or not to:
            return f"personalizations.{p}.to", _NO_TO
        for t, recipient in enumerate(to):
            email = recipient.get("email") if isinstance(recipient, dict) else None
            if not _ADDRESS.match(str(email or "")):
                return f"personalizations.{p}.to.{t}.email", _BAD_ADDRESS
    return None


def _check_from(payload: dict[str, Any]) -> Problem | None:
    sender = payload.get("from")
    email = sender.get("email") if isinstance(sender, dict) else None
    if not _ADDRESS.match(str(email or "")):
        return "from.email", _BAD_FROM
    return None


def _check_subject(payload: dict[str, Any]) -> Problem | None:
    every_personalization = all(p.get("subject") for p in payload["personalizations"])
    subject = payload.get("subject")
    if not every_personalization and not (isinstance(subject, str) and subject):
        return "subject", _NO_SUBJECT
    return None


def _check_content(payload: dict[str, Any]) -> Problem | None:
    content = payload.get("content")
    if not isinstance(content, list) or not content:
        return "content", _NO_CONTENT
    for c, block in enumerate(content):
        value = block.get("value") if isinstance(block, dict) else None
        if not (isinstance(value, str) and value):
            return f"content.{c}.value", _EMPTY_CONTENT
    types = [block.get("type") for block in content if block.get("type") in _ORDER]
    if types != sorted(types, key=_ORDER.index):
        return "content", _CONTENT_ORDER
    return None


def _check_headers(payload: dict[str, Any]) -> Problem | None:
    headers = payload.get("headers", {})
    if not isinstance(headers, dict):
        return "headers", "Invalid type. Expected: object."
    for name, value in headers.items():
        if not isinstance(value, str):
            return f"headers.{name}", "Invalid type. Expected: string."
        if name.lower() in _RESERVED_HEADERS:
            return "headers", f"The header {name} is reserved and cannot be set."
    return None


def _check_custom_args(payload: dict[str, Any]) -> Problem | None:
    custom_args = payload.get("custom_args", {})
    if not isinstance(custom_args, dict):
        return "custom_args", "Invalid type. Expected: object."
    for name, value in custom_args.items():
        if not isinstance(value, str):
            return f"custom_args.{name}", "Invalid type. Expected: string."
    return None


def _check_categories(payload: dict[str, Any]) -> Problem | None:
    categories = payload.get("categories", [])
    if not isinstance(categories, list) or len(categories) > 10:
        return "categories", "Too many categories. You may only include up to 10 categories."
    if any(not isinstance(c, str) or len(c) > 255 for c in categories):
        return "categories", "A category cannot be longer than 255 characters."
    return None


def _recipients(payload: dict[str, Any]) -> list[str]:
    return [to["email"] for p in payload["personalizations"] for to in p["to"]]


def _errors(status: int, message: str, *, field: str | None = None) -> Answer:
    body = {"errors": [{"message": message, "field": field, "help": None}]}
    return Answer(status, {"Content-Type": "application/json"}, json.dumps(body).encode())
