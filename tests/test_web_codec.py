"""The codec server: the Temporal UI sends the payloads it shows to ``/codec/decode`` and shows
what comes back; a forgotten customer's payloads stay ciphertext; only the UI's origin and
authorised callers are answered."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from kairos.runtime.client import Kairos
from kairos.runtime.codec import ENCODING, CustomerCodec
from kairos.runtime.config import ConfigError, Settings
from kairos.store.facade import Store
from kairos.web.app import create_app
from kairos.web.config import WebConfig, load_web_config
from kairos.web.server import running
from tests.browser.harness import offline_kairos

pytestmark = pytest.mark.timeout(60)

UI = "http://localhost:8233"
TOKEN = "codec-token-0123456789abcdef"
EMAIL = b'{"email": "ada@example.com", "first_name": "Ada"}'


@asynccontextmanager
async def codec_server(
    kairos: Kairos, settings: Settings, web: WebConfig | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on 127.0.0.1 (loopback, as in ``make dev``) and a client pointed at it."""
    app = create_app(kairos, settings, web or WebConfig())
    async with running(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


async def _encrypted_for(kairos: Kairos, customer_id: str, data: bytes = EMAIL) -> Payload:
    await kairos.identify(customer_id, {"email": f"{customer_id}@example.com"})
    plain = Payload(metadata={"encoding": b"json/plain"}, data=data)
    [encrypted] = await CustomerCodec(kairos.store.keys, customer_id).encode([plain])
    assert encrypted.metadata["encoding"] == ENCODING and b"ada@" not in encrypted.data
    return encrypted


def _body(*payloads: Payload) -> dict[str, Any]:
    """What the Temporal UI posts: protobuf's JSON form (base64 metadata values and data)."""
    return json_format.MessageToDict(Payloads(payloads=list(payloads)))


def _payloads(response: httpx.Response) -> list[Payload]:
    return list(json_format.Parse(response.text, Payloads()).payloads)


def _ui(**more: str) -> dict[str, str]:
    return {"Origin": UI, "X-Namespace": "default", **more}


async def test_the_ui_gets_a_customers_payload_decrypted(settings: Settings, store: Store) -> None:
    kairos = await offline_kairos(settings, store)
    async with codec_server(kairos, settings) as http:
        encrypted = await _encrypted_for(kairos, "ada")
        plain = Payload(metadata={"encoding": b"json/plain"}, data=b'"not encrypted"')
        response = await http.post("/codec/decode", json=_body(encrypted, plain), headers=_ui())

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == UI
    assert response.headers["cache-control"] == "no-store"
    decoded = _payloads(response)
    assert [(p.metadata["encoding"], p.data) for p in decoded] == [
        (b"json/plain", EMAIL),
        (b"json/plain", b'"not encrypted"'),
    ]


async def test_a_forgotten_customers_payload_stays_ciphertext(
    settings: Settings, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    kairos = await offline_kairos(settings, store)
    async with codec_server(kairos, settings) as http:
        forgotten = await _encrypted_for(kairos, "ada")
        kept = await _encrypted_for(kairos, "bob", b'{"first_name": "Bob"}')
        await kairos.forget("ada")
        with caplog.at_level(logging.DEBUG):
            response = await http.post("/codec/decode", json=_body(forgotten, kept), headers=_ui())

    assert response.status_code == 200, response.text
    decoded = _payloads(response)
    assert decoded[0] == forgotten
    assert decoded[1].data == b'{"first_name": "Bob"}'
    # Nothing a payload holds reaches the log, decrypted or not: a count says what stayed.
    assert "codec: 1 of 2 payloads stay encrypted" in caplog.text
    assert "Bob" not in caplog.text and forgotten.data.hex() not in caplog.text


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'{"payloads": "x"}', b'{"payloads": [{"metadata": 7}]}'],
    ids=["not JSON", "not an object", "payloads not a list", "metadata not a map"],
)
async def test_a_body_that_is_not_payloads_is_refused_with_400(
    settings: Settings, store: Store, body: bytes
) -> None:
    kairos = await offline_kairos(settings, store)
    async with codec_server(kairos, settings) as http:
        response = await http.post(
            "/codec/decode", content=body, headers=_ui(**{"Content-Type": "application/json"})
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_body"
    # The browser may read the refusal: the UI says why.
    assert response.headers["access-control-allow-origin"] == UI


async def test_the_browser_preflight_is_answered_for_the_ui_origin_only(
    settings: Settings, store: Store
) -> None:
    kairos = await offline_kairos(settings, store)
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace",
    }
    async with codec_server(kairos, settings) as http:
        allowed = await http.options("/codec/decode", headers={"Origin": UI, **preflight})
        other = await http.options(
            "/codec/decode", headers={"Origin": "https://evil.example", **preflight}
        )
        encrypted = await _encrypted_for(kairos, "ada")
        post = await http.post(
            "/codec/decode", json=_body(encrypted), headers=_ui(Origin="https://evil.example")
        )

    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == UI
    assert "POST" in allowed.headers["access-control-allow-methods"]
    allow = allowed.headers["access-control-allow-headers"]
    headers = {h.strip().lower() for h in allow.split(",")}
    assert headers == {"content-type", "x-namespace", "authorization"}
    assert (other.status_code, post.status_code) == (403, 403)
    assert "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in post.headers
    assert b"ada@" not in post.content


async def test_with_tokens_configured_a_caller_without_the_token_is_refused(
    settings: Settings, store: Store
) -> None:
    kairos = await offline_kairos(settings, store)
    web = WebConfig(codec_tokens=(TOKEN,))
    async with codec_server(kairos, settings, web) as http:
        encrypted = await _encrypted_for(kairos, "ada")
        body = _body(encrypted)
        none = await http.post("/codec/decode", json=body, headers=_ui())
        wrong = await http.post(
            "/codec/decode", json=body, headers=_ui(Authorization="Bearer not-the-token-at-all")
        )
        right = await http.post(
            "/codec/decode", json=body, headers=_ui(Authorization=f"Bearer {TOKEN}")
        )

    assert (none.status_code, wrong.status_code, right.status_code) == (401, 401, 200)
    assert none.headers["www-authenticate"].startswith("Bearer")
    assert b"ada@" not in none.content + wrong.content
    assert _payloads(right)[0].data == EMAIL


async def test_without_tokens_only_callers_on_this_machine_are_answered(
    settings: Settings, store: Store
) -> None:
    kairos = await offline_kairos(settings, store)
    app = create_app(kairos, settings, WebConfig())
    encrypted = await _encrypted_for(kairos, "ada")
    refused: list[int] = []
    for client in (("203.0.113.7", 50000), ("127.0.0.1", 50000)):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://kairos") as http:
            response = await http.post("/codec/decode", json=_body(encrypted))
        refused.append(response.status_code)
        if response.status_code == 403:
            assert "KAIROS_CODEC_TOKENS" in response.json()["message"]
    assert refused == [403, 200]


def test_the_codec_settings_default_to_make_devs_ui_and_are_checked() -> None:
    default = load_web_config({"KAIROS_HOME": "/nonexistent"})
    moved = load_web_config({"KAIROS_HOME": "/nonexistent", "KAIROS_DEV_UI_PORT": "18433"})
    production = load_web_config(
        {
            "KAIROS_HOME": "/nonexistent",
            "KAIROS_CODEC_ORIGINS": "https://temporal.example.com/, https://cloud.temporal.io",
            "KAIROS_CODEC_TOKENS": TOKEN,
        }
    )
    assert default.codec_origins == ("http://localhost:8233", "http://127.0.0.1:8233")
    assert default.codec_tokens == ()
    assert moved.codec_origins == ("http://localhost:18433", "http://127.0.0.1:18433")
    assert production.codec_origins == ("https://temporal.example.com", "https://cloud.temporal.io")
    assert production.codec_tokens == (TOKEN,)
    with pytest.raises(ConfigError) as refused:
        load_web_config(
            {
                "KAIROS_HOME": "/nonexistent",
                "KAIROS_CODEC_ORIGINS": "temporal.example.com",
                "KAIROS_CODEC_TOKENS": "short",
            }
        )
    text = str(refused.value)
    assert "KAIROS_CODEC_ORIGINS" in text and "KAIROS_CODEC_TOKENS" in text
