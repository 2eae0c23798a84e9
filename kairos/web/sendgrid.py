"""SendGrid's event webhook: bounces and complaints change consent; engagement becomes events.

Requests are verified with SendGrid's signed event webhook (ECDSA over timestamp + body) using
the ``sendgrid`` SDK's EventWebhook helper and ``SENDGRID_WEBHOOK_PUBLIC_KEY``. Each event is
matched to the customer, run and step through the custom args the send activity attached
(``customer_id``, ``journey``, ``step``, ``kairos_key``).

=====================  ======================  ===================  =========================
SendGrid event         consent withdrawn       address suppressed   Kairos event
=====================  ======================  ===================  =========================
bounce (type bounce)   email                   all email            email_bounced
dropped                email (marketing when   -                    email_dropped
                       the address had
                       unsubscribed or
                       complained)
spamreport             marketing               marketing email      email_spam_reported
unsubscribe,           marketing               -                    email_unsubscribed
group_unsubscribe
delivered              -                       -                    email_delivered
open                   -                       -                    email_opened
click                  -                       -                    email_clicked (with url)
=====================  ======================  ===================  =========================

Every event that carries a ``kairos_key`` is also SendGrid's word that it had that message
(processed, deferred and dropped included): the ledger records the message as ``sent`` if an
earlier call's outcome was unknown (kairos.runtime.delivery), so it is never sent again; a second
SendGrid message id for one key is counted as a duplicate.

A ``bounce`` of type ``blocked`` is a temporary refusal, not a bad address, and is ignored, as
are processed, deferred and group_resubscribe (an opt-in needs the customer's own request).

Every change goes through the customer store, once: a consent change is recorded with the
source ``SendGrid <event>`` and SendGrid's ``sg_event_id`` as its id; a Kairos event gets the id
``<sg_event_id>:<event name>`` and is emitted only when ``journeys/customer.yaml`` declares it.
A suppression is a keyed hash of the address, so it holds for whoever gives that address later.
An event about a customer Kairos does not know (never had, or forgotten) changes no customer
and creates none; its suppression still applies.
"""

from __future__ import annotations

import binascii
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kairos.language.plan import Channel
from kairos.runtime.client import CustomerNotFound, InvalidEvent, Kairos
from kairos.runtime.webhooks import SENDGRID_KEY_ARG
from kairos.web.errors import ApiError, read_body
from kairos.web.track import is_customer_id

log = logging.getLogger(__name__)

PATH = "/webhooks/sendgrid/events"
BODY_LIMIT = 4 * 1024 * 1024
ENGAGEMENT = {"delivered": "email_delivered", "open": "email_opened", "click": "email_clicked"}
COMPLAINTS = {
    "spamreport": "email_spam_reported",
    "unsubscribe": "email_unsubscribed",
    "group_unsubscribe": "email_unsubscribed",
}
# Suppressions: scope and reason, by SendGrid event.
SUPPRESSIONS = {"bounce": ("all", "bounced"), "spamreport": ("marketing", "reported spam")}
# Dropped because of an earlier opt-out rather than a bad address: marketing, not all email.
_DROPPED_BY_CHOICE = ("unsubscribed address", "spam reporting address")


@dataclass(frozen=True)
class Outcome:
    """What one SendGrid event means for Kairos.

    ``suppress`` is the scope (all, marketing) and reason under which ``address`` joins the
    suppression list, if it does; ``address`` is used for nothing else.
    """

    customer_id: str
    sg_event_id: str
    event: str
    properties: dict[str, Any]
    timestamp: datetime | None
    withdraw: str | None
    source: str
    suppress: tuple[str, str] | None = None
    address: str | None = None

    @property
    def event_id(self) -> str:
        """The id of the Kairos event (the consent change has the plain ``sg_event_id``)."""
        return f"{self.sg_event_id}:{self.event}"


def interpret(item: object) -> Outcome | None:
    """The consent change, suppression and event one SendGrid event asks for; None to ignore
    it."""
    if not isinstance(item, dict):
        return None
    kind, event_id, customer_id = (item.get(k) for k in ("event", "sg_event_id", "customer_id"))
    if not (isinstance(kind, str) and isinstance(event_id, str) and event_id):
        return None
    if not is_customer_id(customer_id):
        return None  # not sent by Kairos: no custom args to match it to a customer
    classified = _classify(kind, item)
    if classified is None:
        return None
    event, withdraw = classified
    address = item.get("email")
    if not isinstance(address, str) or not address:
        address = None
    return Outcome(
        customer_id=customer_id,
        sg_event_id=event_id,
        event=event,
        properties=_properties(item),
        timestamp=_timestamp(item.get("timestamp")),
        withdraw=withdraw,
        source=f"SendGrid {kind}",
        suppress=SUPPRESSIONS.get(kind) if address else None,
        address=address,
    )


def _classify(kind: str, item: dict[str, Any]) -> tuple[str, str | None] | None:
    """The Kairos event and the consent topic to withdraw (if any) for a SendGrid event."""
    if kind == "bounce":
        return ("email_bounced", "email") if item.get("type", "bounce") == "bounce" else None
    if kind == "dropped":
        reason = str(item.get("reason", "")).lower()
        by_choice = any(r in reason for r in _DROPPED_BY_CHOICE)
        return "email_dropped", "marketing" if by_choice else "email"
    if kind in COMPLAINTS:
        return COMPLAINTS[kind], "marketing"
    if kind in ENGAGEMENT:
        return ENGAGEMENT[kind], None
    return None


def _properties(item: dict[str, Any]) -> dict[str, Any]:
    # Only the run's coordinates and the clicked link: never the address or SMTP reason,
    # which can contain it.
    fields = {
        "journey": item.get("journey"),
        "step": item.get("step"),
        "key": item.get(SENDGRID_KEY_ARG),
    }
    if item.get("event") == "click":
        fields["url"] = item.get("url")
    return {k: v for k, v in fields.items() if isinstance(v, str) and v}


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


# How old (and how far in the future) a signed batch may be: room for slow delivery and
# clock skew, not for replays.
MAX_AGE_SECONDS = 15 * 60
MAX_CLOCK_SKEW_SECONDS = 5 * 60


def _ago(age: float) -> str:
    minutes = round(abs(age) / 60)
    return f"{minutes} minutes ago" if age >= 0 else f"{minutes} minutes in the future"


class SendGridRoutes:
    """``POST /webhooks/sendgrid/events``: built with the client and verification key."""

    def __init__(self, kairos: Kairos, public_key: str) -> None:
        self.kairos = kairos
        self.verifier = EventWebhook(public_key) if public_key else None

    def routes(self) -> list[BaseRoute]:
        return [Route(PATH, self.events, methods=["POST"])]

    async def events(self, request: Request) -> Response:
        """Verify the batch, then apply each event; answer once all are committed."""
        body = await read_body(request, BODY_LIMIT)
        self._verify(request, body)
        try:
            batch = json.loads(body)
        except ValueError as err:
            raise ApiError(400, "invalid_json", f"the body is not JSON: {err}") from None
        if not isinstance(batch, list):
            raise ApiError(400, "invalid_body", "SendGrid posts a JSON array of events")
        applied = 0
        for item in batch:
            await self._feedback(item)
            outcome = interpret(item)
            if outcome is not None and await self._apply(outcome):
                applied += 1
        return JSONResponse(
            {"received": len(batch), "applied": applied, "ignored": len(batch) - applied}
        )

    async def _feedback(self, item: object) -> None:
        """Tell the ledger SendGrid had the message this event is about, if Kairos sent it."""
        if not isinstance(item, dict):
            return
        key, kind, message_id = (item.get(k) for k in (SENDGRID_KEY_ARG, "event", "sg_message_id"))
        if not (isinstance(key, str) and key and isinstance(kind, str) and kind):
            return
        # sg_message_id is the X-Message-Id the send was answered with, plus a suffix per
        # recipient and filter ("<id>.filterdrecv-..."): the ledger keeps the first part.
        provider_id = message_id.split(".", 1)[0] if isinstance(message_id, str) else ""
        await self.kairos.store.ledger.feedback(
            key,
            provider="sendgrid",
            provider_id=provider_id,
            event=kind,
            at=_timestamp(item.get("timestamp")) or datetime.now(UTC),
        )

    def _verify(self, request: Request, body: bytes) -> None:
        if self.verifier is None:
            raise ApiError(
                403,
                "not_configured",
                "SendGrid webhooks cannot be verified: set SENDGRID_WEBHOOK_PUBLIC_KEY to the "
                "signed event webhook's verification key",
            )
        signature = request.headers.get(EventWebhookHeader.SIGNATURE, "")
        timestamp = request.headers.get(EventWebhookHeader.TIMESTAMP, "")
        if not signature or not timestamp:
            raise ApiError(
                403,
                "missing_signature",
                f"the request needs {EventWebhookHeader.SIGNATURE} and "
                f"{EventWebhookHeader.TIMESTAMP}: turn on the signed event webhook in SendGrid",
            )
        try:
            valid = bool(self.verifier.verify_signature(body.decode("utf-8"), signature, timestamp))
        except (UnicodeDecodeError, binascii.Error, ValueError):
            valid = False
        if not valid or not timestamp.isdigit():
            raise ApiError(
                403,
                "invalid_signature",
                "the signature does not match: the body was changed or not signed by SendGrid "
                "with the key in SENDGRID_WEBHOOK_PUBLIC_KEY",
            )
        # A signed batch stays valid for ever: without a freshness check, anyone who saw one
        # could replay it (an old unsubscribe undoing a later re-consent).
        age = time.time() - int(timestamp)
        if not -MAX_CLOCK_SKEW_SECONDS <= age <= MAX_AGE_SECONDS:
            raise ApiError(
                403,
                "stale_signature",
                f"the batch was signed {_ago(age)}: a signed batch is accepted for "
                f"{MAX_AGE_SECONDS // 60} minutes (and {MAX_CLOCK_SKEW_SECONDS // 60} minutes "
                "ahead, for clock skew). A replay, or check this server's clock (NTP)",
            )

    async def _apply(self, outcome: Outcome) -> bool:
        """Suppress, withdraw consent and emit the event; False when nothing applied."""
        applied = False
        if outcome.suppress and outcome.address:
            scope, reason = outcome.suppress
            await self.kairos.store.suppress(
                Channel.email, outcome.address, scope=scope, reason=reason
            )
            applied = True
        if not await self.kairos.store.has_customer(outcome.customer_id):
            log.info("sendgrid event %s: customer not known, not applied", outcome.sg_event_id)
            return applied
        try:
            if outcome.withdraw:
                await self.kairos.unsubscribe(
                    outcome.customer_id,
                    outcome.withdraw,
                    source=outcome.source,
                    change_id=outcome.sg_event_id,
                )
                applied = True
            if await self._emit(outcome):
                applied = True
        except CustomerNotFound:
            pass  # forgotten between the check and the change: nothing to change
        except InvalidEvent as err:
            log.warning("sendgrid event %s not applied: %s", outcome.sg_event_id, err)
        return applied

    async def _emit(self, outcome: Outcome) -> bool:
        spec = self.kairos.project.catalogue.events.get(outcome.event)
        if spec is None:
            log.debug("%s is not declared in the catalogue: not emitted", outcome.event)
            return False
        properties = {k: v for k, v in outcome.properties.items() if k in spec.properties}
        await self.kairos.emit(
            outcome.customer_id,
            outcome.event,
            properties,
            event_id=outcome.event_id,
            timestamp=outcome.timestamp,
        )
        return True
