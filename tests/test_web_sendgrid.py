"""SendGrid's event webhook: signed batches change consent, suppress addresses and become
events, once each, in the customer store (Temporal is unreachable here: nothing needs it)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kairos.language.plan import Category, Channel
from kairos.language.project import Project
from kairos.messages.models import Verdict
from kairos.runtime.config import Settings
from kairos.runtime.contract import DeliverRequest
from kairos.store.facade import Store
from kairos.web.sendgrid import PATH, interpret
from tests.browser.harness import (
    SendGridKey,
    customers,
    events_of,
    offline_client,
    offline_kairos,
    serve,
    web_settings,
)
from tests.conftest import make_kairos

KEY = "welcome:c-sg:welcome:0"


def sendgrid_event(
    kind: str, event_id: str, customer_id: str = "c-sg", **extra: Any
) -> dict[str, Any]:
    """One event as SendGrid posts it, with the custom args Kairos's sends carry."""
    return {
        "email": "ada@example.com",
        "timestamp": 1767225600,
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "category": ["welcome", "marketing"],
        "customer_id": customer_id,
        "journey": "welcome",
        "journey_version": "abc123",
        "step": "welcome",
        "kairos_key": KEY,
        **extra,
    }


@pytest.mark.parametrize(
    ("item", "event", "withdraw", "suppress"),
    [
        (sendgrid_event("delivered", "e1"), "email_delivered", None, None),
        (sendgrid_event("open", "e2"), "email_opened", None, None),
        (sendgrid_event("click", "e3", url="https://lumo.example/shop"), "email_clicked", None,
         None),
        (sendgrid_event("bounce", "e4", type="bounce", reason="550 5.1.1 <ada@example.com>"),
         "email_bounced", "email", ("all", "bounced")),
        (sendgrid_event("dropped", "e5", reason="Bounced Address"), "email_dropped", "email",
         None),
        (sendgrid_event("dropped", "e6", reason="Unsubscribed Address"), "email_dropped",
         "marketing", None),
        (sendgrid_event("spamreport", "e7"), "email_spam_reported", "marketing",
         ("marketing", "reported spam")),
        (sendgrid_event("unsubscribe", "e8"), "email_unsubscribed", "marketing", None),
        (sendgrid_event("group_unsubscribe", "e9", asm_group_id=1), "email_unsubscribed",
         "marketing", None),
    ],
)  # fmt: skip
def test_each_event_type_maps_to_a_consent_change_a_suppression_and_an_event(
    item: dict[str, Any], event: str, withdraw: str | None, suppress: tuple[str, str] | None
) -> None:
    outcome = interpret(item)
    assert outcome is not None
    assert (outcome.event, outcome.withdraw, outcome.suppress) == (event, withdraw, suppress)
    assert outcome.sg_event_id == item["sg_event_id"]
    assert outcome.event_id == f"{item['sg_event_id']}:{event}"
    assert outcome.source == f"SendGrid {item['event']}"
    assert outcome.customer_id == "c-sg"
    assert outcome.properties["key"] == KEY and outcome.properties["step"] == "welcome"
    assert "ada@example.com" not in json.dumps(outcome.properties)  # never the address


@pytest.mark.parametrize(
    "item",
    [
        sendgrid_event("processed", "x1"),
        sendgrid_event("deferred", "x2"),
        sendgrid_event("bounce", "x3", type="blocked"),
        sendgrid_event("group_resubscribe", "x4"),
        sendgrid_event("delivered", "x5", customer_id=""),
        {k: v for k, v in sendgrid_event("open", "x6").items() if k != "customer_id"},
        sendgrid_event("open", ""),
        sendgrid_event("open", "x8", customer_id="a\nb"),
        {"event": "open"},
        "not an object",
        None,
    ],
)
def test_events_kairos_did_not_send_or_does_not_act_on_are_ignored(item: object) -> None:
    assert interpret(item) is None


def test_only_clicks_carry_the_url() -> None:
    click = interpret(sendgrid_event("click", "c1", url="https://lumo.example/"))
    opened = interpret(sendgrid_event("open", "o1", url="https://lumo.example/"))
    assert click is not None and click.properties["url"] == "https://lumo.example/"
    assert opened is not None and "url" not in opened.properties


@pytest.fixture
def key() -> SendGridKey:
    return SendGridKey()


@pytest.fixture
async def offline(
    settings: Settings, store: Store, key: SendGridKey
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(
        await offline_kairos(settings, store), web_settings(settings), sendgrid=key
    ) as http:
        yield http


BATCH = json.dumps([sendgrid_event("open", "ev-1")]).encode()


async def _suppressions(store: Store) -> list[tuple[str, str, str]]:
    rows = await store.database.fetch_all(
        "SELECT channel, scope, reason FROM suppressions ORDER BY scope"
    )
    return [(r["channel"], r["scope"], r["reason"]) for r in rows]


async def _nothing_recorded(store: Store) -> bool:
    return await customers(store) == [] and await _suppressions(store) == []


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        ("body", "invalid_signature"),
        ("timestamp", "invalid_signature"),
        ("other-key", "invalid_signature"),
        ("garbage-signature", "invalid_signature"),
        ("no-signature", "missing_signature"),
        ("an-hour-old", "stale_signature"),
        ("from-the-future", "stale_signature"),
        ("not-a-number", "invalid_signature"),
    ],
)
async def test_a_forged_batch_is_403_and_records_nothing(
    offline: httpx.AsyncClient, store: Store, key: SendGridKey, tamper: str, error: str
) -> None:
    body, headers = BATCH, key.headers(BATCH)
    if tamper == "body":
        body = BATCH.replace(b"open", b"spamreport")
    elif tamper == "timestamp":
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(int(time.time()) + 1)
    elif tamper == "other-key":
        headers = SendGridKey().headers(BATCH)
    elif tamper == "an-hour-old":
        headers = key.headers(BATCH, str(int(time.time()) - 3600))
    elif tamper == "from-the-future":
        headers = key.headers(BATCH, str(int(time.time()) + 3600))
    elif tamper == "not-a-number":
        headers = key.headers(BATCH, "soon")
    elif tamper == "garbage-signature":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "not base64!"
    else:
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    response = await offline.post(PATH, content=body, headers=headers)
    assert (response.status_code, response.json()["error"]) == (403, error)
    assert await _nothing_recorded(store)


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "invalid_json"),
        (b'{"event": "open"}', 400, "invalid_body"),
        (b"\xff\xfe[]", 403, "invalid_signature"),  # not UTF-8: cannot be what SendGrid signed
        (b"[" + b" " * (5 * 1024 * 1024) + b"]", 413, "payload_too_large"),
    ],
)
async def test_a_signed_body_that_is_not_an_event_array_is_refused(
    offline: httpx.AsyncClient, key: SendGridKey, body: bytes, status: int, error: str
) -> None:
    response = await offline.post(PATH, content=body, headers=key.headers(body))
    assert (response.status_code, response.json()["error"]) == (status, error)


async def test_a_batch_of_events_kairos_ignores_is_acknowledged_and_records_nothing(
    offline: httpx.AsyncClient, store: Store, key: SendGridKey
) -> None:
    body = json.dumps([sendgrid_event("processed", "p1"), {"event": "open"}, 42]).encode()
    response = await offline.post(PATH, content=body, headers=key.headers(body))
    assert response.status_code == 200
    assert response.json() == {"received": 3, "applied": 0, "ignored": 3}
    assert await _nothing_recorded(store)


async def test_without_a_verification_key_every_batch_is_refused(
    settings: Settings, store: Store, key: SendGridKey
) -> None:
    async with serve(await offline_kairos(settings, store), settings) as http:
        response = await http.post(PATH, content=BATCH, headers=key.headers(BATCH))
    assert response.status_code == 403
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in response.json()["message"]


async def _known(store: Store, customer_id: str, email: str = "ada@example.com") -> None:
    """A customer with an email address and marketing consent."""
    await store.identify(customer_id, {"email": email}, consent={"marketing": True}, source="test")


async def _post(
    http: httpx.AsyncClient, key: SendGridKey, batch: list[Any], timestamp: str | None = None
) -> httpx.Response:
    body = json.dumps(batch).encode()
    return await http.post(PATH, content=body, headers=key.headers(body, timestamp))


async def _feedback(store: Store, customer_id: str) -> list[dict[str, Any]]:
    return [e for e in await events_of(store, customer_id) if e["name"].startswith("email_")]


async def test_a_signed_batch_withdraws_consent_and_emits_events_once(
    offline: httpx.AsyncClient, store: Store, key: SendGridKey
) -> None:
    await _known(store, "c-sg")
    batch = [
        sendgrid_event("delivered", "sg-1"),
        sendgrid_event("open", "sg-2"),
        sendgrid_event("click", "sg-3", url="https://lumo.example/cart"),
        sendgrid_event("spamreport", "sg-4"),
        sendgrid_event("processed", "sg-5"),
    ]
    first = await _post(offline, key, batch)
    assert first.json() == {"received": 5, "applied": 4, "ignored": 1}
    # She opts in again; then SendGrid retries the batch (signed anew, a minute later).
    await store.identify("c-sg", {}, consent={"marketing": True}, source="preference centre")
    replay = await _post(offline, key, batch, str(int(time.time()) + 60))

    assert replay.json() == {"received": 5, "applied": 4, "ignored": 1}
    record = await store.customer("c-sg")
    assert record is not None
    assert record.consent.marketing  # the retried complaint did not withdraw it again
    assert record.consent.email  # a complaint withdraws marketing, not all email
    withdrawn = [(c.topic, c.granted, c.source, c.event_id) for c in record.consent_history][1:]
    assert withdrawn[0] == ("marketing", False, "SendGrid spamreport", "sg-4")
    assert [(t, g, s) for t, g, s, _ in withdrawn[1:]] == [("marketing", True, "preference centre")]
    assert await _suppressions(store) == [("email", "marketing", "reported spam")]
    # Replayed events carry the same ids, so each is recorded once.
    feedback = await _feedback(store, "c-sg")
    assert [e["id"] for e in feedback] == [
        "sg-1:email_delivered", "sg-2:email_opened", "sg-3:email_clicked",
        "sg-4:email_spam_reported",
    ]  # fmt: skip
    click = feedback[2]
    assert click["properties"] == {
        "journey": "welcome", "step": "welcome", "key": KEY, "url": "https://lumo.example/cart"
    }  # fmt: skip


def _email(customer_id: str, key: str) -> DeliverRequest:
    """A transactional email: only the address and its suppressions can stop it."""
    return DeliverRequest(
        key=key,
        customer_id=customer_id,
        journey="test",
        journey_version="v1",
        run_no=1,
        step="receipt",
        channel=Channel.email,
        template="test/receipt",
        category=Category.transactional,
    )


async def test_a_bounce_turns_email_off_and_suppresses_the_address_for_everyone(
    offline: httpx.AsyncClient, store: Store, key: SendGridKey
) -> None:
    await _known(store, "c-bounce")
    response = await _post(offline, key, [sendgrid_event("bounce", "b-1", customer_id="c-bounce")])
    # Someone else gives the same address later: it is not mailed either.
    await _known(store, "c-new", "ADA@example.com")
    now = datetime.now(UTC)
    decided = await store.ledger.reserve(_email("c-new", "k-new"), now=now, due=now)

    assert response.json() == {"received": 1, "applied": 1, "ignored": 0}
    record = await store.customer("c-bounce")
    assert record is not None and not record.consent.email
    latest = record.consent_history[-1]
    assert (latest.topic, latest.granted, latest.source, latest.event_id) == (
        "email", False, "SendGrid bounce", "b-1"
    )  # fmt: skip
    assert await _suppressions(store) == [("email", "all", "bounced")]
    assert [e["id"] for e in await _feedback(store, "c-bounce")] == ["b-1:email_bounced"]
    assert decided.decision.verdict is Verdict.blocked
    assert decided.decision.reason == "email: address suppressed (bounced)"


async def test_events_about_a_customer_kairos_does_not_know_create_nobody(
    offline: httpx.AsyncClient, store: Store, key: SendGridKey
) -> None:
    batch = [
        sendgrid_event("open", "g-1", customer_id="c-forgotten"),
        sendgrid_event("unsubscribe", "g-2", customer_id="c-forgotten"),
        sendgrid_event("bounce", "g-3", customer_id="c-forgotten"),
    ]
    response = await _post(offline, key, batch)
    # The bounce still suppresses the address: it is a bad address whoever had it.
    assert response.json() == {"received": 3, "applied": 1, "ignored": 2}
    assert await customers(store) == []
    assert await _suppressions(store) == [("email", "all", "bounced")]


async def test_feedback_events_the_catalogue_does_not_declare_are_not_emitted(
    settings: Settings, store: Store, project: Project, key: SendGridKey
) -> None:
    events = {k: v for k, v in project.catalogue.events.items() if k != "email_opened"}
    catalogue = project.catalogue.model_copy(update={"events": events})
    undeclared = Store(store.database, dataclasses.replace(project, catalogue=catalogue), settings)
    kairos = make_kairos(await offline_client(undeclared), settings, undeclared)
    await _known(store, "c-sg")
    async with serve(kairos, web_settings(settings), sendgrid=key) as http:
        response = await _post(
            http, key, [sendgrid_event("open", "o-1"), sendgrid_event("click", "o-2")]
        )
    assert response.json() == {"received": 2, "applied": 1, "ignored": 1}
    assert [e["id"] for e in await _feedback(store, "c-sg")] == ["o-2:email_clicked"]
