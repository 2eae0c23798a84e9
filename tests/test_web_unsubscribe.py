"""Unsubscribe links: the page, its form, RFC 8058 one-click, forged and expired links, and an
end-to-end run where a click on the link stops the next marketing email."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.client import Kairos
from kairos.compiler import Project
from kairos.config import Settings
from kairos.runtime import JourneyResult, journey_workflow_id
from kairos.unsubscribe import make_token, unsubscribe_url
from kairos.web.app import create_app
from kairos.web.server import running
from tests.browser.harness import customers, offline_client, serve, tidy, web_config, web_settings
from tests.conftest import running_worker
from tests.helpers import eventually, finish, outbox, started, timezone_at

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _link(settings: Settings, customer_id: str = "c-u", **kwargs: Any) -> str:
    url = unsubscribe_url("", customer_id, secret=settings.secret, now=int(time.time()), **kwargs)
    return url  # "/u/<token>": relative to the server under test


@pytest.fixture
async def offline(settings: Settings, project: Project) -> AsyncIterator[httpx.AsyncClient]:
    kairos = Kairos(await offline_client(), settings, project)
    async with serve(kairos, web_settings(settings)) as http:
        yield http


async def test_the_link_opens_a_page_that_changes_nothing_until_submitted(
    offline: httpx.AsyncClient, settings: Settings
) -> None:
    # Temporal is unreachable: a GET that tried to unsubscribe would fail, not show the page.
    response = await offline.get(_link(settings), headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert response.status_code == 200
    assert '<html lang="de">' in response.text and "Abmelden" in response.text
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


async def test_an_unsubscribe_during_a_temporal_outage_is_503_and_says_try_again(
    offline: httpx.AsyncClient, settings: Settings
) -> None:
    for form in (ONE_CLICK, {"topic": "marketing"}):
        response = await offline.post(_link(settings), data=form)
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert "Please try again in a minute" in response.text


async def test_one_click_works_urlencoded_and_multipart_and_the_page_saves_choices(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    kairos = Kairos(ts_env.client, settings, project)
    async with (
        tidy(ts_env.client, customers("c-gmail", "c-rfc", "c-page")),
        running_worker(ts_env.client, settings, project),
        serve(kairos, web_settings(settings)) as http,
    ):
        await kairos.identify("c-gmail", {"locale": "de"})
        await kairos.identify("c-rfc", {"locale": "fi"})
        await kairos.identify("c-page", {"locale": "fi"})

        async def knows_locale() -> bool:
            return (await kairos.customer("c-page")).profile.get("locale") == "fi"

        await eventually(knows_locale)  # the page asks the entity, which applies signals async
        page = await http.get(_link(settings, "c-page"), headers={"Accept-Language": "en"})
        # Gmail posts urlencoded; RFC 8058's own example is multipart/form-data.
        gmail = await http.post(_link(settings, "c-gmail"), data=ONE_CLICK)
        rfc = await http.post(
            _link(settings, "c-rfc"), files={"List-Unsubscribe": (None, "One-Click")}
        )
        chosen = await http.post(_link(settings, "c-page"), data={"topic": ["sms", "email"]})

        async def consent(customer_id: str, **withdrawn: bool) -> bool:
            expected = {"email": True, "sms": True, "marketing": True, "transactional": True}
            expected.update(withdrawn)
            return (await kairos.customer(customer_id)).consent.model_dump() == expected

        await eventually(lambda: consent("c-gmail", marketing=False))
        await eventually(lambda: consent("c-rfc", marketing=False))
        await eventually(lambda: consent("c-page", sms=False, email=False))

    assert "Peru tilaus" in page.text  # the customer's language wins over the browser's
    assert (gmail.status_code, rfc.status_code, chosen.status_code) == (200, 200, 200)
    assert "Tilaus on peruttu" in chosen.text
    assert "Kaikki tekstiviestit (SMS)" in chosen.text and "Tarjoukset" not in chosen.text


async def test_an_unsubscribe_click_stops_the_next_marketing_email_of_a_running_journey(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project
) -> None:
    now = await ts_env.get_current_time()
    kairos = Kairos(ts_env.client, settings, project)
    app = create_app(kairos, web_settings(settings), web_config())
    async with (
        tidy(ts_env.client, customers("dana")),
        running(app) as base_url,
        httpx.AsyncClient(timeout=30) as http,
    ):
        # The worker mints links to this server, as KAIROS_PUBLIC_URL would in production.
        linked = dataclasses.replace(settings, public_url=base_url)
        async with running_worker(ts_env.client, linked, project):
            await kairos.emit(
                "dana",
                "signed_up",
                {"email": "dana@example.com", "first_name": "Dana", "locale": "en",
                 "timezone": timezone_at(now, 12), "signed_up_at": now.isoformat()},
            )  # fmt: skip
            handle = await started(
                ts_env.client, journey_workflow_id("welcome", "dana"), JourneyResult
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

            async def unsubscribed() -> bool:
                return not (await kairos.customer("dana")).consent.marketing

            await eventually(unsubscribed)
            result = await finish(ts_env, handle)
            ledger = (await kairos.customer("dana")).ledger

    assert clicked.status_code == 200
    assert [m["step"] for m in outbox(settings.outbox_dir)] == ["welcome"]
    blocked = {e.step: e.reason for e in ledger if e.status == "blocked"}
    assert blocked == {
        "onboarding_tips": "unsubscribed from marketing",
        "first_order_offer": "unsubscribed from marketing",
    }
    assert result.outcome == "no_first_order"
