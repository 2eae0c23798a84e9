"""Seams for the web tests: the app over real HTTP on a test's customer store, an unreachable
Temporal or PostgreSQL, signed webhooks.

Webhook signatures are computed here from the providers' published algorithms (not with the
SDK helpers the app verifies with), so a test fails if the app and the providers disagree.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from temporalio.client import Client

from kairos.runtime.client import Kairos
from kairos.runtime.codec import data_converter
from kairos.runtime.config import Settings
from kairos.store.facade import Store
from kairos.web.app import create_app
from kairos.web.config import WebConfig
from kairos.web.server import running
from tests.conftest import make_kairos

API_KEY = "test-api-key-0123456789abcdef"
TWILIO_TOKEN = "test-twilio-auth-token"


async def offline_client(store: Store) -> Client:
    """A client whose Temporal is unreachable: every call fails as in an outage."""
    converter = data_converter(store.keys)
    return await Client.connect("127.0.0.1:1", data_converter=converter, lazy=True)


class SendGridKey:
    """A signed-event-webhook key pair: the public half configures the app, we sign."""

    def __init__(self) -> None:
        self._private = ec.generate_private_key(ec.SECP256R1())
        der = self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        """Signed as SendGrid signs, at ``timestamp`` (Unix seconds; now by default)."""
        timestamp = str(int(time.time())) if timestamp is None else timestamp
        signature = self._private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json",
        }


def twilio_signature(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> str:
    """X-Twilio-Signature: HMAC-SHA1 of the URL and the sorted form fields, base64."""
    data = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def inbound_sms(body: str, sender: str = "+358401234567", sid: str = "SM0001") -> dict[str, str]:
    """The form fields of Twilio's inbound SMS webhook (the ones Kairos reads, and more)."""
    return {
        "AccountSid": "AC00000000000000000000000000000000",
        "MessageSid": sid,
        "SmsSid": sid,
        "From": sender,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
    }


def web_config(sendgrid: SendGridKey | None = None) -> WebConfig:
    return WebConfig(api_keys=(API_KEY,), sendgrid_public_key=sendgrid.public if sendgrid else "")


def web_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, twilio_auth_token=TWILIO_TOKEN)


async def offline_kairos(settings: Settings, store: Store) -> Kairos:
    """A client on the test's store whose Temporal is unreachable."""
    return make_kairos(await offline_client(store), settings, store)


@asynccontextmanager
async def serve(
    kairos: Kairos, settings: Settings, *, sendgrid: SendGridKey | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on 127.0.0.1 (a free port), and an HTTP client pointed at it."""
    app = create_app(kairos, settings, web_config(sendgrid))
    async with running(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


async def events_of(store: Store, customer_id: str) -> list[dict[str, Any]]:
    """The events recorded for a customer, oldest first: id, name and properties."""
    return [
        dict(row)
        for row in await store.database.fetch_all(
            "SELECT id, name, properties FROM events WHERE customer_id = %s ORDER BY seq",
            (customer_id,),
        )
    ]


async def customers(store: Store) -> list[str]:
    """The ids of every customer in the store."""
    rows = await store.database.fetch_all("SELECT id FROM customers ORDER BY id")
    return [row["id"] for row in rows]


@asynccontextmanager
async def unreachable(postgres: str, database_url: str) -> AsyncIterator[None]:
    """PostgreSQL refuses the test database's connections (open ones are cut) for the block,
    as when the server is down; the database is usable again afterwards."""
    name = urlsplit(database_url).path.lstrip("/")
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
    try:
        yield
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
