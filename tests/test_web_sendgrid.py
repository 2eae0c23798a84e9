"""SendGrid's event webhook: signed batches change consent and become events, once each."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.client import Kairos
from kairos.compiler import Project
from kairos.config import Settings
from kairos.web.sendgrid import PATH, interpret
from tests.browser.harness import (
    SendGridKey,
    customers,
    events_signalled,
    offline_client,
    serve,
    tidy,
    web_settings,
    with_email_events,
)
from tests.conftest import running_worker
from tests.helpers import eventually

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
    ("item", "event", "withdraw"),
    [
        (sendgrid_event("delivered", "e1"), "email_delivered", None),
        (sendgrid_event("open", "e2"), "email_opened", None),
        (sendgrid_event("click", "e3", url="https://lumo.example/shop"), "email_clicked", None),
        (sendgrid_event("bounce", "e4", type="bounce", reason="550 5.1.1 <ada@example.com>"),
         "email_bounced", "email"),
        (sendgrid_event("dropped", "e5", reason="Bounced Address"), "email_dropped", "email"),
        (sendgrid_event("dropped", "e6", reason="Unsubscribed Address"), "email_dropped",
         "marketing"),
        (sendgrid_event("spamreport", "e7"), "email_spam_reported", "marketing"),
        (sendgrid_event("unsubscribe", "e8"), "email_unsubscribed", "marketing"),
        (sendgrid_event("group_unsubscribe", "e9", asm_group_id=1), "email_unsubscribed",
         "marketing"),
    ],
)  # fmt: skip
def test_each_event_type_maps_to_a_consent_change_and_an_event(
    item: dict[str, Any], event: str, withdraw: str | None
) -> None:
    outcome = interpret(item)
    assert outcome is not None
    assert (outcome.event, outcome.withdraw, outcome.event_id) == (
        event,
        withdraw,
        item["sg_event_id"],
    )
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
    settings: Settings, project: Project, key: SendGridKey
) -> AsyncIterator[httpx.AsyncClient]:
    kairos = Kairos(await offline_client(), settings, with_email_events(project))
    async with serve(kairos, web_settings(settings), sendgrid=key) as http:
        yield http


BATCH = json.dumps([sendgrid_event("open", "ev-1")]).encode()


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        ("body", "invalid_signature"),
        ("timestamp", "invalid_signature"),
        ("other-key", "invalid_signature"),
        ("garbage-signature", "invalid_signature"),
        ("no-signature", "missing_signature"),
    ],
)
async def test_a_forged_batch_is_403_before_anything_reaches_temporal(
    offline: httpx.AsyncClient, key: SendGridKey, tamper: str, error: str
) -> None:
    body, headers = BATCH, key.headers(BATCH)
    if tamper == "body":
        body = BATCH.replace(b"open", b"spamreport")
    elif tamper == "timestamp":
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = "1767225601"
    elif tamper == "other-key":
        headers = SendGridKey().headers(BATCH)
    elif tamper == "garbage-signature":
        headers["X-Twilio-Email-Event-Webhook-Signature"] = "not base64!"
    else:
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    response = await offline.post(PATH, content=body, headers=headers)
    assert (response.status_code, response.json()["error"]) == (403, error)


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


async def test_a_batch_of_events_kairos_ignores_is_acknowledged_without_temporal(
    offline: httpx.AsyncClient, key: SendGridKey
) -> None:
    body = json.dumps([sendgrid_event("processed", "p1"), {"event": "open"}, 42]).encode()
    response = await offline.post(PATH, content=body, headers=key.headers(body))
    assert response.status_code == 200
    assert response.json() == {"received": 3, "applied": 0, "ignored": 3}


async def test_without_a_verification_key_every_batch_is_refused(
    settings: Settings, project: Project, key: SendGridKey
) -> None:
    kairos = Kairos(await offline_client(), settings, project)
    async with serve(kairos, settings) as http:
        response = await http.post(PATH, content=BATCH, headers=key.headers(BATCH))
    assert response.status_code == 403
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in response.json()["message"]


async def test_a_batch_during_a_temporal_outage_is_503_so_sendgrid_retries(
    offline: httpx.AsyncClient, key: SendGridKey
) -> None:
    response = await offline.post(PATH, content=BATCH, headers=key.headers(BATCH))
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0


async def test_a_signed_batch_updates_consent_and_emits_events_once(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project, key: SendGridKey
) -> None:
    project = with_email_events(project)
    kairos = Kairos(ts_env.client, settings, project)
    batch = [
        sendgrid_event("delivered", "sg-1"),
        sendgrid_event("open", "sg-2"),
        sendgrid_event("click", "sg-3", url="https://lumo.example/cart"),
        sendgrid_event("spamreport", "sg-4"),
        sendgrid_event("processed", "sg-5"),
    ]
    body = json.dumps(batch).encode()
    async with (
        tidy(ts_env.client, customers("c-sg")),
        running_worker(ts_env.client, settings, project),
        serve(kairos, web_settings(settings), sendgrid=key) as http,
    ):
        first = await http.post(PATH, content=body, headers=key.headers(body))
        replay = await http.post(PATH, content=body, headers=key.headers(body, "1767225700"))

        async def unsubscribed() -> bool:
            return not (await kairos.customer("c-sg")).consent.marketing

        await eventually(unsubscribed)
        view = await kairos.customer("c-sg")
        signalled = await events_signalled(ts_env.client, "c-sg")

    assert first.json() == {"received": 5, "applied": 4, "ignored": 1}
    assert replay.status_code == 200
    assert view.consent.email  # a complaint withdraws marketing, not all email
    # Replayed events carry the same ids, so the entity handles each once.
    ids = [e.id for e in signalled]
    assert ids == ["sg-1", "sg-2", "sg-3", "sg-4"] * 2
    click = next(e for e in signalled if e.id == "sg-3")
    assert click.name == "email_clicked"
    assert click.properties == {
        "journey": "welcome", "step": "welcome", "key": KEY, "url": "https://lumo.example/cart"
    }  # fmt: skip


async def test_a_bounce_turns_email_off(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project, key: SendGridKey
) -> None:
    kairos = Kairos(ts_env.client, settings, project)
    body = json.dumps([sendgrid_event("bounce", "b-1", customer_id="c-bounce")]).encode()
    async with (
        tidy(ts_env.client, customers("c-bounce")),
        running_worker(ts_env.client, settings, project),
        serve(kairos, web_settings(settings), sendgrid=key) as http,
    ):
        response = await http.post(PATH, content=body, headers=key.headers(body))

        async def bounced() -> bool:
            return not (await kairos.customer("c-bounce")).consent.email

        await eventually(bounced)
        signalled = await events_signalled(ts_env.client, "c-bounce")
    assert response.json()["applied"] == 1
    # The catalogue declares the feedback events, so journeys can wait for a bounce too.
    assert [(e.id, e.name) for e in signalled] == [("b-1", "email_bounced")]
