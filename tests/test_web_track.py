"""Events over HTTP: /v1/track and /v1/identify, with Segment-shaped bodies and an API key.

Malformed calls are checked against a Kairos whose Temporal is unreachable: a clear 4xx (not a
503) proves they were refused at the door, before anything reached Temporal.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.client import Kairos
from kairos.compiler import Project
from kairos.config import Settings
from kairos.web.phonebook import PhoneState
from tests.browser.harness import (
    API_KEY,
    customers,
    events_signalled,
    offline_client,
    phone_worker,
    phones,
    serve,
    tidy,
    web_settings,
)
from tests.conftest import running_worker
from tests.helpers import eventually

AUTH = {"Authorization": f"Bearer {API_KEY}"}
NOW = "2026-01-31T09:00:00Z"
SIGNED_UP: dict[str, Any] = {
    "type": "track",
    "userId": "c-web-1",
    "event": "signed_up",
    "messageId": "msg-signup-1",
    "timestamp": NOW,
    "properties": {"email": "ada@example.com", "first_name": "Ada", "signed_up_at": NOW},
    "context": {"library": {"name": "analytics-python", "version": "2.3.0"}},
    "integrations": {"All": True},
    "anonymousId": "anon-1",
}


@pytest.fixture
async def offline(settings: Settings, project: Project) -> AsyncIterator[httpx.AsyncClient]:
    kairos = Kairos(await offline_client(), settings, project)
    async with serve(kairos, web_settings(settings)) as http:
        yield http


def _with(**changes: Any) -> dict[str, Any]:
    body = {**SIGNED_UP, **changes}
    return {k: v for k, v in body.items() if v is not None}


def _props(**changes: Any) -> dict[str, Any]:
    return _with(properties={**SIGNED_UP["properties"], **changes})


MALFORMED = [
    pytest.param(_with(userId=None, anonymousId=None), "userId: Field required", id="no-user-id"),
    pytest.param(_with(userId=None), "only an anonymousId", id="anonymous-only"),
    pytest.param(_with(userId=""), "userId: a customer id", id="empty-user-id"),
    pytest.param(_with(userId="a\nb"), "userId: a customer id", id="user-id-line-break"),
    pytest.param(_with(userId=["c-1"]), "userId: Input should be a valid string", id="list-id"),
    pytest.param(_with(event=None), "event: Field required", id="no-event"),
    pytest.param(_with(event=""), "event: String should have at least 1 character", id="empty"),
    pytest.param(
        _with(properties=[1]),
        "properties: Input should be a valid dictionary",
        id="properties-not-object",
    ),
    pytest.param(
        _with(timestamp="yesterday"),
        "timestamp: Input should be a valid datetime",
        id="bad-timestamp",
    ),
    pytest.param(
        _with(messageId=""), "messageId: String should have at least 1", id="empty-message-id"
    ),
    pytest.param(_with(type="page"), "type is 'page'", id="wrong-type"),
    pytest.param(_with(event="signed_upp"), "unknown event 'signed_upp'", id="unknown-event"),
    pytest.param(_props(email=None), "missing required property 'email'", id="missing-property"),
    pytest.param(
        _props(email="not-an-address"), "'email' must be an email address", id="wrong-property-type"
    ),
    pytest.param(_props(shoe_size=44), "unknown property 'shoe_size'", id="unknown-property"),
]


@pytest.mark.parametrize(("body", "says"), MALFORMED)
async def test_a_malformed_track_call_gets_400_saying_what_is_wrong(
    offline: httpx.AsyncClient, body: dict[str, Any], says: str
) -> None:
    response = await offline.post("/v1/track", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert says in answer["message"] + " ".join(answer.get("problems", []))


@pytest.mark.parametrize(
    ("content", "content_type", "status", "error"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_body"),
        (b'"just a string"', "application/json", 400, "invalid_body"),
        (b"", "application/json", 400, "invalid_json"),
        (b"\xff\xfe", "application/json", 400, "invalid_json"),
        (b"userId=c-1&event=signed_up", "application/x-www-form-urlencoded", 415,
         "unsupported_media_type"),
        (b"{}", "", 415, "unsupported_media_type"),
        (b'{"userId": "' + b"x" * 40_000 + b'"}', "application/json", 413, "payload_too_large"),
    ],
)  # fmt: skip
async def test_a_body_that_is_not_a_json_call_is_refused(
    offline: httpx.AsyncClient, content: bytes, content_type: str, status: int, error: str
) -> None:
    headers = {**AUTH, "Content-Type": content_type} if content_type else AUTH
    response = await offline.post("/v1/track", content=content, headers=headers)
    assert (response.status_code, response.json()["error"]) == (status, error)


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (None, "send an API key"),
        ("Bearer wrong-key-0123456789", "not valid"),
        ("Basic " + base64.b64encode(b"wrong-key-0123456789:").decode(), "not valid"),
        ("Basic !!!", "send an API key"),
        ("Token " + API_KEY, "send an API key"),
        (f"Bearer {API_KEY}x", "not valid"),
    ],
)
async def test_a_call_without_a_valid_api_key_is_401(
    offline: httpx.AsyncClient, authorization: str | None, says: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await offline.post("/v1/track", json=SIGNED_UP, headers=headers)
    assert response.status_code == 401
    assert says in response.json()["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_identify_refuses_traits_the_catalogue_does_not_declare(
    offline: httpx.AsyncClient,
) -> None:
    body = {"userId": "c-1", "traits": {"email": "ada@example.com", "shoe_size": 44}}
    response = await offline.post("/v1/identify", json=body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_traits"
    assert any("shoe_size" in p for p in response.json()["problems"])


async def test_a_valid_call_during_a_temporal_outage_is_503_with_retry_after(
    offline: httpx.AsyncClient,
) -> None:
    for path, body in (("/v1/track", SIGNED_UP), ("/v1/identify", {"userId": "c-1"})):
        response = await offline.post(path, json=body, headers=AUTH)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["error"] == "temporal_unavailable"


async def test_track_and_identify_reach_the_customer_entity(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    # An event no journey starts on: the test leaves no run waiting on the shared Temporal.
    viewed = {**SIGNED_UP, "event": "pricing_viewed", "properties": {"plan": "office"}}
    kairos = Kairos(ts_env.client, settings, project)
    async with (
        tidy(ts_env.client, customers("c-web-1")),
        running_worker(ts_env.client, settings, project),
        phone_worker(ts_env.client, settings) as phonebook,
        tidy(ts_env.client, phones(phonebook, "+358401234567")),
        serve(kairos, web_settings(settings), phonebook=phonebook) as http,
    ):
        tracked = await http.post("/v1/track", json=viewed, headers=AUTH)
        basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
        traits = {"locale": "fi", "phone": "+358401234567", "email": "ada@example.com"}
        identified = await http.post(
            "/v1/identify",
            content=json.dumps({"userId": "c-web-1", "traits": traits, "type": "identify"}),
            headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
        )

        async def profile() -> dict[str, Any] | None:
            view = await kairos.customer("c-web-1")
            return view.profile if view.profile.get("locale") == "fi" else None

        async def linked() -> PhoneState | None:
            state = await phonebook.state("+358401234567")
            return state if state and state.customers else None

        seen = await eventually(profile)
        book = await eventually(linked)
        [event] = await events_signalled(ts_env.client, "c-web-1")

    assert (tracked.status_code, tracked.json()) == (202, {"id": "msg-signup-1"})
    assert (event.id, event.name, event.properties) == (
        "msg-signup-1", "pricing_viewed", {"plan": "office"}
    )  # fmt: skip
    assert (
        event.timestamp is not None and event.timestamp.isoformat() == "2026-01-31T09:00:00+00:00"
    )
    assert identified.status_code == 202 and identified.json()["id"]
    assert seen["email"] == "ada@example.com"
    assert book.customers == ["c-web-1"]
