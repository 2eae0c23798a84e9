"""Twilio's inbound SMS webhook: every STOP and START keyword, signed and forged requests,
replays, and the number's customers opted out and back in through the customer store.

Temporal is unreachable here: a keyword is committed to the store (consent of every customer
with the number, and the number's suppression) without it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from kairos.cli.runtime import customer_json
from kairos.language.plan import Category, Channel
from kairos.messages.models import PolicyDecision, Verdict
from kairos.runtime.config import Settings
from kairos.runtime.contract import DeliverRequest
from kairos.store.facade import Store
from kairos.web.twilio import OPT_IN, OPT_OUT, PATH, keyword
from tests.browser.harness import (
    API_KEY,
    customers,
    inbound_sms,
    offline_kairos,
    serve,
    twilio_signature,
    web_settings,
)

NUMBER = "+358401234567"
PUBLIC_URL = "http://localhost:8000"  # the settings' KAIROS_PUBLIC_URL: what Twilio signs


@pytest.mark.parametrize("word", sorted(OPT_OUT))
def test_every_opt_out_keyword_in_any_case_opts_out(word: str) -> None:
    for variant in (word, word.lower(), word.capitalize(), f"  {word}\n"):
        assert keyword(variant) is False


@pytest.mark.parametrize("word", sorted(OPT_IN))
def test_every_opt_in_keyword_in_any_case_opts_in(word: str) -> None:
    for variant in (word, word.lower(), word.capitalize(), f" {word} "):
        assert keyword(variant) is True


@pytest.mark.parametrize(
    ("body", "choice"),
    [
        ("STOP please", False),
        ("Stop.", False),
        ("ＳＴＯＰ", False),  # full width, as some phone keyboards type it
        ("ｓｔｏｐ", False),
        ("LOPETA", False),
        ("Lopeta kiitos", False),
        ("STOPP", False),
        ("Ende!", False),
        ("sluta", False),
        ("\tstop\n", False),
        ("START!", True),
        ("Ａｌｏｉｔａ", True),
        (" unstop ", True),
    ],
)
def test_the_first_word_opts_out_and_only_a_lone_keyword_opts_in(body: str, choice: bool) -> None:
    assert keyword(body) is choice


@pytest.mark.parametrize(
    "body",
    ["", "HELP", "Thanks!", "yes no", "Yes, when is the sale?", "start please", "S T O P",
     "123 stop", "Is the Ethiopia roast back?", "stopping by later"],
)  # fmt: skip
def test_a_message_that_is_no_keyword_changes_nothing(body: str) -> None:
    assert keyword(body) is None


def test_twilios_own_opt_out_type_wins_over_the_text() -> None:
    assert keyword("lopeta", "STOP") is False
    assert keyword("aloita", "START") is True
    assert keyword("STOP", "HELP") is None


def test_the_keyword_lists_include_the_carriers_standard_words() -> None:
    assert {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"} <= OPT_OUT
    assert {"START", "YES", "UNSTOP"} <= OPT_IN
    assert {"LOPETA", "STOPP", "ENDE", "SLUTA"} <= OPT_OUT  # fi, de, sv


@pytest.fixture
async def offline(settings: Settings, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(await offline_kairos(settings, store), web_settings(settings)) as http:
        yield http


def _signed(params: dict[str, str], url: str = PUBLIC_URL + PATH) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_signature(url, params)}


async def _text(http: httpx.AsyncClient, body: str, sid: str, sender: str = NUMBER) -> int:
    params = inbound_sms(body, sender=sender, sid=sid)
    return (await http.post(PATH, data=params, headers=_signed(params))).status_code


async def _sms_consent(store: Store, customer_id: str) -> list[tuple[bool, str, str | None]]:
    """The customer's SMS consent history: granted, source, change id."""
    record = await store.customer(customer_id)
    assert record is not None
    return [(c.granted, c.source, c.event_id) for c in record.consent_history if c.topic == "sms"]


async def _suppressed(store: Store) -> list[tuple[str, str, str]]:
    rows = await store.database.fetch_all("SELECT channel, scope, reason FROM suppressions")
    return [(r["channel"], r["scope"], r["reason"]) for r in rows]


async def _customer(store: Store, customer_id: str, number: str = NUMBER, sms: bool = True) -> None:
    await store.identify(customer_id, {"phone": number}, consent={"sms": sms}, source="signup")


async def _text_decision(store: Store, customer_id: str, key: str) -> PolicyDecision:
    """What the send transaction decides about a transactional SMS to the customer now."""
    request = DeliverRequest(
        key=key, customer_id=customer_id, journey="test", journey_version="v1", run_no=1,
        step="shipped", channel=Channel.sms, template="test/shipped",
        category=Category.transactional,
    )  # fmt: skip
    now = datetime.now(UTC)
    return (await store.ledger.reserve(request, now=now, due=now)).decision


@pytest.mark.parametrize("word", sorted(OPT_OUT | OPT_IN))
async def test_every_keyword_over_http_changes_the_senders_sms_consent(
    offline: httpx.AsyncClient, store: Store, word: str
) -> None:
    opt_in = word in OPT_IN
    await _customer(store, "anna", sms=not opt_in)
    params = inbound_sms(word.lower(), sid=f"SM-{word}")
    response = await offline.post(PATH, data=params, headers=_signed(params))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert "<Response></Response>" in response.text
    assert (await _sms_consent(store, "anna"))[-1] == (opt_in, f"sms {word}", f"sms:SM-{word}")
    assert await _suppressed(store) == ([] if opt_in else [("sms", "all", f"replied {word}")])


async def test_a_stop_twilio_retries_after_a_start_does_not_opt_out_again(
    offline: httpx.AsyncClient, store: Store
) -> None:
    await _customer(store, "anna")
    assert await _text(offline, "STOP", "SM-1") == 200
    assert await _text(offline, "START", "SM-2") == 200
    assert await _text(offline, "STOP", "SM-1") == 200  # the first webhook, delivered again
    assert [(granted, source) for granted, source, _ in await _sms_consent(store, "anna")] == [
        (True, "signup"), (False, "sms STOP"), (True, "sms START"),
    ]  # fmt: skip
    assert await _suppressed(store) == []


async def test_a_request_signed_for_the_url_it_arrived_at_is_accepted(
    offline: httpx.AsyncClient, store: Store
) -> None:
    params = inbound_sms("STOP")
    url = f"{offline.base_url}{PATH}"
    response = await offline.post(PATH, data=params, headers=_signed(params, url))
    assert response.status_code == 200 and len(await _suppressed(store)) == 1


async def test_an_ordinary_reply_changes_no_consent_and_is_kept_once_for_a_human(
    offline: httpx.AsyncClient, store: Store
) -> None:
    await _customer(store, "anna")
    await _customer(store, "anna-work")  # the same phone on two profiles: both keep it
    question = "Is the Ethiopia roast back in stock?"
    for _ in range(2):  # Twilio retries a webhook it got no answer to
        assert await _text(offline, question, "SM-Q") == 200
    assert await _text(offline, "Wrong number, sorry", "SM-W", sender="+358409999999") == 200
    assert await _suppressed(store) == []
    assert [(granted, source) for granted, source, _ in await _sms_consent(store, "anna")] == [
        (True, "signup")
    ]
    for customer_id in ("anna", "anna-work"):
        record = await store.customer(customer_id)
        assert record is not None and [body for _, body in record.replies] == [question]
        assert customer_json(record)["sms_replies"][0]["body"] == question
    # A number no customer has: nothing to attach it to, and nobody is created for it.
    assert await store.customers_with_phone("+358409999999") == []
    assert await customers(store) == ["anna", "anna-work"]


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        ("body", "invalid_signature"),
        ("sender", "invalid_signature"),
        ("token", "invalid_signature"),
        ("url", "invalid_signature"),
        ("missing", "missing_signature"),
    ],
)
async def test_a_forged_request_is_403_and_changes_nothing(
    offline: httpx.AsyncClient, store: Store, tamper: str, error: str
) -> None:
    params = inbound_sms("START")
    headers = _signed(params)
    if tamper == "body":
        params = {**params, "Body": "STOP"}
    elif tamper == "sender":
        params = {**params, "From": "+358409999999"}
    elif tamper == "token":
        headers = {"X-Twilio-Signature": twilio_signature(PUBLIC_URL + PATH, params, "other")}
    elif tamper == "url":
        headers = _signed(params, "https://attacker.example" + PATH)
    else:
        headers = {}
    response = await offline.post(PATH, data=params, headers=headers)
    assert (response.status_code, response.json()["error"]) == (403, error)
    assert await _suppressed(store) == []


async def test_without_an_auth_token_nothing_can_be_verified(
    settings: Settings, store: Store
) -> None:
    async with serve(await offline_kairos(settings, store), settings) as http:  # no token
        params = inbound_sms("STOP")
        response = await http.post(PATH, data=params, headers=_signed(params))
    assert response.status_code == 403
    assert "TWILIO_AUTH_TOKEN" in response.json()["message"]


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"Body": "STOP"}', "application/json", 415),
        (b"Body=STOP", "text/plain", 415),
        (b"Body=STOP&" + b"x=" + b"y" * 70_000, "application/x-www-form-urlencoded", 413),
    ],
)
async def test_a_body_twilio_would_not_send_is_refused(
    offline: httpx.AsyncClient, store: Store, content: bytes, content_type: str, status: int
) -> None:
    response = await offline.post(PATH, content=content, headers={"Content-Type": content_type})
    assert response.status_code == status and await _suppressed(store) == []


async def test_a_signed_keyword_from_something_that_is_not_a_number_is_400(
    offline: httpx.AsyncClient, store: Store
) -> None:
    params = inbound_sms("STOP", sender="LUMO")
    response = await offline.post(PATH, data=params, headers=_signed(params))
    assert response.status_code == 400 and await _suppressed(store) == []


async def test_stop_reaches_every_customer_with_the_number_and_blocks_one_who_gives_it_later(
    offline: httpx.AsyncClient, store: Store
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    for customer_id in ("anna", "ben"):
        body = {"userId": customer_id, "traits": {"phone": NUMBER}, "consent": {"sms": True}}
        assert (await offline.post("/v1/identify", json=body, headers=auth)).status_code == 202
    await _customer(store, "cleo", "+358409876543")

    assert await _text(offline, "STOP", "SM1") == 200
    assert await _text(offline, "STOP", "SM1") == 200  # Twilio retried the webhook
    stopped = {c: (await _sms_consent(store, c))[1:] for c in ("anna", "ben", "cleo")}
    # Dana gives the number after it said STOP, and agrees to texts: none are sent to it.
    await _customer(store, "dana")
    blocked = await _text_decision(store, "dana", "dana-1")

    assert await _text(offline, "Start", "SM2") == 200
    restarted = {c: (await _sms_consent(store, c))[-1] for c in ("anna", "ben")}
    allowed = await _text_decision(store, "dana", "dana-2")

    assert stopped == {
        "anna": [(False, "sms STOP", "sms:SM1")],
        "ben": [(False, "sms STOP", "sms:SM1")],
        "cleo": [],
    }
    assert (blocked.verdict, blocked.reason) == (
        Verdict.blocked, "sms: address suppressed (replied STOP)"
    )  # fmt: skip
    assert restarted == dict.fromkeys(("anna", "ben"), (True, "sms START", "sms:SM2"))
    assert allowed.verdict is Verdict.send


async def test_a_stop_from_a_number_nobody_has_creates_no_customer(
    offline: httpx.AsyncClient, store: Store
) -> None:
    assert await _text(offline, "STOP", "SM9", sender="+358405550000") == 200
    assert await customers(store) == []
    assert await _suppressed(store) == [("sms", "all", "replied STOP")]
