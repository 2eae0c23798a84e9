"""Hostile or careless input at the front door: every one a clear 4xx naming what is wrong,
nothing recorded, never a 500 or a traceback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from kairos.runtime.client import InvalidCustomerId, check_customer_id
from kairos.runtime.config import Settings
from kairos.store.facade import Store
from tests.browser.harness import API_KEY, customers, offline_kairos, serve, web_settings

pytestmark = pytest.mark.timeout(60)

AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
SIGNUP = '{"userId": %s, "event": "signed_up", "properties": {"email": "a@example.com"%s}}'


@pytest.fixture
async def offline(settings: Settings, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(await offline_kairos(settings, store), web_settings(settings)) as http:
        yield http


def _track(user_id: str, extra: str = "") -> bytes:
    return (SIGNUP % (user_id, extra)).encode()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param(_track('"c\\"1"'), "userId: customer ids", id="quote-in-id"),
        pytest.param(_track('"c\\\\1"'), "userId: customer ids", id="backslash-in-id"),
        pytest.param(_track('"c\\u00001"'), "userId: customer ids", id="nul-in-id"),
        pytest.param(_track('"c\\u0085x"'), "userId: customer ids", id="control-in-id"),
        pytest.param(_track('"' + "c" * 201 + '"'), "at most 200", id="long-id"),
        pytest.param(_track('"ada@example.com"'), "looks like an email address", id="email-id"),
        pytest.param(_track('"+358401234567"'), "looks like a phone number", id="phone-id"),
        pytest.param(_track('"c-1"', ', "cart_total": NaN'), "NaN", id="nan"),
        pytest.param(_track('"c-1"', ', "cart_total": Infinity'), "Infinity", id="infinity"),
        pytest.param(_track('"c-1"', ', "cart_total": -Infinity'), "Infinity", id="-infinity"),
        pytest.param(_track('"c-1"', ', "cart_total": 1e400'), "1e400", id="huge-number"),
        pytest.param(_track('"c-1"', ', "x": ' + "[" * 1000 + "]" * 1000), "nested",
                     id="1000-deep"),
        pytest.param(_track('"c-1"', ', "x": ' + "[" * 15000 + "]" * 15000), "nested",
                     id="15000-deep"),
        pytest.param(_track('"c-1"', ', "first_name": "' + "a" * 20_000 + '"'), "characters",
                     id="long-string"),
    ],
)  # fmt: skip
async def test_hostile_input_is_a_clear_400_and_records_nothing(
    offline: httpx.AsyncClient, store: Store, body: bytes, says: str
) -> None:
    response = await offline.post("/v1/track", content=body, headers=AUTH)
    assert response.status_code == 400, response.text
    answer: dict[str, Any] = response.json()
    said = answer["message"] + " " + " ".join(answer.get("problems", []))
    assert says in said, said
    assert "Traceback" not in response.text
    assert await customers(store) == []


@pytest.mark.parametrize(
    "customer_id",
    ['c"1', "c\\1", "c\x001", "c\x7f", "ada@example.com", "+358 40 123 4567", "x" * 201, " "],
)
def test_the_client_refuses_the_same_ids(customer_id: str) -> None:
    with pytest.raises(InvalidCustomerId):
        check_customer_id(customer_id)


@pytest.mark.parametrize(
    "customer_id", ["c-42", "7d9f0c1e-8a43-4b8e-9d1f-0a2b3c4d5e6f", "12345678", "user_1.a:b"]
)
def test_pseudonymous_ids_pass(customer_id: str) -> None:
    assert check_customer_id(customer_id) == customer_id
