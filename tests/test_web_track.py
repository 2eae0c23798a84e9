"""Events over HTTP: /v1/track and /v1/identify, with Segment-shaped bodies and an API key.

The app runs on the test's own PostgreSQL with a Temporal that cannot be reached: a call is
answered once the store has committed it, and Temporal being down delays journeys without
refusing anything. Malformed calls get a clear 4xx and record nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.language.project import Project
from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from kairos.store.database import Database
from kairos.store.facade import Store
from tests.browser.harness import (
    API_KEY,
    customers,
    events_of,
    offline_kairos,
    serve,
    unreachable,
    web_settings,
)
from tests.conftest import make_kairos, running_worker
from tests.helpers import eventually, started

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
async def offline(settings: Settings, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(await offline_kairos(settings, store), web_settings(settings)) as http:
        yield http


def _with(**changes: Any) -> dict[str, Any]:
    body = {**SIGNED_UP, **changes}
    return {k: v for k, v in body.items() if v is not None}


def _props(**changes: Any) -> dict[str, Any]:
    return _with(properties={**SIGNED_UP["properties"], **changes})


MALFORMED = [
    pytest.param(_with(userId=None, anonymousId=None), "userId: Field required", id="no-user-id"),
    pytest.param(_with(userId=None), "only an anonymousId", id="anonymous-only"),
    pytest.param(_with(userId=""), "userId: a customer id is required", id="empty-user-id"),
    pytest.param(_with(userId="a\nb"), "userId: customer ids are", id="user-id-line-break"),
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
    offline: httpx.AsyncClient, store: Store, body: dict[str, Any], says: str
) -> None:
    response = await offline.post("/v1/track", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert says in answer["message"] + " ".join(answer.get("problems", []))
    assert await customers(store) == []


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


async def _dispatches(store: Store) -> list[tuple[str, str, int]]:
    rows = await store.database.fetch_all(
        "SELECT kind, journey, run_no FROM dispatches ORDER BY id"
    )
    return [(r["kind"], r["journey"], r["run_no"]) for r in rows]


async def test_track_answers_202_while_temporal_is_unreachable_and_the_event_is_committed(
    offline: httpx.AsyncClient, store: Store
) -> None:
    first = await offline.post("/v1/track", json=SIGNED_UP, headers=AUTH)
    retried = await offline.post("/v1/track", json=SIGNED_UP, headers=AUTH)

    assert (first.status_code, first.json()) == (202, {"id": "msg-signup-1"})
    assert (retried.status_code, retried.json()) == (202, {"id": "msg-signup-1"})
    [event] = await events_of(store, "c-web-1")
    assert (event["id"], event["name"]) == ("msg-signup-1", "signed_up")
    assert event["properties"]["email"] == "ada@example.com"
    record = await store.customer("c-web-1")
    assert record is not None and record.profile["first_name"] == "Ada"
    # The welcome journey's start waits in the store for a worker to make it.
    assert await _dispatches(store) == [("start", "welcome", 1)]


async def test_a_tracked_sign_up_starts_the_welcome_journey(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    kairos = make_kairos(ts_env.client, settings, store)
    async with (
        running_worker(ts_env.client, settings, store),
        serve(kairos, web_settings(settings)) as http,
    ):
        tracked = await http.post("/v1/track", json=SIGNED_UP, headers=AUTH)
        run = await started(
            ts_env.client, journey_workflow_id("welcome", "c-web-1", 1), JourneyResult
        )
        described = await run.describe()

    assert (tracked.status_code, tracked.json()) == (202, {"id": "msg-signup-1"})
    assert described.id == "journey:welcome:c-web-1:1"
    assert await _dispatches(store) == []


async def test_track_and_identify_record_what_segment_sends(
    offline: httpx.AsyncClient, store: Store
) -> None:
    viewed = {**SIGNED_UP, "event": "pricing_viewed", "properties": {"plan": "office"}}
    tracked = await offline.post("/v1/track", json=viewed, headers=AUTH)
    basic = base64.b64encode(f"{API_KEY}:".encode()).decode()
    traits = {"locale": "fi", "phone": "+358401234567", "email": "ada@example.com"}
    identified = await offline.post(
        "/v1/identify",
        content=json.dumps({"userId": "c-web-1", "traits": traits, "type": "identify"}),
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
    )

    assert (tracked.status_code, tracked.json()) == (202, {"id": "msg-signup-1"})
    assert identified.status_code == 202 and identified.json()["id"]
    event, identify = await events_of(store, "c-web-1")
    assert (event["id"], event["name"], event["properties"]) == (
        "msg-signup-1", "pricing_viewed", {"plan": "office"}
    )  # fmt: skip
    assert (identify["id"], identify["name"]) == (identified.json()["id"], "$identify")
    occurred = await store.database.fetch_one(
        "SELECT occurred_at FROM events WHERE id = 'msg-signup-1'"
    )
    assert (
        occurred is not None and occurred["occurred_at"].isoformat() == "2026-01-31T09:00:00+00:00"
    )
    record = await store.customer("c-web-1")
    assert record is not None
    assert record.profile == traits
    # The number is indexed for inbound SMS keywords.
    phone = await store.database.fetch_one("SELECT phone FROM customers WHERE id = 'c-web-1'")
    assert phone is not None and phone["phone"] == "+358401234567"


async def test_identify_records_consent_with_its_source_as_proof(
    offline: httpx.AsyncClient, store: Store
) -> None:
    body = {
        "userId": "c-consent",
        "messageId": "identify-1",
        "traits": {"email": "ada@example.com"},
        "consent": {"marketing": True, "sms": False},
        "consentSource": "checkout form, box 'offers by email'",
    }
    first = await offline.post("/v1/identify", json=body, headers=AUTH)
    retried = await offline.post("/v1/identify", json=body, headers=AUTH)
    later = await offline.post(
        "/v1/identify", json={"userId": "c-consent", "consent": {"sms": True}}, headers=AUTH
    )

    assert [r.status_code for r in (first, retried, later)] == [202, 202, 202]
    assert first.json() == {"id": "identify-1"}
    record = await store.customer("c-consent")
    assert record is not None
    assert (record.consent.marketing, record.consent.sms, record.consent.email) == (
        True,
        True,
        True,
    )
    history = [(c.topic, c.granted, c.source, c.event_id) for c in record.consent_history]
    assert history == [
        ("marketing", True, "checkout form, box 'offers by email'", "identify-1"),
        ("sms", False, "checkout form, box 'offers by email'", "identify-1"),
        ("sms", True, "identify", later.json()["id"]),
    ]


async def test_a_retried_or_late_identify_does_not_overwrite_a_newer_name(
    offline: httpx.AsyncClient, store: Store
) -> None:
    def call(message_id: str, name: str, at: str) -> dict[str, Any]:
        return {"userId": "c-late", "messageId": message_id, "timestamp": at,
                "traits": {"first_name": name, "email": "late@example.com"}}  # fmt: skip

    older = call("identify-1", "Ada", "2026-03-01T10:00:00Z")
    newer = call("identify-2", "Adalinda", "2026-03-01T10:05:00Z")
    for body in (older, newer, older, {**older, "messageId": "identify-1-retry"}):
        assert (await offline.post("/v1/identify", json=body, headers=AUTH)).status_code == 202
    record = await store.customer("c-late")
    assert record is not None and record.profile["first_name"] == "Adalinda"
    # The same id is one call: recorded once, whatever arrives again.
    identifies = await store.database.fetch_all(
        "SELECT id FROM events WHERE customer_id = 'c-late' ORDER BY seq"
    )
    assert [r["id"] for r in identifies] == ["identify-1", "identify-2", "identify-1-retry"]
    # A newer call still changes it.
    later = call("identify-3", "Ada Lovelace", "2026-03-01T10:06:00Z")
    assert (await offline.post("/v1/identify", json=later, headers=AUTH)).status_code == 202
    record = await store.customer("c-late")
    assert record is not None and record.profile["first_name"] == "Ada Lovelace"
    # A caller whose clock runs a day fast cannot lock the name against later calls.
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for body in (call("identify-4", "Fast", ahead), {**call("identify-5", "Ada", ahead),
                                                      "timestamp": None}):  # fmt: skip
        assert (await offline.post("/v1/identify", json=body, headers=AUTH)).status_code == 202
    record = await store.customer("c-late")
    assert record is not None and record.profile["first_name"] == "Ada"


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"consent": {"newsletter": True}},
         "consent: 'newsletter' is not allowed: Input should be 'email', 'sms' or 'marketing'"),
        ({"consent": {"sms": "yes"}}, "consent.sms: Input should be a valid boolean"),
        ({"consent": {"sms": 1}}, "consent.sms: Input should be a valid boolean"),
        ({"consent": ["sms"]}, "consent: Input should be a valid dictionary"),
        ({"consent": {"sms": True}, "consentSource": ""},
         "consentSource: String should have at least 1 character"),
        ({"consent": {"sms": True}, "consentSource": 7},
         "consentSource: Input should be a valid string"),
    ],
)  # fmt: skip
async def test_identify_refuses_consent_it_cannot_record_as_proof(
    offline: httpx.AsyncClient, store: Store, fields: dict[str, Any], says: str
) -> None:
    body = {"userId": "c-1", "traits": {"email": "ada@example.com"}, **fields}
    response = await offline.post("/v1/identify", json=body, headers=AUTH)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_body")
    assert says in response.json()["problems"]
    assert await customers(store) == []


async def test_a_call_while_postgresql_is_unreachable_is_503_and_works_again_after(
    settings: Settings, project: Project, postgres: str, database_url: str
) -> None:
    # A short pool timeout, so a request gives up on PostgreSQL in a second.
    store = Store(await Database.open(database_url, timeout=1), project, settings)
    await store.register_plans(project.plans.values())
    try:
        async with serve(await offline_kairos(settings, store), web_settings(settings)) as http:
            async with unreachable(postgres, database_url):
                tracked = await http.post("/v1/track", json=SIGNED_UP, headers=AUTH)
                identified = await http.post("/v1/identify", json={"userId": "c"}, headers=AUTH)

            async def accepted() -> httpx.Response | None:
                response = await http.post("/v1/track", json=SIGNED_UP, headers=AUTH)
                return response if response.status_code == 202 else None

            await eventually(accepted)
        assert [e["id"] for e in await events_of(store, "c-web-1")] == ["msg-signup-1"]
    finally:
        await store.close()

    for response in (tracked, identified):
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert response.json()["error"] == "store_unavailable"
