"""SMS through Twilio's Messages API, with the official ``twilio`` SDK.

The SDK is synchronous (requests underneath), so each send runs in a worker thread with a
timeout. Every failure becomes an ``ApplicationError`` typed as in ``activities.providers.base``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from temporalio.exceptions import ApplicationError
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from activities.providers.base import (
    INVALID_RECIPIENT,
    OUTCOME_UNKNOWN,
    PAYLOAD_REJECTED,
    PROVIDER_AUTH,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    RECIPIENT_OPTED_OUT,
    mask_phone,
    provider_error,
    retry_delay,
    scrub,
)
from kairos.language.plan import Channel
from kairos.messages.models import Receipt, SmsMessage

logger = logging.getLogger(__name__)

PROVIDER = "twilio"
OPTED_OUT = 21610

# Twilio error codes that mean this recipient cannot get this SMS, with what each means.
INVALID_RECIPIENT_CODES: Mapping[int, str] = {
    21211: "not a valid phone number",
    21217: "the phone number does not appear to be valid",
    21401: "not a valid phone number",
    21407: "this kind of number cannot receive SMS",
    21408: "SMS to this country is not enabled on the Twilio account (Geo Permissions)",
    21612: "Twilio cannot route SMS from our sender to this number",
    21614: "not a mobile number; it cannot receive SMS",
}
# Codes about our own request, worded so support knows which setting or template to look at.
PAYLOAD_CODES: Mapping[int, str] = {
    21602: "the message body is empty",
    21603: "no sender: set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID",
    21606: "TWILIO_FROM_NUMBER is not an SMS-capable number on this Twilio account",
    21212: "TWILIO_FROM_NUMBER is not a valid phone number",
    21617: "the message body is longer than 1600 characters",
    21701: "TWILIO_MESSAGING_SERVICE_SID does not name a Messaging Service on this account",
    21705: "TWILIO_MESSAGING_SERVICE_SID is not valid",
}
_AUTH_CODES = frozenset({20003, 20005, 20006})
_RATE_CODES = frozenset({20429, 14107})
_PROVIDER_TEXT_CHARS = 300


class TwilioSender:
    """Sends SMS with Twilio's Programmable Messaging API."""

    name = PROVIDER
    deduplicates = False

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        from_number: str = "",
        messaging_service_sid: str = "",
        status_callback_url: str = "",
        base_url: str = "",
        timeout: float = 10.0,
    ) -> None:
        """Create a sender for one Twilio account.

        Args:
            account_sid: The account SID (AC...).
            auth_token: The account's auth token.
            from_number: The E.164 number to send from; or use ``messaging_service_sid``.
            messaging_service_sid: The Messaging Service (MG...) that picks the sender.
            status_callback_url: Where Twilio posts status updates (the web front door's
                ``/webhooks/twilio/status``); each message adds its key to it (``?key=``), so
                the update settles that message. Empty for none.
            base_url: The API's address; empty for https://api.twilio.com (tests use a fake).
            timeout: Seconds to wait for Twilio to connect and to answer.

        Raises:
            ValueError: The credentials or the sender are missing.
        """
        if not (account_sid and auth_token):
            raise ValueError("TwilioSender needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        if not (from_number or messaging_service_sid):
            raise ValueError(
                "TwilioSender needs a sender: TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"
            )
        self._http = _HttpClient(base_url, timeout=timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        self._from_number = from_number
        self._messaging_service_sid = messaging_service_sid
        self._status_callback_url = status_callback_url

    async def send_sms(self, message: SmsMessage) -> Receipt:
        """Hand ``message`` to Twilio.

        Returns:
            A receipt whose ``provider_id`` is the Twilio message SID (SM...).

        Raises:
            ApplicationError: Typed RateLimited, ProviderUnavailable, InvalidRecipient,
                RecipientOptedOut, ProviderAuth or PayloadRejected.
        """
        return await asyncio.to_thread(self._send, message)

    def _send(self, message: SmsMessage) -> Receipt:
        logger.debug("twilio: sending %s to %s", message.key, message.to)
        try:
            created = self._client.messages.create(**self._create_args(message))
        except (TwilioRestException, TwilioServiceException) as exc:
            code, text = _code_and_text(exc)
            # Not chained: the SDK's exception text repeats the recipient's number.
            raise classify_error(
                int(exc.status), code, text, self._http.last_headers(), message, now=time.time()
            ) from None
        except requests.RequestException as exc:
            raise _unreachable(exc, message) from exc
        sid = str(created.sid)
        logger.info("twilio: accepted %s as %s", message.key, sid)
        return Receipt(provider=PROVIDER, provider_id=sid, key=message.key, channel=Channel.sms)

    def _create_args(self, message: SmsMessage) -> dict[str, str]:
        args = {"to": message.to, "body": message.body}
        # With both set, Twilio sends from the number and files it under the service.
        if self._from_number:
            args["from_"] = self._from_number
        if self._messaging_service_sid:
            args["messaging_service_sid"] = self._messaging_service_sid
        if self._status_callback_url:
            args["status_callback"] = status_callback(self._status_callback_url, message.key)
        return args


def status_callback(base: str, key: str) -> str:
    """The status callback URL of one message: ``base`` with the message key, the only place a
    Twilio message can carry it (Twilio keeps no metadata of ours)."""
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}key={quote(key, safe='')}"


class _HttpClient(TwilioHttpClient):  # type: ignore[misc]  # the twilio SDK ships no types
    """The SDK's own HTTP client, sent to ``base_url`` and remembering response headers.

    Twilio's exceptions drop the response headers, but a 429's Retry-After is in them; each
    worker thread keeps the headers of its own last response, so concurrent sends don't mix.
    """

    def __init__(self, base_url: str, *, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self._base = urlsplit(base_url.rstrip("/")) if base_url else None
        self._local = threading.local()

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request, as ``TwilioHttpClient.request`` does, to ``base_url`` if set."""
        self._local.headers = {}
        response: Response = super().request(
            method,
            self._rebase(url),
            params=params,
            data=data,
            headers=headers,
            auth=auth,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        self._local.headers = {str(k).lower(): str(v) for k, v in response.headers.items()}
        return response

    def last_headers(self) -> dict[str, str]:
        """The headers of this thread's last response, names lower-cased."""
        headers: dict[str, str] = getattr(self._local, "headers", {})
        return headers

    def _rebase(self, url: str) -> str:
        if self._base is None:
            return url
        parts = urlsplit(url)
        path = self._base.path + parts.path
        return urlunsplit((self._base.scheme, self._base.netloc, path, parts.query, ""))


def classify_error(
    status: int,
    code: int | None,
    text: str,
    headers: Mapping[str, str],
    message: SmsMessage,
    *,
    now: float,
) -> ApplicationError:
    """Turn a Twilio error response into a typed ``ApplicationError``.

    Args:
        status: The HTTP status.
        code: Twilio's error code (https://www.twilio.com/docs/errors/<code>), if any.
        text: Twilio's error message.
        headers: The response headers, names lower-cased.
        message: The message that was being sent.
        now: The current epoch time, to turn Retry-After dates into delays.
    """
    masked = mask_phone(message.to)
    text = scrub(text, message.to, masked)[:_PROVIDER_TEXT_CHARS]
    details: dict[str, object] = {
        "provider": PROVIDER,
        "status": status,
        "code": code,
        "key": message.key,
    }
    if code:
        details["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
    label = f"{code} " if code else ""
    if status in (401, 403) or code in _AUTH_CODES:
        meaning = "authentication failed; check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        return provider_error(
            PROVIDER_AUTH,
            f"Twilio refused our credentials: {label}{meaning} (HTTP {status})",
            details,
        )
    if status == 429 or code in _RATE_CODES:
        delay = retry_delay(headers.get("retry-after"), now=now)
        return provider_error(
            RATE_LIMITED,
            f"Twilio rate limit: {label}too many requests (HTTP {status}); {_retrying(delay)}",
            details,
            retry_after=delay,
        )
    if status >= 500 or status == 408:
        return provider_error(
            PROVIDER_UNAVAILABLE,
            f"Twilio is unavailable: {label}{text or 'server error'} (HTTP {status}); will retry",
            details,
        )
    if code == OPTED_OUT:
        return provider_error(
            RECIPIENT_OPTED_OUT,
            f"Twilio rejected {masked}: {OPTED_OUT} the recipient replied STOP; "
            f"they are opted out of SMS (HTTP {status})",
            details,
        )
    if reason := INVALID_RECIPIENT_CODES.get(code or 0):
        return provider_error(
            INVALID_RECIPIENT,
            f"Twilio rejected {masked}: {code} {reason} (HTTP {status})",
            details,
        )
    meaning = PAYLOAD_CODES.get(code or 0) or text or "bad request"
    return provider_error(
        PAYLOAD_REJECTED,
        f"Twilio rejected the message to {masked}: {label}{meaning} (HTTP {status})",
        details,
    )


def _code_and_text(exc: TwilioRestException | TwilioServiceException) -> tuple[int | None, str]:
    if isinstance(exc, TwilioServiceException):
        return exc.code, str(exc.detail or exc.title or "")
    # Without a Twilio error body the SDK repeats the HTTP status as the code.
    code = exc.code if isinstance(exc.code, int) and exc.code != exc.status else None
    # The SDK prefixes the API's message with what it was doing.
    text = str(exc.msg or "").removeprefix("Unable to create record: ")
    return code, text


def _retrying(delay: timedelta | None) -> str:
    if delay is None:
        return "will retry with backoff"
    return f"will retry in {delay.total_seconds():g}s as Twilio asked"


def _unreachable(exc: requests.RequestException, message: SmsMessage) -> ApplicationError:
    what = "timed out" if isinstance(exc, requests.Timeout) else "failed"
    details = {"provider": PROVIDER, "key": message.key}
    if _never_sent(exc):
        return provider_error(
            PROVIDER_UNAVAILABLE,
            f"Twilio could not be reached ({what}: {type(exc).__name__}); will retry",
            details,
        )
    return provider_error(
        OUTCOME_UNKNOWN,
        f"Twilio took the request but its answer {what} ({type(exc).__name__}); waiting for "
        "its status callback before sending again",
        details,
    )


def _never_sent(exc: requests.RequestException) -> bool:
    """Whether the request failed before Twilio could have read it: no connection was made."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if not isinstance(exc, requests.ConnectionError) or isinstance(exc, requests.ReadTimeout):
        return False
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, NewConnectionError | ConnectTimeoutError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__ or _reason(cause)
    return False


def _reason(exc: BaseException) -> BaseException | None:
    # urllib3 keeps the underlying error of a failed retry in ``reason``, requests in args.
    reason = getattr(exc, "reason", None)
    if isinstance(reason, BaseException):
        return reason
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, BaseException) and first is not exc else None
