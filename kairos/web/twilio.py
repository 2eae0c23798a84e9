"""Twilio's webhooks: inbound SMS (STOP and START keywords change the sender's SMS consent),
and status callbacks (Twilio's word that it has a message, which settles an unknown outcome).

A keyword reaches every customer whose profile has the sender's number (the store keeps each
profile's number in E.164) and the number itself: a STOP suppresses it, so a customer who gives
that number later is not texted either, and a START lifts that again.

Every request must carry a valid ``X-Twilio-Signature`` (HMAC of the webhook URL and form
fields with the account's auth token), checked with the ``twilio`` SDK's RequestValidator.
Keywords are Twilio's standard ones and those of each shipped language (fi, sv, de), in any case
and width ("ＳＴＯＰ"): an opt-out keyword as the message's first word ("Stop please"), an opt-in
keyword only as the whole message. A message is
applied once by its MessageSid, so a retried STOP after a START does not suppress again. Other
messages are acknowledged and kept as an ``sms_replied`` event of each customer with the number
(when journeys/customer.yaml declares it), for a human to read in ``kairos customer``. The
answer is empty
TwiML: Twilio (or the carrier) sends the legally required confirmation itself.

Each SMS Kairos sends asks Twilio to post its status changes to ``/webhooks/twilio/status`` with
the message key in the URL (``?key=``, see ``activities.providers.twilio.status_callback``). Any
status there (queued, sent, delivered, undelivered, failed) means Twilio took the message, so the
ledger records it as ``sent`` if an earlier call's outcome was unknown (kairos.runtime.delivery),
and never sends it again; a second MessageSid for one key is counted as a duplicate.
"""

from __future__ import annotations

import contextlib
import logging
import re
import unicodedata
from datetime import UTC, datetime

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

from kairos.runtime import phone
from kairos.runtime.client import Kairos
from kairos.runtime.config import Settings
from kairos.runtime.webhooks import TWILIO_STATUS_PATH
from kairos.store.support import SMS_REPLIED
from kairos.web.errors import ApiError, media_type, read_body, with_body

log = logging.getLogger(__name__)

PATH = "/webhooks/twilio/sms"
STATUS_PATH = TWILIO_STATUS_PATH
BODY_LIMIT = 64 * 1024
# What is kept of a reply: ten SMS segments' worth, as Twilio itself concatenates at most.
REPLY_LIMIT = 1600
# Twilio's standard keywords, then those of each language Kairos ships (fi, sv, de): a customer
# answers "STOPP" or "LOPETA" to a text in her language, and must be heard.
OPT_OUT = frozenset({
    "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT",
    "LOPETA", "LOPPU", "PERUUTA",          # fi
    "SLUTA", "STOPPA", "AVSLUTA",           # sv
    "STOPP", "ENDE", "ABMELDEN", "ABBESTELLEN",  # de
})  # fmt: skip
OPT_IN = frozenset({"START", "YES", "UNSTOP", "ALOITA", "STARTA"})
_WORD = re.compile(r"[^\W\d_]+")
_ONLY_WORD = re.compile(r"[\W_]*([^\W\d_]+)[\W_]*")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def keyword(body: str, opt_out_type: str = "") -> bool | None:
    """What a message asks: True to opt in, False to opt out, None when it is no keyword.

    Args:
        body: The message text.
        opt_out_type: Twilio's ``OptOutType`` field (STOP, START or HELP), sent when Advanced
            Opt-Out with custom keywords is on; it wins over our own matching.
    """
    match opt_out_type.strip().upper():
        case "STOP":
            return False
        case "START":
            return True
        case "HELP":
            return None
    # Erring towards silence: the first word stops ("Stop please"), only a message that is
    # nothing but the keyword starts ("Yes, when is the sale?" is no opt-in).
    if first_word(body) in OPT_OUT:
        return False
    if only_word(body) in OPT_IN:
        return True
    return None


def first_word(body: str) -> str:
    """The message's first word, upper case, width-normalised (NFKC: a full-width ＳＴＯＰ
    is STOP); "Stop please!" -> STOP. Empty when the message starts with no letter."""
    match = _WORD.match(unicodedata.normalize("NFKC", body).strip())
    return match.group(0).upper() if match else ""


def only_word(body: str) -> str:
    """The message's one word (as :func:`first_word`), when it has no other; else empty."""
    match = _ONLY_WORD.fullmatch(unicodedata.normalize("NFKC", body))
    return match.group(1).upper() if match else ""


class TwilioRoutes:
    """``POST /webhooks/twilio/sms`` and ``/webhooks/twilio/status``: built with the client
    and settings they need."""

    def __init__(self, kairos: Kairos, settings: Settings) -> None:
        self.kairos = kairos
        self.settings = settings

    def routes(self) -> list[BaseRoute]:
        return [
            Route(PATH, self.inbound, methods=["POST"]),
            Route(STATUS_PATH, self.status, methods=["POST"]),
        ]

    async def status(self, request: Request) -> Response:
        """Verify, then record Twilio's word that it has the message the URL's key names."""
        form = await self._form(request)
        self._verify(request, form)
        key = request.query_params.get("key", "")
        sid, status = _field(form, "MessageSid"), _field(form, "MessageStatus")
        if not key or not sid or not status:
            raise ApiError(
                400,
                "invalid_body",
                "a status callback needs ?key= in its URL (Kairos adds it to each message) and "
                "MessageSid and MessageStatus in its body",
            )
        settled = await self.kairos.store.ledger.feedback(
            key, provider="twilio", provider_id=sid, event=status, at=datetime.now(UTC)
        )
        if settled is None:
            log.info("twilio status %s for a message the ledger does not know", status)
        return Response(status_code=204)

    async def inbound(self, request: Request) -> Response:
        """Verify, then apply a STOP or START to the number and its customers."""
        form = await self._form(request)
        self._verify(request, form)
        choice = keyword(_field(form, "Body"), _field(form, "OptOutType"))
        sender, message_id = _field(form, "From"), _field(form, "MessageSid")
        if choice is None:
            with contextlib.suppress(phone.PhoneError):
                if message_id:
                    number = phone.normalise(sender)
                    await self._keep_reply(number, message_id, _field(form, "Body"))
            return _twiml()
        if not sender or not message_id:
            raise ApiError(400, "invalid_body", "an inbound SMS needs From and MessageSid")
        try:
            number = phone.normalise(sender)
        except phone.PhoneError:
            raise ApiError(
                400, "invalid_body", "From is not a phone number in E.164 form"
            ) from None
        changed = await self.kairos.store.phone_keyword(
            number,
            opt_in=choice,
            message_id=message_id,
            keyword=_keyword_name(_field(form, "Body"), choice),
        )
        for accepted in changed:
            await self.kairos.dispatch(accepted)
        log.info(
            "sms %s received (message %s) for %d customers",
            "opt-in" if choice else "opt-out", message_id, len(changed),
        )  # fmt: skip
        log.debug("sms keyword from %s", phone.mask(number))
        return _twiml()

    async def _keep_reply(self, number: str, message_id: str, body: str) -> None:
        """A reply that is no keyword ("Wrong number", "When does the sale end?") becomes an
        ``sms_replied`` event of each customer with the number, for a human to read in
        ``kairos customer`` (and for a journey to wait for), when customer.yaml declares it.
        Once per customer and message: its id is the event id, so Twilio's retries dedupe."""
        if SMS_REPLIED not in self.kairos.project.catalogue.events:
            log.debug("%s is not declared in the catalogue: the reply is not kept", SMS_REPLIED)
            return
        customers = await self.kairos.store.customers_with_phone(number)
        for customer_id in customers:
            await self.kairos.emit(
                customer_id, SMS_REPLIED, {"body": body[:REPLY_LIMIT]},
                event_id=f"sms:{message_id}",
            )  # fmt: skip
        log.info("sms reply received (message %s) for %d customers", message_id, len(customers))

    async def _form(self, request: Request) -> FormData:
        body = await read_body(request, BODY_LIMIT)
        if media_type(request) != "application/x-www-form-urlencoded":
            raise ApiError(
                415,
                "unsupported_media_type",
                "Twilio webhooks are application/x-www-form-urlencoded; "
                f"this request is {media_type(request) or 'without a content type'}",
            )
        return await with_body(request, body).form()

    def _verify(self, request: Request, form: FormData) -> None:
        token = self.settings.twilio_auth_token
        if not token:
            raise ApiError(
                403,
                "not_configured",
                "Twilio webhooks cannot be verified: set TWILIO_AUTH_TOKEN",
            )
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            raise ApiError(403, "missing_signature", f"the request has no {SIGNATURE_HEADER}")
        algorithm = get_signature_algorithm(request.headers.get(SIGNATURE_SETTINGS_HEADER, ""))
        validator = RequestValidator(token)
        if not any(
            validator.validate(url, form, signature, algorithm)
            for url in _urls(self.settings, request)
        ):
            raise ApiError(
                403,
                "invalid_signature",
                f"{SIGNATURE_HEADER} does not match: Twilio signs the exact webhook URL, so "
                f"configure {self.settings.public_url}{request.url.path} in Twilio "
                "(KAIROS_PUBLIC_URL) and "
                "check TWILIO_AUTH_TOKEN",
            )


def _urls(settings: Settings, request: Request) -> list[str]:
    """The URLs Twilio may have signed: the public one, and the one this request arrived at.

    Behind a proxy only the public URL matches; accepting either is no weaker, since the
    signature still needs the auth token.
    """
    query = f"?{request.url.query}" if request.url.query else ""
    public = f"{settings.public_url.rstrip('/')}{request.url.path}{query}"
    received = str(request.url)
    return [public] if public == received else [public, received]


def _keyword_name(body: str, opt_in: bool) -> str:
    """The keyword as recorded in the consent history: the word sent, when it is one (a custom
    Advanced Opt-Out keyword too), else STOP or START. Never a whole message."""
    word = first_word(body)
    if word and len(word) <= 20:
        return word
    return "START" if opt_in else "STOP"


def _field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _twiml() -> Response:
    return Response(EMPTY_TWIML, media_type="text/xml")
