"""Email through SendGrid's v3 ``mail/send`` API, with the official ``sendgrid`` SDK.

The SDK is synchronous (urllib underneath), so each send runs in a worker thread with a socket
timeout. Every failure becomes an ``ApplicationError`` typed as in ``activities.providers.base``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import time
import urllib.error
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers import mail as sg
from sendgrid.helpers.mail.exceptions import ApiKeyIncludedException
from temporalio.exceptions import ApplicationError

from activities.providers.base import (
    INVALID_RECIPIENT,
    OUTCOME_UNKNOWN,
    PAYLOAD_REJECTED,
    PROVIDER_AUTH,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    mask_email,
    provider_error,
    retry_delay,
    scrub,
)
from kairos.language.plan import Category, Channel
from kairos.messages.models import EmailMessage, Receipt
from kairos.runtime.webhooks import SENDGRID_KEY_ARG

logger = logging.getLogger(__name__)

PROVIDER = "sendgrid"
DEFAULT_BASE_URL = "https://api.sendgrid.com"
KEY_ARG = SENDGRID_KEY_ARG

# SendGrid names the offending field in each error; these are the recipient's address.
_RECIPIENT_FIELD = re.compile(r"personalizations\.\d+\.(to|cc|bcc)(\..*)?|email")
_PROVIDER_TEXT_CHARS = 300


class SendGridSender:
    """Sends email with SendGrid's Mail Send API."""

    name = PROVIDER
    deduplicates = False

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "",
        asm_group_id: int | None = None,
        sandbox: bool = False,
        timeout: float = 10.0,
    ) -> None:
        """Create a sender for one SendGrid account.

        Args:
            api_key: A SendGrid API key with the Mail Send permission.
            base_url: The API's address; empty for https://api.sendgrid.com (tests use a fake).
            asm_group_id: The unsubscribe group added to marketing email, so SendGrid's
                unsubscribe link and suppression list apply to it.
            sandbox: Ask SendGrid to validate each request without delivering it.
            timeout: Seconds to wait for SendGrid to connect and to answer.

        Raises:
            ValueError: ``api_key`` is empty.
        """
        if not api_key:
            raise ValueError("SendGridSender needs an API key: set SENDGRID_API_KEY")
        self._client = SendGridAPIClient(
            api_key=api_key, host=(base_url or DEFAULT_BASE_URL).rstrip("/")
        )
        # The SDK builds its HTTP client once but reads this attribute on every request.
        self._client.client.timeout = timeout
        self._asm_group_id = asm_group_id
        self._sandbox = sandbox

    async def send_email(self, message: EmailMessage) -> Receipt:
        """Hand ``message`` to SendGrid.

        Returns:
            A receipt whose ``provider_id`` is SendGrid's X-Message-Id (empty in sandbox mode,
            where SendGrid delivers nothing and assigns no id).

        Raises:
            ApplicationError: Typed RateLimited, ProviderUnavailable, InvalidRecipient,
                ProviderAuth or PayloadRejected.
        """
        try:
            mail = build_mail(message, asm_group_id=self._asm_group_id, sandbox=self._sandbox)
        except ApiKeyIncludedException:
            raise provider_error(
                PAYLOAD_REJECTED,
                "SendGrid's library refused the email: its content looks like it contains a "
                "SendGrid API key (SG.xxx.yyy); check the template",
                {"provider": PROVIDER, "key": message.key},
            ) from None
        return await asyncio.to_thread(self._send, mail, message)

    def _send(self, mail: sg.Mail, message: EmailMessage) -> Receipt:
        logger.debug("sendgrid: sending %s to %s", message.key, message.to)
        try:
            response = self._client.send(mail)
        except HTTPError as exc:
            headers = {str(k).lower(): str(v) for k, v in exc.headers.items()}
            # Not chained: the SDK's exception would only repeat the status in the UI.
            raise classify_error(
                exc.status_code, exc.body, headers, message, now=time.time()
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(exc, message) from exc
        provider_id = str(response.headers.get("X-Message-Id") or "")
        logger.info("sendgrid: accepted %s as %r", message.key, provider_id)
        return Receipt(
            provider=PROVIDER, provider_id=provider_id, key=message.key, channel=Channel.email
        )


def build_mail(message: EmailMessage, *, asm_group_id: int | None, sandbox: bool) -> sg.Mail:
    """The v3 mail/send request for ``message``, built with the SDK's helpers."""
    mail = sg.Mail()
    mail.from_email = _address(sg.From(), message.from_email, message.from_name)
    personalization = sg.Personalization()
    personalization.add_to(_address(sg.To(), message.to))
    mail.add_personalization(personalization)
    mail.subject = sg.Subject(message.subject)
    # SendGrid requires text/plain before text/html, and rejects empty content values.
    if message.text:
        mail.add_content(sg.Content(sg.MimeType.text, message.text))
    if message.html:
        mail.add_content(sg.Content(sg.MimeType.html, message.html))
    for name, value in message.headers.items():
        mail.add_header(sg.Header(name, value))
    for category in message.categories:
        mail.add_category(sg.Category(category))
    for name, value in custom_args(message).items():
        mail.add_custom_arg(sg.CustomArg(name, value))
    if asm_group_id is not None and message.category is Category.marketing:
        mail.asm = sg.Asm(sg.GroupId(asm_group_id))
    if sandbox:
        mail.mail_settings = sg.MailSettings(sandbox_mode=sg.SandBoxMode(True))
    return mail


def _address(address: sg.Email, email: str, name: str = "") -> sg.Email:
    # Set, not passed to the constructor: given no name, the SDK parses "Name <addr>" out of the
    # address and silently drops anything that isn't one, so SendGrid would never see it.
    address.email = email
    if name:
        address.name = name
    return address


def custom_args(message: EmailMessage) -> dict[str, str]:
    """What SendGrid echoes back in event webhooks: the message metadata and its key."""
    return {**message.metadata, KEY_ARG: message.key}


def classify_error(
    status: int, body: bytes, headers: Mapping[str, str], message: EmailMessage, *, now: float
) -> ApplicationError:
    """Turn a SendGrid error response into a typed ``ApplicationError``.

    Args:
        status: The HTTP status.
        body: The response body: ``{"errors": [{"message", "field", "help"}]}`` when JSON.
        headers: The response headers, names lower-cased.
        message: The message that was being sent.
        now: The current epoch time, to turn Retry-After dates into delays.
    """
    errors = _errors(body)
    field = next((e["field"] for e in errors if e["field"]), "")
    text = scrub(
        "; ".join(e["message"] for e in errors if e["message"]), message.to, mask_email(message.to)
    )[:_PROVIDER_TEXT_CHARS]
    details: dict[str, object] = {
        "provider": PROVIDER,
        "status": status,
        "field": field,
        "key": message.key,
    }
    where = f"HTTP {status}, {field}" if field else f"HTTP {status}"
    if status == 429:
        delay = retry_delay(headers.get("retry-after"), headers.get("x-ratelimit-reset"), now=now)
        return provider_error(
            RATE_LIMITED,
            f"SendGrid rate limit ({where}): too many requests; {_retrying(delay)}",
            details,
            retry_after=delay,
        )
    if status >= 500 or status == 408:
        return provider_error(
            PROVIDER_UNAVAILABLE,
            f"SendGrid is unavailable ({where}): {text or 'server error'}; will retry",
            details,
        )
    if status in (401, 403):
        return provider_error(PROVIDER_AUTH, _auth_message(status, text), details)
    if status == 400 and any(_RECIPIENT_FIELD.fullmatch(e["field"]) for e in errors):
        return provider_error(
            INVALID_RECIPIENT,
            f"SendGrid rejected {mask_email(message.to)} ({where}): "
            f"{text.rstrip('.') or 'not a valid email address'}; the address cannot get email",
            details,
        )
    if status == 413:
        text = text or "the message is larger than SendGrid accepts (30 MB in total)"
    return provider_error(
        PAYLOAD_REJECTED,
        f"SendGrid rejected the request ({where}): {text or 'bad request'}",
        details,
    )


def _errors(body: bytes) -> list[dict[str, str]]:
    """SendGrid's error list, each with string ``message`` and ``field`` (empty if absent)."""
    try:
        parsed: Any = json.loads(body.decode("utf-8", "replace")) if body else {}
    except ValueError:
        return []
    raw = parsed.get("errors") if isinstance(parsed, dict) else None
    if not isinstance(raw, list):
        return []
    return [
        {"message": str(e.get("message") or ""), "field": str(e.get("field") or "")}
        for e in raw
        if isinstance(e, dict)
    ]


def _auth_message(status: int, text: str) -> str:
    meaning = (
        "the API key is missing, wrong or revoked; check SENDGRID_API_KEY"
        if status == 401
        else "the API key may not send mail (it needs the Mail Send permission) "
        "or the sender is not verified"
    )
    suffix = f" ({text})" if text else ""
    return f"SendGrid refused the request (HTTP {status}): {meaning}{suffix}"


def _retrying(delay: timedelta | None) -> str:
    if delay is None:
        return "will retry with backoff"
    return f"will retry in {delay.total_seconds():g}s as SendGrid asked"


def _unreachable(exc: BaseException, message: EmailMessage) -> ApplicationError:
    what = "timed out" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else "failed"
    details = {"provider": PROVIDER, "key": message.key}
    # urllib wraps what goes wrong while connecting and sending the request in URLError;
    # anything later (waiting for the answer, reading it) means SendGrid may have the email.
    if isinstance(exc, urllib.error.URLError):
        return provider_error(
            PROVIDER_UNAVAILABLE,
            f"SendGrid could not be reached ({what}: {exc.reason}); will retry",
            details,
        )
    return provider_error(
        OUTCOME_UNKNOWN,
        f"SendGrid took the request but its answer {what} ({type(exc).__name__}: {exc}); "
        "waiting for its feedback before sending again",
        details,
    )
