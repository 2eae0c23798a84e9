"""Seams for the web tests: the app over real HTTP, an unreachable Temporal, signed webhooks.

Webhook signatures are computed here from the providers' published algorithms (not with the
SDK helpers the app verifies with), so a test fails if the app and the providers disagree.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.worker import Worker

from kairos.catalogue import Attribute, AttrType, EventSpec
from kairos.client import Kairos
from kairos.compiler import Project
from kairos.config import Settings
from kairos.runtime import SIGNAL_EVENT, Event, customer_workflow_id
from kairos.web.app import create_app
from kairos.web.config import WebConfig
from kairos.web.phonebook import Phonebook, PhoneWorkflow, phone_workflow_id
from kairos.web.server import running

API_KEY = "test-api-key-0123456789abcdef"
TWILIO_TOKEN = "test-twilio-auth-token"

# What journeys/customer.yaml must declare for SendGrid's events to be forwarded.
EMAIL_EVENTS = ("email_delivered", "email_opened", "email_clicked", "email_bounced",
                "email_dropped", "email_spam_reported", "email_unsubscribed")  # fmt: skip


def with_email_events(project: Project) -> Project:
    """The project with the SendGrid events declared, as the lead adds them to customer.yaml."""
    text = Attribute(type=AttrType.string)
    events = dict(project.catalogue.events)
    for name in EMAIL_EVENTS:
        properties = {"journey": text, "step": text, "key": text}
        if name == "email_clicked":
            properties["url"] = text
        events.setdefault(name, EventSpec(properties=properties))
    catalogue = project.catalogue.model_copy(update={"events": events})
    return dataclasses.replace(project, catalogue=catalogue)


async def offline_client() -> Client:
    """A client whose Temporal is unreachable: every call fails as in an outage."""
    return await Client.connect("127.0.0.1:1", data_converter=pydantic_data_converter, lazy=True)


class SendGridKey:
    """A signed-event-webhook key pair: the public half configures the app, we sign."""

    def __init__(self) -> None:
        self._private = ec.generate_private_key(ec.SECP256R1())
        der = self._private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: str = "1767225600") -> dict[str, str]:
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
    return dataclasses.replace(settings, twilio_auth_token=TWILIO_TOKEN, from_name="Lumo Coffee")


@asynccontextmanager
async def serve(
    kairos: Kairos,
    settings: Settings,
    *,
    sendgrid: SendGridKey | None = None,
    phonebook: Phonebook | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on 127.0.0.1 (a free port), and an HTTP client pointed at it."""
    app = create_app(kairos, settings, web_config(sendgrid), phonebook=phonebook)
    async with running(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http


def phonebook_queue(settings: Settings) -> str:
    return f"{settings.task_queue}-phones"


@asynccontextmanager
async def phone_worker(client: Client, settings: Settings) -> AsyncIterator[Phonebook]:
    """The phone workflows on their own queue (until worker.py registers them), and a book.

    The book's key is unique to the test, so each test's numbers get their own workflows on the
    shared Temporal (a workflow id outlives the test's worker).
    """
    queue = phonebook_queue(settings)
    async with Worker(client, task_queue=queue, workflows=[PhoneWorkflow]):
        yield Phonebook(client, f"{settings.secret}:{queue}", queue)


async def events_signalled(client: Client, customer_id: str) -> list[Event]:
    """Every event signalled to a customer entity, from its history (handled or not)."""
    handle = client.get_workflow_handle(customer_workflow_id(customer_id))
    found: list[Event] = []
    async for history_event in handle.fetch_history_events():
        if not history_event.HasField("workflow_execution_signaled_event_attributes"):
            continue
        signalled = history_event.workflow_execution_signaled_event_attributes
        if signalled.signal_name == SIGNAL_EVENT:
            values: list[Any] = await client.data_converter.decode(
                signalled.input.payloads, [Event]
            )
            found.append(values[0])
    return found


def customers(*customer_ids: str) -> list[str]:
    """The entity workflow ids of these customers."""
    return [customer_workflow_id(c) for c in customer_ids]


def phones(book: Phonebook, *numbers: str) -> list[str]:
    """The phone workflow ids of these numbers in this book."""
    return [phone_workflow_id(book.secret, n) for n in numbers]


@asynccontextmanager
async def tidy(client: Client, workflow_ids: list[str]) -> AsyncIterator[None]:
    """Terminate the test's workflows when it ends.

    The time-skipping server is shared by the session and stops skipping time while any
    workflow has a task no worker will ever take (its test's worker is gone): one late signal
    left behind would freeze the timers of every later test.
    """
    try:
        yield
    finally:
        for workflow_id in workflow_ids:
            # Never started, or already closed: then nothing was left behind.
            with contextlib.suppress(RPCError):
                await client.get_workflow_handle(workflow_id).terminate(reason="test finished")
