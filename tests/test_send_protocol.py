"""The send protocol, attempt by attempt: the send activity as Temporal runs its retries, over
real HTTP to the local SendGrid and Twilio fakes, with the ledger in PostgreSQL.

Each test runs the ``deliver`` activity's attempts itself (``ActivityEnvironment``), at the
times it chooses, so an hour of retries takes milliseconds and every count is exact.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.customers import CustomerActivities
from activities.messaging import AWAITING_FEEDBACK, Messaging
from activities.metrics import DeliveryMetrics, prometheus_runtime
from activities.providers.base import OUTCOME_UNKNOWN, PROVIDER_UNAVAILABLE
from activities.providers.outbox import OutboxEmailSender, OutboxSmsSender
from activities.providers.sendgrid import SendGridSender
from activities.providers.twilio import TwilioSender
from kairos.language.plan import Category, Channel
from kairos.messages.models import EmailMessage, Receipt, SendOutcome
from kairos.runtime.config import Settings
from kairos.runtime.contract import DeliverRequest
from kairos.runtime.delivery import SEND_TIMEOUTS
from kairos.store.facade import Store
from kairos.web.sendgrid import PATH as SENDGRID_EVENTS
from kairos.web.twilio import STATUS_PATH
from tests.browser.harness import (
    TWILIO_TOKEN,
    SendGridKey,
    offline_kairos,
    serve,
    twilio_signature,
    web_settings,
)
from tests.commands import free_port
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.fakes.twilio_server import FakeTwilio
from tests.helpers import scrape

PHONE = "+358401234567"
NOON = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # the customer's timezone is UTC
# The fakes hold a request this long; the senders give up waiting after TIMEOUT: the provider
# took the message but its answer never reached us.
HOLD = 0.6
TIMEOUT = 0.2

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("customer")]


def request(channel: Channel = Channel.email, key: str = "welcome:c-1:welcome:1") -> DeliverRequest:
    return DeliverRequest(
        key=key,
        customer_id="c-1",
        journey="welcome",
        journey_version="v1",
        run_no=1,
        step="welcome",
        channel=channel,
        template="welcome/welcome" if channel is Channel.email else "cart_abandonment/last_chance",
        category=Category.marketing,
        quiet_hours=("21:00", "08:00"),
        context={"event": {"cart_total": 25.0, "currency": "EUR"}, "journey": {}},
    )


class Attempts:
    """The send activity's attempts for one message, as Temporal would start them."""

    def __init__(
        self, messaging: Messaging, deliver: DeliverRequest, heartbeat: timedelta | None = None
    ) -> None:
        self.messaging = messaging
        self.request = deliver
        self.heartbeat_timeout = heartbeat
        self.count = 0
        self.heartbeats = 0

    async def run(self, at: datetime) -> SendOutcome:
        self.count += 1
        env = ActivityEnvironment()
        env.info = dataclasses.replace(
            ActivityEnvironment.default_info(),
            activity_type="deliver",
            attempt=self.count,
            scheduled_time=NOON,
            current_attempt_scheduled_time=at,
            started_time=at,
            schedule_to_close_timeout=None,
            start_to_close_timeout=timedelta(seconds=SEND_TIMEOUTS.start_to_close_seconds),
            heartbeat_timeout=self.heartbeat_timeout,
        )
        env.on_heartbeat = self._beat
        outcome: SendOutcome = await env.run(self.messaging.deliver, self.request)
        return outcome

    def _beat(self, *details: Any) -> None:
        self.heartbeats += 1

    async def fails(self, at: datetime) -> ApplicationError:
        with pytest.raises(ApplicationError) as caught:
            await self.run(at)
        return caught.value


async def ledger(store: Store, key: str = "welcome:c-1:welcome:1") -> dict[str, Any]:
    row = await store.database.fetch_one("SELECT * FROM messages WHERE key = %s", (key,))
    assert row is not None
    return dict(row)


async def unanswered(attempts: Attempts, fake: FakeSendGrid | FakeTwilio) -> ApplicationError:
    """The first attempt, whose request the provider takes but answers only after the client
    gave up; returns once the provider has the message (a bounded wait)."""
    fake.delay_next(HOLD)
    error = await attempts.fails(NOON)
    for _ in range(100):
        if fake.received:
            return error
        await asyncio.sleep(0.05)
    raise AssertionError("the held request never arrived")


@pytest.fixture
async def customer(store: Store) -> None:
    await store.identify(
        "c-1",
        {"email": "ada@example.com", "phone": PHONE, "timezone": "UTC"},
        consent={"marketing": True, "sms": True},
        source="test",
    )


@pytest.fixture
async def sendgrid() -> AsyncIterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


async def messaging(
    settings: Settings,
    store: Store,
    *,
    email: Any = None,
    sms: Any = None,
    metrics: DeliveryMetrics | None = None,
) -> Messaging:
    customers = CustomerActivities(await offline_kairos(settings, store))
    return Messaging(
        customers,
        settings,
        store.project.templates,
        email or OutboxEmailSender(settings.outbox_dir),
        sms or OutboxSmsSender(settings.outbox_dir),
        metrics,
    )


def email_sender(fake: FakeSendGrid) -> SendGridSender:
    return SendGridSender(fake.api_key, base_url=fake.base_url, timeout=TIMEOUT)


def sms_sender(fake: FakeTwilio, callback: str = "") -> TwilioSender:
    return TwilioSender(fake.account_sid, fake.auth_token, from_number="+15005550006",
                        base_url=fake.base_url, timeout=TIMEOUT,
                        status_callback_url=callback)  # fmt: skip


async def test_a_retry_of_a_sent_message_answers_from_the_ledger_and_calls_nobody(
    settings: Settings, store: Store, sendgrid: FakeSendGrid
) -> None:
    attempts = Attempts(await messaging(settings, store, email=email_sender(sendgrid)), request())

    first = await attempts.run(NOON)
    # Temporal retries an attempt whose completion it never got (the worker died right after).
    again = await attempts.run(NOON + timedelta(seconds=30))

    assert first.status == again.status == "sent"
    assert again.provider_id == first.provider_id == sendgrid.message_ids[0]
    assert sendgrid.attempts == 1
    row = await ledger(store)
    assert (row["attempts"], row["unconfirmed"]) == (1, 0)


async def test_a_retry_after_an_outage_asks_consent_and_quiet_hours_again(
    settings: Settings, store: Store, sendgrid: FakeSendGrid
) -> None:
    attempts = Attempts(await messaging(settings, store, email=email_sender(sendgrid)), request())
    sendgrid.fail_next(503, times=2)

    assert (await attempts.fails(NOON)).type == PROVIDER_UNAVAILABLE
    # The outage outlasts the evening: the next attempt falls in quiet hours.
    night = await attempts.run(NOON.replace(hour=22))
    assert (await attempts.fails(NOON.replace(hour=8, minute=5) + timedelta(days=1))).type == (
        PROVIDER_UNAVAILABLE
    )
    # She opts out before the next attempt.
    await store.identify("c-1", {}, consent={"marketing": False}, source="test")
    after = await attempts.run(NOON + timedelta(days=1))

    assert night.status == "deferred" and night.reason.startswith("quiet hours")
    assert after.status == "blocked" and "consent" in after.reason
    assert sendgrid.received == [] and sendgrid.attempts == 2
    assert (await ledger(store))["status"] == "blocked"


async def test_an_email_sendgrid_took_but_never_answered_is_settled_by_its_webhook_not_resent(
    settings: Settings, store: Store, sendgrid: FakeSendGrid
) -> None:
    attempts = Attempts(await messaging(settings, store, email=email_sender(sendgrid)), request())
    timed_out = await unanswered(attempts, sendgrid)
    waiting = await attempts.fails(NOON + timedelta(seconds=5))
    unknown = await ledger(store)
    # SendGrid's event webhook says it processed the message, with the key in custom_args.
    key = SendGridKey()
    (sent,) = sendgrid.received
    event = {
        "event": "processed", "sg_event_id": "ev-1", "timestamp": int(NOON.timestamp()) + 1,
        "sg_message_id": f"{sendgrid.message_ids[0]}.filterdrecv-1.0",
        **sent.body["custom_args"],
    }  # fmt: skip
    body = httpx.Request("POST", "/", json=[event]).content
    async with serve(
        await offline_kairos(settings, store), web_settings(settings), sendgrid=key
    ) as http:
        response = await http.post(SENDGRID_EVENTS, content=body, headers=key.headers(body))
    settled = await attempts.run(NOON + timedelta(seconds=40))

    assert timed_out.type == OUTCOME_UNKNOWN
    assert waiting.type == AWAITING_FEEDBACK
    assert (unknown["status"], unknown["unconfirmed"]) == ("unknown", 1)
    assert response.status_code == 200
    assert settled.status == "sent" and settled.provider_id == sendgrid.message_ids[0]
    assert sendgrid.attempts == 1 and len(sendgrid.received) == 1
    row = await ledger(store)
    assert (row["status"], row["feedback"], row["provider_ids"]) == (
        "sent", "processed", [sendgrid.message_ids[0]]
    )  # fmt: skip


async def test_an_email_without_feedback_is_resent_once_after_the_channels_wait(
    settings: Settings, store: Store, sendgrid: FakeSendGrid
) -> None:
    # KAIROS_UNKNOWN_EMAIL's default: resend after 10m.
    attempts = Attempts(await messaging(settings, store, email=email_sender(sendgrid)), request())
    await unanswered(attempts, sendgrid)
    looks = [await attempts.fails(NOON + timedelta(minutes=m)) for m in (1, 3, 7)]
    resent = await attempts.run(NOON + timedelta(minutes=11))
    later = await attempts.run(NOON + timedelta(minutes=12))

    assert [e.type for e in looks] == [AWAITING_FEEDBACK] * 3
    assert resent.status == later.status == "sent"
    assert sendgrid.attempts == 2  # once, and once more: a duplicate when the first got through
    row = await ledger(store)
    assert (row["status"], row["resends"], row["unconfirmed"]) == ("sent", 1, 1)
    assert row["reason"] == "sent again after no feedback came"


async def test_an_sms_without_feedback_is_never_resent_and_stays_unknown(
    settings: Settings, store: Store, twilio: FakeTwilio
) -> None:
    # KAIROS_UNKNOWN_SMS's default: report after 10m.
    attempts = Attempts(
        await messaging(settings, store, sms=sms_sender(twilio)), request(Channel.sms)
    )
    assert (await unanswered(attempts, twilio)).type == OUTCOME_UNKNOWN
    assert (await attempts.fails(NOON + timedelta(minutes=1))).type == AWAITING_FEEDBACK
    reported = await attempts.run(NOON + timedelta(minutes=11))

    assert reported.status == "unknown"
    assert "no feedback from the provider" in reported.reason and "not resent" in reported.reason
    assert twilio.attempts == 1
    row = await ledger(store)
    assert (row["status"], row["unconfirmed"], row["resends"]) == ("unknown", 1, 0)


async def test_twilios_status_callback_names_the_message_and_settles_it(
    settings: Settings, store: Store, twilio: FakeTwilio
) -> None:
    callback = f"{settings.public_url}{STATUS_PATH}"
    sms = sms_sender(twilio, callback)
    attempts = Attempts(await messaging(settings, store, sms=sms), request(Channel.sms))
    await unanswered(attempts, twilio)
    # Twilio posts to the callback the message carried, key included, signed with our token.
    url = twilio.received[0].body["StatusCallback"]
    form = {"MessageSid": twilio.messages[0]["sid"], "MessageStatus": "sent"}
    headers = {"X-Twilio-Signature": twilio_signature(url, form, TWILIO_TOKEN)}
    async with serve(await offline_kairos(settings, store), web_settings(settings)) as http:
        response = await http.post(url.removeprefix(settings.public_url), data=form,
                                   headers=headers)  # fmt: skip
        forged = await http.post(url.removeprefix(settings.public_url), data=form,
                                 headers={"X-Twilio-Signature": "forged"})  # fmt: skip
    settled = await attempts.run(NOON + timedelta(minutes=1))

    assert url == f"{callback}?key=welcome%3Ac-1%3Awelcome%3A1"
    assert response.status_code == 204 and forged.status_code == 403
    assert settled.status == "sent" and settled.provider_id == twilio.messages[0]["sid"]
    assert twilio.attempts == 1


async def test_a_send_whose_worker_died_during_the_call_is_counted_and_not_blindly_resent(
    settings: Settings, store: Store, twilio: FakeTwilio
) -> None:
    deliver = request(Channel.sms)
    # An attempt decided the message and marked its call under way, then its worker died.
    await store.ledger.reserve(deliver, now=NOON, due=NOON)
    assert (await store.ledger.begin_call(deliver, now=NOON)).status == "sending"
    attempts = Attempts(await messaging(settings, store, sms=sms_sender(twilio)), deliver)
    attempts.count = 1

    found = await attempts.fails(NOON + timedelta(seconds=40))

    assert found.type == AWAITING_FEEDBACK
    assert twilio.attempts == 0
    row = await ledger(store)
    assert (row["status"], row["unconfirmed"], row["reason"]) == (
        "unknown", 1, "outcome unknown: waiting for the provider's feedback"
    )  # fmt: skip


class LosesTheFirstAnswer:
    """The outbox, whose first answer never reaches the activity (after the file is written)."""

    name = "outbox"
    deduplicates = True

    def __init__(self, outbox: OutboxEmailSender) -> None:
        self.outbox = outbox
        self.lost = False

    async def send_email(self, message: EmailMessage) -> Receipt:
        receipt = await self.outbox.send_email(message)
        if not self.lost:
            self.lost = True
            raise ApplicationError("the answer was lost", type=OUTCOME_UNKNOWN)
        return receipt


async def test_a_provider_that_keeps_one_message_per_key_is_simply_asked_again(
    settings: Settings, store: Store
) -> None:
    outbox = OutboxEmailSender(settings.outbox_dir)
    attempts = Attempts(
        await messaging(settings, store, email=LosesTheFirstAnswer(outbox)), request()
    )

    assert (await attempts.fails(NOON)).type == OUTCOME_UNKNOWN
    again = await attempts.run(NOON + timedelta(seconds=5))  # no wait for feedback

    assert again.status == "sent"
    index = (settings.outbox_dir / "index.jsonl").read_text().splitlines()
    assert len(index) == 1
    row = await ledger(store)
    assert (row["status"], row["unconfirmed"], row["attempts"]) == ("sent", 1, 2)


async def test_only_a_slow_send_heartbeats_so_a_dead_workers_send_is_retried_in_seconds(
    settings: Settings, store: Store, sendgrid: FakeSendGrid
) -> None:
    sender = SendGridSender(sendgrid.api_key, base_url=sendgrid.base_url, timeout=10)
    # The first heartbeat is due at half the timeout: 2 s for the fast send, 1 s for the slow.
    fast = Attempts(await messaging(settings, store, email=sender), request(), timedelta(seconds=4))
    slow = Attempts(
        await messaging(settings, store, email=sender),
        request(key="welcome:c-1:welcome:2"),
        timedelta(seconds=2),
    )

    await fast.run(NOON)
    sendgrid.delay_next(3)  # SendGrid takes 3 s to answer: longer than the heartbeat timeout
    sent = await slow.run(NOON)

    assert fast.heartbeats == 0  # a send within half the heartbeat timeout costs nothing
    assert slow.heartbeats >= 1 and sent.status == "sent"
    assert sendgrid.attempts == 2


async def test_an_operator_reads_sends_blocks_retries_errors_and_unknowns_from_the_metrics(
    settings: Settings, store: Store, sendgrid: FakeSendGrid
) -> None:
    address = f"127.0.0.1:{free_port()}"
    runtime = prometheus_runtime(address)  # serves while it is referenced
    metrics = DeliveryMetrics(runtime.metric_meter)
    sending = await messaging(settings, store, email=email_sender(sendgrid), metrics=metrics)
    sent, outage, night = (
        Attempts(sending, request(key=f"welcome:c-1:welcome:{n}")) for n in (1, 2, 3)
    )

    await sent.run(NOON)
    sendgrid.fail_next(503)
    await outage.fails(NOON)  # SendGrid is down
    await outage.run(NOON + timedelta(seconds=5))  # the retry goes out
    await night.run(NOON.replace(hour=23))  # quiet hours
    # Transactional: the marketing cap (3 a week) would hold a fourth marketing email.
    receipt = request(key="welcome:c-1:welcome:4").model_copy(
        update={"category": Category.transactional}
    )
    unknown = Attempts(sending, receipt)
    await unanswered(unknown, sendgrid)

    scraped = scrape(f"http://{address}/metrics")

    def sample(name: str, **labels: str) -> float:
        return scraped.get((name, frozenset(labels.items())), 0.0)

    email = {"channel": "email"}
    welcome = {"journey": "welcome", "step": "welcome", **email}
    assert sample("kairos_messages_total", status="sent", **welcome) == 2
    assert sample("kairos_messages_total", status="retrying", **welcome) == 2
    assert sample("kairos_messages_total", status="deferred", **welcome) == 1
    assert sample("kairos_messages_blocked_total", reason="quiet_hours", **email) == 1
    assert sample("kairos_send_retries_total", **email) == 1
    assert sample("kairos_provider_errors_total", provider="sendgrid", type="ProviderUnavailable",
                  **email) == 1  # fmt: skip
    assert sample("kairos_provider_errors_total", provider="sendgrid", type="OutcomeUnknown",
                  **email) == 1  # fmt: skip
    assert sample("kairos_unknown_outcomes_total", outcome="detected", **email) == 1
    assert sample("kairos_provider_latency_seconds_count", provider="sendgrid", **email) == 4


async def two_customers(
    settings: Settings, store: Store, sendgrid: FakeSendGrid, *, retry_after: int
) -> tuple[Attempts, Attempts]:
    """One welcome email each for two customers; SendGrid answers the first call with 429."""
    await store.identify(
        "c-2",
        {"email": "grace@example.com", "timezone": "UTC"},
        consent={"marketing": True},
        source="test",
    )
    send = await messaging(settings, store, email=email_sender(sendgrid))
    other = request().model_copy(update={"customer_id": "c-2", "key": "welcome:c-2:welcome:1"})
    sendgrid.fail_next(429, retry_after=retry_after)
    return Attempts(send, request()), Attempts(send, other)


async def test_a_429_pauses_the_provider_for_every_send_without_spending_their_attempts(
    settings: Settings, store: Store, sendgrid: FakeSendGrid
) -> None:
    first, second = await two_customers(settings, store, sendgrid, retry_after=1)

    sending = asyncio.create_task(first.run(NOON))
    for _ in range(100):  # the 429 has been answered and the pause recorded
        if await store.database.fetch_one("SELECT 1 FROM provider_pauses"):
            break
        await asyncio.sleep(0.02)
    # A send that comes during the pause waits for its end instead of calling.
    later = await second.run(NOON)
    sent = await sending

    assert sent.status == later.status == "sent"
    assert sendgrid.calls_while_paused == 0
    assert sendgrid.attempts == 3  # the 429, then each message once
    assert (first.count, second.count) == (1, 1)  # no activity attempt spent on the 429
    assert (await ledger(store))["attempts"] == 2  # provider calls: the 429 and the send
    pause = await store.database.fetch_one("SELECT provider, pauses FROM provider_pauses")
    assert pause is not None and (pause["provider"], pause["pauses"]) == ("sendgrid", 1)


async def test_a_long_pause_ends_the_attempt_with_a_retry_at_its_end_and_calls_nobody(
    settings: Settings, store: Store, sendgrid: FakeSendGrid
) -> None:
    first, second = await two_customers(settings, store, sendgrid, retry_after=120)

    limited = await first.fails(NOON)
    waiting = await second.fails(NOON)

    assert limited.type == waiting.type == "RateLimited"
    assert waiting.next_retry_delay is not None
    assert timedelta(seconds=100) < waiting.next_retry_delay <= timedelta(seconds=121)
    assert sendgrid.attempts == 1 and sendgrid.calls_while_paused == 0
    rows = await store.database.fetch_all("SELECT status, attempts FROM messages ORDER BY key")
    assert [(r["status"], r["attempts"]) for r in rows] == [("sending", 1), ("sending", 0)]
