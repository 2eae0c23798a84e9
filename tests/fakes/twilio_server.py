"""A fake of Twilio's ``POST /2010-04-01/Accounts/{sid}/Messages.json``, for the official SDK.

It checks what Twilio checks when a message is created (HTTP Basic auth, E.164 ``To``, a sender,
a body of at most 1600 characters) and answers like Twilio: 201 with a message resource, or
``{"code", "message", "more_info", "status"}`` with Twilio's error code.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

from tests.fakes import Answer, Failure, FakeProviderServer

API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600
_MESSAGES = re.compile(rf"^/{API_VERSION}/Accounts/(?P<sid>AC[0-9a-fA-F]{{32}})/Messages\.json$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_MESSAGING_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")
# Twilio's own wording for the errors this fake gives by default.
_DEFAULT_ERRORS = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21606: "The 'From' phone number provided is not a valid message-capable phone number.",
    21610: "Attempt to send to unsubscribed recipient",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21705: "The Messaging Service Sid is invalid.",
}
_STATUS_CODES = {401: 20003, 404: 20404, 429: 20429, 500: 20500}
# The GSM 03.38 basic character set: a message only in these is sent as GSM-7.
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


class FakeTwilio(FakeProviderServer):
    """Twilio's Messages API on 127.0.0.1.

    Attributes:
        account_sid: The account the fake serves (AC + 32 hex digits).
        auth_token: The only auth token it accepts.
        received: Each accepted request; ``body`` has the form fields (``To``, ``From``,
            ``Body``, ``MessagingServiceSid``, ``StatusCallback``...).
        messages: The message resource (sid SM...) created for each accepted request.
    """

    def __init__(self, account_sid: str = "", auth_token: str = "") -> None:
        """Create the fake; it serves once started (``with FakeTwilio() as tw``).

        Args:
            account_sid: The account SID; a random one when empty.
            auth_token: The auth token; a random one when empty.
        """
        super().__init__()
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        self.messages: list[dict[str, Any]] = []  # the message resource created for each

    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """Create a message like Twilio does, or answer with Twilio's error for the request."""
        match = _MESSAGES.match(path.split("?")[0])
        if method != "POST" or match is None:
            return self.error(Failure(404, code=20404))
        if not self._authorized(headers.get("authorization", ""), match["sid"]):
            return self.error(Failure(401, code=20003))
        form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        problem = _validate(form)
        if problem is not None:
            return problem
        failure = self.recipient_failure(form["To"])
        if failure is not None:
            return self.error(failure)
        resource = _message_resource(self.account_sid, form)
        self.record(method, path, headers, form, resource["sid"])
        self.messages.append(resource)
        return Answer(201, {"Content-Type": "application/json"}, json.dumps(resource).encode())

    def error(self, failure: Failure) -> Answer:
        """Twilio's error body for ``failure``, with Retry-After when given."""
        answer = _error(failure.status, failure.code, failure.message)
        if failure.retry_after is not None:
            answer.headers["Retry-After"] = failure.retry_after
        answer.headers.update(failure.headers)
        return answer

    def _authorized(self, header: str, sid: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or sid != self.account_sid:
            return False
        try:
            credentials = base64.b64decode(encoded).decode()
        except ValueError:
            return False
        return credentials == f"{self.account_sid}:{self.auth_token}"


def _validate(form: dict[str, str]) -> Answer | None:
    """Twilio's answer to the first problem in a create-message form, or None."""
    to = form.get("To", "")
    sender, service = form.get("From", ""), form.get("MessagingServiceSid", "")
    body = form.get("Body", "")
    if not to:
        return _error(400, 21604)
    if not _E164.match(to):
        return _error(400, 21211, to=to)
    if not sender and not service:
        return _error(400, 21603)
    if sender and not _E164.match(sender):
        return _error(400, 21606)
    if service and not _MESSAGING_SERVICE.match(service):
        return _error(400, 21705)
    if not body:
        return _error(400, 21602)
    if len(body) > MAX_BODY_CHARS:
        return _error(400, 21617)
    return None


def _message_resource(account_sid: str, form: dict[str, str]) -> dict[str, Any]:
    sid = "SM" + secrets.token_hex(16)
    now = format_datetime(datetime.now(UTC), usegmt=True)
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
    resource = {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": form["Body"],
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": form.get("From") or None,
        "messaging_service_sid": form.get("MessagingServiceSid") or None,
        "num_media": "0",
        "num_segments": str(segments(form["Body"])),
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        # A Messaging Service first accepts a message, then picks a sender and queues it.
        "status": "accepted" if form.get("MessagingServiceSid") else "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": form["To"],
        "uri": f"{uri}.json",
    }
    return resource


def segments(body: str) -> int:
    """How many SMS segments Twilio bills ``body`` as (GSM-7 or UCS-2, concatenated)."""
    single, multi = (160, 153) if set(body) <= _GSM7 else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


def _error(status: int, code: int | None, message: str | None = None, *, to: str = "") -> Answer:
    code = code or _STATUS_CODES.get(status)
    default = _DEFAULT_ERRORS.get(code or 0, "Error")
    body = {
        "code": code,
        "message": message or default.format(to=to),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Answer(status, {"Content-Type": "application/json"}, json.dumps(body).encode())
