"""Unsubscribe links: the page a link opens (GET), its form and RFC 8058 one-click (POST).

The link carries a signed, expiring token (:mod:`kairos.messages.unsubscribe`): it names the
customer and the topics to withdraw, so nobody can unsubscribe someone else or guess customer ids.
GET never changes anything, because mail scanners and link previews fetch links unasked; only a
POST does. A POST whose body is ``List-Unsubscribe=One-Click`` is a mail client's one-click
unsubscribe and withdraws the token's topics without a page.

Consent is withdrawn in the customer store, recorded with the source "one-click unsubscribe" or
"unsubscribe page". A link of a customer Kairos no longer knows (forgotten) still shows the done
page, and creates nothing. When PostgreSQL cannot be reached the page says to try again (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from kairos.language.catalogue import AttrType
from kairos.messages.unsubscribe import TokenError, UnsubscribeClaim, read_token
from kairos.runtime.client import CustomerNotFound, Kairos
from kairos.runtime.config import Settings
from kairos.store.database import StoreUnavailable
from kairos.store.support import CustomerRecord
from kairos.web.errors import read_body, unavailable_headers, with_body
from kairos.web.i18n import choose_locale, text
from kairos.web.pages import HEADERS, TOPICS, confirm_page, done_page, message_page

log = logging.getLogger(__name__)

FORM_LIMIT = 16 * 1024
LOCALE_LOOKUP_SECONDS = 2.0
"""How long the page waits for the customer's language before using the browser's."""


class UnsubscribeRoutes:
    """``/u/{token}``: built with the client and settings it needs."""

    def __init__(self, kairos: Kairos, settings: Settings) -> None:
        self.kairos = kairos
        self.settings = settings
        # The business's name (customer.yaml `brand:`), else its sender address.
        self.brand = kairos.project.catalogue.brand or settings.from_email
        self.locale_attribute = kairos.project.catalogue.attribute_of_type(AttrType.locale)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/u/{token}", self.page, methods=["GET"]),
            Route("/u/{token}", self.submit, methods=["POST"]),
        ]

    async def page(self, request: Request) -> Response:
        """Show what the link would unsubscribe from; change nothing."""
        claim = self._claim(request)
        if isinstance(claim, Response):
            return claim
        locale = self._locale(request, await self._customer(claim.customer_id))
        return confirm_page(locale, self.brand, topics_of(claim))

    async def submit(self, request: Request) -> Response:
        """Withdraw consent: the topics ticked on the page, or the token's on one-click."""
        body = await read_body(request, FORM_LIMIT)
        claim = self._claim(request)
        if isinstance(claim, Response):
            return claim
        form = await with_body(request, body).form()
        one_click = form.get("List-Unsubscribe") == "One-Click"
        topics = topics_of(claim) if one_click else chosen_topics(form)
        if not topics:
            locale = self._locale(request, await self._customer(claim.customer_id))
            return confirm_page(locale, self.brand, topics_of(claim), error=True)
        how = "one-click unsubscribe" if one_click else "unsubscribe page"
        try:
            customer = await self._withdraw(claim.customer_id, topics, how)
        except StoreUnavailable as err:
            log.warning("unsubscribe not recorded, answering 503: %s", err)
            locale = choose_locale(None, request.headers.get("accept-language", ""))
            return message_page(locale, self.brand, "unavailable", 503, unavailable_headers())
        if one_click:
            locale = choose_locale(None, request.headers.get("accept-language", ""))
            return PlainTextResponse(text(locale, "one_click"), headers=HEADERS)
        return done_page(self._locale(request, customer), self.brand, topics)

    async def _withdraw(
        self, customer_id: str, topics: list[str], how: str
    ) -> CustomerRecord | None:
        """Withdraw ``topics``; the customer as they were, or None when Kairos does not know
        them (then nothing is recorded, and nothing is created)."""
        try:
            customer = await self.kairos.customer(customer_id)
            for topic in topics:
                await self.kairos.unsubscribe(customer_id, topic, source=how)
        except CustomerNotFound:
            log.info("unsubscribe link of a customer not known (forgotten?): nothing to change")
            return None
        log.info("customer %s unsubscribed from %s (%s)", customer_id, topics, how)
        return customer

    def _claim(self, request: Request) -> UnsubscribeClaim | Response:
        """The token's claim, or the page that explains why the link cannot be used."""
        now = int(time.time())
        token = request.path_params["token"]
        # After a rotation, links signed with the previous secret still work until its end date.
        *previous, current = reversed(self.settings.unsubscribe_secrets(datetime.now(UTC)))
        for secret in previous:
            with contextlib.suppress(TokenError):
                return read_token(token, secret=secret, now=now)
        try:
            return read_token(token, secret=current, now=now)
        except TokenError as err:
            # Same page for malformed and forged links: nothing to learn by probing.
            expired = err.reason == "expired"
            locale = choose_locale(None, request.headers.get("accept-language", ""))
            kind, status = ("expired", 410) if expired else ("invalid", 400)
            return message_page(locale, self.brand, kind, status)

    async def _customer(self, customer_id: str) -> CustomerRecord | None:
        """The customer, for the page's language; None when unknown or the store is slow."""
        try:
            async with asyncio.timeout(LOCALE_LOOKUP_SECONDS):
                return await self.kairos.customer(customer_id)
        except (CustomerNotFound, StoreUnavailable, TimeoutError):
            # Only the page's language depends on it: never fail the page for it.
            return None

    def _locale(self, request: Request, customer: CustomerRecord | None) -> str:
        """The customer's language if the store knows it, else the browser's."""
        header = request.headers.get("accept-language", "")
        if customer is None or self.locale_attribute is None:
            return choose_locale(None, header)
        return choose_locale(customer.profile.get(self.locale_attribute), header)


def topics_of(claim: UnsubscribeClaim) -> list[str]:
    """The consent topics a token withdraws; a link for unknown categories means marketing."""
    return [c for c in claim.categories if c in TOPICS] or ["marketing"]


def chosen_topics(form: FormData) -> list[str]:
    """The topics ticked on the page, in page order; unknown values are ignored."""
    ticked = {value for value in form.getlist("topic") if isinstance(value, str)}
    return [topic for topic in TOPICS if topic in ticked]
