"""Twilio's inbound SMS webhook: every STOP and START keyword, signed and forged requests,
replays, and the number's customers opted out and back in through the phone workflows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.client import Kairos
from kairos.compiler import Project
from kairos.config import Settings
from kairos.web.phonebook import KeywordReceived, Phonebook, PhoneState
from kairos.web.twilio import OPT_IN, OPT_OUT, PATH, keyword
from tests.browser.harness import (
    API_KEY,
    customers,
    inbound_sms,
    offline_client,
    phone_worker,
    phones,
    serve,
    tidy,
    twilio_signature,
    web_settings,
)
from tests.conftest import running_worker
from tests.helpers import eventually

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
    "body", ["", "HELP", "stop please", "Thanks!", "STOP.", "yes no", "S T O P"]
)
def test_a_message_that_is_not_exactly_a_keyword_changes_nothing(body: str) -> None:
    assert keyword(body) is None


def test_twilios_own_opt_out_type_wins_over_the_text() -> None:
    assert keyword("lopeta", "STOP") is False
    assert keyword("aloita", "START") is True
    assert keyword("STOP", "HELP") is None


def test_the_keyword_lists_include_the_carriers_standard_words() -> None:
    assert {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"} <= OPT_OUT
    assert {"START", "YES", "UNSTOP"} == OPT_IN


class RecordingPhonebook(Phonebook):
    """Records what the webhook passes on instead of signalling Temporal."""

    received: list[tuple[str, KeywordReceived]]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.received = []

    async def keyword(self, e164: str, received: KeywordReceived) -> None:
        self.received.append((e164, received))


@pytest.fixture
async def recorded(settings: Settings, project: Project) -> AsyncIterator[
    tuple[httpx.AsyncClient, RecordingPhonebook]
]:  # fmt: skip
    client = await offline_client()
    book = RecordingPhonebook(client, settings.secret, settings.task_queue)
    kairos = Kairos(client, settings, project)
    async with serve(kairos, web_settings(settings), phonebook=book) as http:
        yield http, book


def _signed(params: dict[str, str], url: str = PUBLIC_URL + PATH) -> dict[str, str]:
    return {"X-Twilio-Signature": twilio_signature(url, params)}


@pytest.mark.parametrize("word", sorted(OPT_OUT | OPT_IN))
async def test_every_keyword_over_http_is_passed_on_for_the_sender(
    recorded: tuple[httpx.AsyncClient, RecordingPhonebook], word: str
) -> None:
    http, book = recorded
    params = inbound_sms(word.lower(), sid=f"SM-{word}")
    response = await http.post(PATH, data=params, headers=_signed(params))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert "<Response></Response>" in response.text
    [(number, received)] = book.received
    assert (number, received.message_id, received.opt_in) == (NUMBER, f"SM-{word}", word in OPT_IN)


async def test_a_request_signed_for_the_url_it_arrived_at_is_accepted(
    recorded: tuple[httpx.AsyncClient, RecordingPhonebook],
) -> None:
    http, book = recorded
    params = inbound_sms("STOP")
    response = await http.post(PATH, data=params, headers=_signed(params, f"{http.base_url}{PATH}"))
    assert response.status_code == 200 and len(book.received) == 1


async def test_an_ordinary_reply_is_acknowledged_and_ignored(
    recorded: tuple[httpx.AsyncClient, RecordingPhonebook],
) -> None:
    http, book = recorded
    params = inbound_sms("Is the Ethiopia roast back in stock?")
    response = await http.post(PATH, data=params, headers=_signed(params))
    assert response.status_code == 200 and book.received == []


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
    recorded: tuple[httpx.AsyncClient, RecordingPhonebook], tamper: str, error: str
) -> None:
    http, book = recorded
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
    response = await http.post(PATH, data=params, headers=headers)
    assert (response.status_code, response.json()["error"]) == (403, error)
    assert book.received == []


async def test_without_an_auth_token_nothing_can_be_verified(
    settings: Settings, project: Project
) -> None:
    kairos = Kairos(await offline_client(), settings, project)
    async with serve(kairos, settings) as http:  # no TWILIO_AUTH_TOKEN
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
    recorded: tuple[httpx.AsyncClient, RecordingPhonebook],
    content: bytes,
    content_type: str,
    status: int,
) -> None:
    http, book = recorded
    response = await http.post(PATH, content=content, headers={"Content-Type": content_type})
    assert response.status_code == status and book.received == []


async def test_a_signed_keyword_from_something_that_is_not_a_number_is_400(
    recorded: tuple[httpx.AsyncClient, RecordingPhonebook],
) -> None:
    http, book = recorded
    params = inbound_sms("STOP", sender="LUMO")
    response = await http.post(PATH, data=params, headers=_signed(params))
    assert response.status_code == 400 and book.received == []


async def test_a_keyword_during_a_temporal_outage_is_503(
    settings: Settings, project: Project
) -> None:
    kairos = Kairos(await offline_client(), settings, project)
    async with serve(kairos, web_settings(settings)) as http:
        params = inbound_sms("STOP")
        response = await http.post(PATH, data=params, headers=_signed(params))
    assert response.status_code == 503 and response.headers["Retry-After"]


async def test_stop_and_start_from_a_phone_change_its_customers_sms_consent(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    kairos = Kairos(ts_env.client, settings, project)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        tidy(ts_env.client, customers("anna", "ben", "cleo")),
        running_worker(ts_env.client, settings, project),
        phone_worker(ts_env.client, settings) as phonebook,
        tidy(ts_env.client, phones(phonebook, NUMBER)),
        serve(kairos, web_settings(settings), phonebook=phonebook) as http,
    ):

        async def sms_consent(customer_id: str, expected: bool) -> bool:
            async def check() -> bool:
                view = await kairos.customer(customer_id)
                return view.consent.sms is expected

            return await eventually(check)

        async def text(body: str, sid: str) -> int:
            params = inbound_sms(body, sid=sid)
            return (await http.post(PATH, data=params, headers=_signed(params))).status_code

        async def identify(customer_id: str) -> None:
            body = {
                "userId": customer_id,
                "traits": {"phone": "040 123 4567".replace("040 ", "+35840")},
            }
            assert (await http.post("/v1/identify", json=body, headers=auth)).status_code == 202

        async def book(customers: int) -> PhoneState:
            async def check() -> PhoneState | None:
                state = await phonebook.state(NUMBER)
                return state if state and len(state.customers) == customers else None

            return await eventually(check)

        await identify("anna")
        await book(1)
        assert await text("STOP", "SM1") == 200
        await sms_consent("anna", False)
        assert await text("Start", "SM2") == 200
        await sms_consent("anna", True)

        # A replay of the old STOP is ignored: after it, a new customer links (signals are
        # handled in order), and the number is still opted in.
        assert await text("STOP", "SM1") == 200
        await identify("ben")
        assert (await book(2)).opted_out is False
        await sms_consent("anna", True)

        # A number that said STOP stays stopped for the customers who link it later.
        assert await text("QUIT", "SM3") == 200
        await sms_consent("anna", False)
        await identify("cleo")
        await sms_consent("cleo", False)
        await sms_consent("ben", False)


async def test_a_customer_without_an_entity_is_dropped_from_the_number(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    async with (
        phone_worker(ts_env.client, settings) as phonebook,
        tidy(ts_env.client, phones(phonebook, NUMBER)),
    ):
        await phonebook.link(NUMBER, "never-seen")
        await phonebook.keyword(NUMBER, KeywordReceived(message_id="SM9", opt_in=False))

        async def dropped() -> PhoneState | None:
            state = await phonebook.state(NUMBER)
            return state if state and state.opted_out and not state.customers else None

        await eventually(dropped)
