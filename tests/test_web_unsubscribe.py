"""Unsubscribe links: the page, its form, RFC 8058 one-click, forged and expired links, links of
customers Kairos no longer knows, and an end-to-end run where a click on the link stops the
next marketing email."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.messages.unsubscribe import make_token, unsubscribe_url
from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from kairos.store.facade import Store
from kairos.web.app import create_app
from kairos.web.server import running
from tests.browser.harness import customers, offline_kairos, serve, web_config, web_settings
from tests.conftest import make_kairos, running_worker
from tests.helpers import eventually, finish, outbox, started, timezone_at

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _link(settings: Settings, customer_id: str = "c-u", **kwargs: Any) -> str:
    url = unsubscribe_url("", customer_id, secret=settings.secret, now=int(time.time()), **kwargs)
    return url  # "/u/<token>": relative to the server under test


@pytest.fixture
async def offline(settings: Settings, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(await offline_kairos(settings, store), web_settings(settings)) as http:
        yield http


async def _known(store: Store, customer_id: str, locale: str) -> None:
    """A customer who agreed to marketing and texts."""
    await store.identify(
        customer_id, {"locale": locale, "email": f"{customer_id}@example.com"},
        consent={"marketing": True, "sms": True}, source="signup form",
    )  # fmt: skip


async def test_the_link_opens_a_page_that_changes_nothing_until_submitted(
    offline: httpx.AsyncClient, settings: Settings, store: Store
) -> None:
    await _known(store, "c-u", "de")
    response = await offline.get(_link(settings), headers={"Accept-Language": "fi"})
    record = await store.customer("c-u")
    assert record is not None and record.consent.marketing and record.consent.sms
    assert response.status_code == 200
    assert '<html lang="de">' in response.text and "Abmelden" in response.text
    # The business's name (customer.yaml `brand:`), never the engine's.
    assert "Wähle, welche Nachrichten von Lumo Coffee du nicht mehr" in response.text
    assert "Kairos" not in response.text
    assert 'value="marketing" checked' in response.text
    assert 'value="sms">' in response.text
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/u/not-a-token", 400, "This link does not work"),
        ("/u/" + "A" * 3000, 400, "This link does not work"),
        ("/u/eyJjIjoiYyJ9.AAAA", 400, "This link does not work"),
    ],
)
async def test_a_malformed_link_explains_without_revealing_anything(
    offline: httpx.AsyncClient, path: str, status: int, says: str
) -> None:
    for method in ("GET", "POST"):
        response = await offline.request(method, path, data=ONE_CLICK)
        assert (response.status_code, says in response.text) == (status, True)


async def test_a_link_for_another_customer_is_refused(
    offline: httpx.AsyncClient, settings: Settings
) -> None:
    mine = make_token("c-mine", secret=settings.secret, expires_at=int(time.time()) + 60)
    theirs = make_token("c-theirs", secret=settings.secret, expires_at=int(time.time()) + 60)
    forged = f"{theirs.split('.')[0]}.{mine.split('.')[1]}"
    other_secret = make_token("c-theirs", secret="guess", expires_at=int(time.time()) + 60)
    for token in (forged, other_secret):
        response = await offline.post(f"/u/{token}", data=ONE_CLICK)
        assert response.status_code == 400
        assert "c-theirs" not in response.text


OLD_SECRET = "0b5e7c1d9a2f48e6b3c0d7a1e5f9c2b8d4a6e0f3"


async def test_after_a_secret_rotation_old_links_work_until_the_grace_period_ends(
    settings: Settings, store: Store
) -> None:
    await _known(store, "c-u", "en")
    old = make_token("c-u", secret=OLD_SECRET, expires_at=int(time.time()) + 60)
    in_grace = dataclasses.replace(
        settings, secret_previous=OLD_SECRET,
        secret_previous_until=datetime.now(UTC) + timedelta(days=1),
    )  # fmt: skip
    past_grace = dataclasses.replace(
        in_grace, secret_previous_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    async with serve(await offline_kairos(settings, store), web_settings(past_grace)) as http:
        assert (await http.post(f"/u/{old}", data=ONE_CLICK)).status_code == 400
    record = await store.customer("c-u")
    assert record is not None and record.consent.marketing
    async with serve(await offline_kairos(settings, store), web_settings(in_grace)) as http:
        assert (await http.post(f"/u/{old}", data=ONE_CLICK)).status_code == 200
    record = await store.customer("c-u")
    assert record is not None and not record.consent.marketing


async def test_an_expired_link_says_so_in_the_browsers_language(
    offline: httpx.AsyncClient, settings: Settings
) -> None:
    token = make_token("c-u", secret=settings.secret, expires_at=int(time.time()) - 1)
    for method in ("GET", "POST"):
        response = await offline.request(
            method, f"/u/{token}", data=ONE_CLICK, headers={"Accept-Language": "fi"}
        )
        assert response.status_code == 410
        assert "Linkki on vanhentunut" in response.text


async def test_submitting_the_page_with_nothing_ticked_asks_again(
    offline: httpx.AsyncClient, settings: Settings
) -> None:
    for form in ({}, {"topic": "everything"}):
        response = await offline.post(_link(settings), data=form)
        assert response.status_code == 400
        assert "Choose at least one kind of message." in response.text


async def test_an_oversized_form_is_413(offline: httpx.AsyncClient, settings: Settings) -> None:
    response = await offline.post(_link(settings), data={"topic": "x" * 20_000})
    assert response.status_code == 413


async def test_one_click_works_urlencoded_and_multipart_and_the_page_saves_choices(
    offline: httpx.AsyncClient, settings: Settings, store: Store
) -> None:
    await _known(store, "c-gmail", "de")
    await _known(store, "c-rfc", "fi")
    await _known(store, "c-page", "fi")
    page = await offline.get(_link(settings, "c-page"), headers={"Accept-Language": "en"})
    # Gmail posts urlencoded; RFC 8058's own example is multipart/form-data.
    gmail = await offline.post(_link(settings, "c-gmail"), data=ONE_CLICK)
    rfc = await offline.post(
        _link(settings, "c-rfc"), files={"List-Unsubscribe": (None, "One-Click")}
    )
    chosen = await offline.post(_link(settings, "c-page"), data={"topic": ["sms", "email"]})

    async def withdrawn(customer_id: str) -> list[tuple[str, str]]:
        record = await store.customer(customer_id)
        assert record is not None
        return [(c.topic, c.source) for c in record.consent_history if not c.granted]

    assert "Lopeta viestit" in page.text  # the customer's language wins over the browser's
    assert (gmail.status_code, rfc.status_code, chosen.status_code) == (200, 200, 200)
    assert "Viestit on lopetettu" in chosen.text
    assert "Kaikki tekstiviestit (SMS)" in chosen.text and "Tarjoukset" not in chosen.text
    assert await withdrawn("c-gmail") == [("marketing", "one-click unsubscribe")]
    assert await withdrawn("c-rfc") == [("marketing", "one-click unsubscribe")]
    assert await withdrawn("c-page") == [
        ("sms", "unsubscribe page"),
        ("email", "unsubscribe page"),
    ]


async def test_the_link_of_a_customer_kairos_does_not_know_changes_nothing_and_creates_nobody(
    offline: httpx.AsyncClient, settings: Settings, store: Store
) -> None:
    link = _link(settings, "c-forgotten")
    page = await offline.get(link, headers={"Accept-Language": "de"})
    one_click = await offline.post(link, data=ONE_CLICK)
    chosen = await offline.post(link, data={"topic": "sms"}, headers={"Accept-Language": "de"})

    assert (page.status_code, one_click.status_code, chosen.status_code) == (200, 200, 200)
    assert "Du bist abgemeldet" in chosen.text and "Alle SMS" in chosen.text
    assert await customers(store) == []


async def test_an_unsubscribe_click_stops_the_next_marketing_email_of_a_running_journey(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    kairos = make_kairos(ts_env.client, settings, store)
    app = create_app(kairos, web_settings(settings), web_config())
    async with running(app) as base_url, httpx.AsyncClient(timeout=30) as http:
        # The worker mints links to this server, as KAIROS_PUBLIC_URL would in production.
        linked = dataclasses.replace(settings, public_url=base_url)
        async with running_worker(ts_env.client, linked, store):
            await kairos.emit(
                "dana",
                "signed_up",
                {"email": "dana@example.com", "first_name": "Dana", "locale": "en",
                 "timezone": timezone_at(now, 12), "signed_up_at": now.isoformat(),
                 "marketing_opt_in": True},
            )  # fmt: skip
            handle = await started(
                ts_env.client, journey_workflow_id("welcome", "dana", 1), JourneyResult
            )

            async def first_email() -> list[dict[str, Any]]:
                return outbox(settings.outbox_dir)

            [welcome] = await eventually(first_email)
            email = message_from_bytes(
                (settings.outbox_dir / welcome["file"]).read_bytes(), policy=policy.default
            )
            link = str(email["List-Unsubscribe"]).strip("<>")
            assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            assert link.startswith(f"{base_url}/u/")
            clicked = await http.post(link, data=ONE_CLICK)
            result = await finish(ts_env, handle)
            record = await kairos.customer("dana")

    assert clicked.status_code == 200
    assert [m["step"] for m in outbox(settings.outbox_dir)] == ["welcome"]
    blocked = {m.step: m.reason for m in record.messages if m.status == "blocked"}
    assert blocked == {
        "onboarding_tips": "marketing consent withdrawn (one-click unsubscribe)",
        "first_order_offer": "marketing consent withdrawn (one-click unsubscribe)",
    }
    assert result.outcome == "no_first_order"


async def test_the_access_log_holds_no_token_and_no_query_string(
    settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await _known(store, "c-u", "en")
    link = _link(settings)
    app = create_app(await offline_kairos(settings, store), web_settings(settings), web_config())
    access = logging.getLogger("uvicorn.access")  # does not propagate: listen on it directly
    async with running(app, log_level="info") as url, httpx.AsyncClient(base_url=url) as http:
        access.addHandler(caplog.handler)
        try:
            assert (await http.get(link)).status_code == 200
            await http.post("/v1/track?api_key=key-in-the-query-0123456789", json={})
        finally:
            access.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == 2, lines
    token = link.removeprefix("/u/")
    assert not any(token in line or "key-in-the-query" in line for line in lines)
    assert '"GET /u/[token] HTTP/1.1" 200' in lines[0]
    assert '"POST /v1/track?[redacted] HTTP/1.1" 401' in lines[1]
