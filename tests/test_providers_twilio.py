"""Twilio delivery: the real SDK over real HTTP, against a fake of the Messages API."""

from __future__ import annotations

import base64
import logging
import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.providers.base import (
    INVALID_RECIPIENT,
    OUTCOME_UNKNOWN,
    PAYLOAD_REJECTED,
    PROVIDER_AUTH,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    RECIPIENT_OPTED_OUT,
)
from activities.providers.twilio import TwilioSender
from kairos.messages.models import SmsMessage
from tests.fakes.twilio_server import FakeTwilio

PHONE = "+358401234567"
MASKED = "+35840***67"
FROM_NUMBER = "+15005550006"
SERVICE = "MG" + "0123456789abcdef" * 2
CALLBACK = "https://kairos.example/webhooks/twilio/status"


def sms(**changes: Any) -> SmsMessage:
    """The last-chance SMS a shopper gets when the reminder email did not bring them back."""
    fields: dict[str, Any] = {
        "key": "journey:cart_abandonment:c-42:last_chance:1",
        "to": PHONE,
        "body": "Your cart expires tonight: https://shop.example/c/abc Reply STOP to opt out",
        "encoding": "GSM-7",
        "segments": 1,
        "metadata": {"customer_id": "c-42", "journey": "cart_abandonment", "step": "last_chance"},
    }
    return SmsMessage(**(fields | changes))


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as fake:
        yield fake


def sender_for(fake: FakeTwilio, **options: Any) -> TwilioSender:
    settings: dict[str, Any] = {"from_number": FROM_NUMBER, "base_url": fake.base_url}
    return TwilioSender(fake.account_sid, fake.auth_token, timeout=0.3, **(settings | options))


async def failure(sender: TwilioSender, message: SmsMessage | None = None) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await sender.send_sms(message or sms())
    return caught.value


# -- what Twilio receives ------------------------------------------------------------------------


async def test_an_sms_reaches_twilio_from_our_number_with_the_status_callback(
    twilio: FakeTwilio,
) -> None:
    receipt = await sender_for(twilio, status_callback_url=CALLBACK).send_sms(sms())

    assert receipt.provider == "twilio"
    assert receipt.provider_id == twilio.messages[0]["sid"]
    assert re.fullmatch(r"SM[0-9a-f]{32}", receipt.provider_id)
    assert receipt.key == "journey:cart_abandonment:c-42:last_chance:1"
    assert len(twilio.received) == 1
    request = twilio.received[0]
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    credentials = base64.b64encode(f"{twilio.account_sid}:{twilio.auth_token}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {credentials}"
    assert request.body == {
        "To": PHONE,
        "From": FROM_NUMBER,
        "Body": sms().body,
        # The key rides in the callback's URL: Twilio keeps no metadata of ours, and its status
        # callbacks are how an SMS whose answer was lost is matched to its message.
        "StatusCallback": f"{CALLBACK}?key=journey%3Acart_abandonment%3Ac-42%3Alast_chance%3A1",
    }


async def test_a_messaging_service_picks_the_sender(twilio: FakeTwilio) -> None:
    sender = sender_for(twilio, from_number="", messaging_service_sid=SERVICE)

    await sender.send_sms(sms())

    assert twilio.received[0].body == {
        "To": PHONE,
        "Body": sms().body,
        "MessagingServiceSid": SERVICE,
    }
    assert twilio.messages[0]["status"] == "accepted"


def test_a_sender_without_a_from_number_or_service_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="TWILIO_FROM_NUMBER"):
        TwilioSender("AC" + "0" * 32, "token")


# -- failures, and how Temporal will treat them -------------------------------------------------


async def test_a_recipient_who_replied_stop_is_opted_out_and_not_retried(
    twilio: FakeTwilio,
) -> None:
    twilio.fail_for(PHONE, 400, code=21610)

    error = await failure(sender_for(twilio))

    assert error.type == RECIPIENT_OPTED_OUT
    assert error.non_retryable
    assert error.message.startswith(f"Twilio rejected {MASKED}: 21610 the recipient replied STOP")
    assert PHONE not in error.message
    assert twilio.received == []


async def test_an_invalid_number_is_not_retried_and_not_shown_in_full(twilio: FakeTwilio) -> None:
    error = await failure(sender_for(twilio), sms(to="+3584"))

    assert error.type == INVALID_RECIPIENT
    assert error.non_retryable
    assert "21211" in error.message
    assert "+3584" not in error.message
    assert error.details[0]["code"] == 21211


async def test_a_landline_is_an_invalid_recipient(twilio: FakeTwilio) -> None:
    twilio.fail_for(PHONE, 400, code=21614, message=f"'To' number {PHONE} is not a mobile number")

    error = await failure(sender_for(twilio))

    assert error.type == INVALID_RECIPIENT
    assert "21614" in error.message
    assert PHONE not in error.message


async def test_wrong_credentials_are_not_retried(twilio: FakeTwilio) -> None:
    sender = TwilioSender(
        twilio.account_sid, "wrong-token", from_number=FROM_NUMBER, base_url=twilio.base_url
    )

    error = await failure(sender)

    assert error.type == PROVIDER_AUTH
    assert error.non_retryable
    assert "20003" in error.message
    assert "TWILIO_AUTH_TOKEN" in error.message


async def test_a_rate_limit_is_retried_after_the_wait_twilio_asks_for(twilio: FakeTwilio) -> None:
    twilio.fail_next(429, code=20429, retry_after=7)

    error = await failure(sender_for(twilio))

    assert error.type == RATE_LIMITED
    assert not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=7)


async def test_a_rate_limit_without_retry_after_uses_the_retry_policy(twilio: FakeTwilio) -> None:
    sender = sender_for(twilio)
    twilio.fail_next(429, code=20429, retry_after=7)
    await failure(sender)
    twilio.fail_next(429, code=20429)

    error = await failure(sender)

    assert error.type == RATE_LIMITED
    assert error.next_retry_delay is None  # the previous response's header is not reused


@pytest.mark.parametrize("status", [500, 503])
async def test_a_twilio_outage_is_retried(twilio: FakeTwilio, status: int) -> None:
    twilio.fail_next(status)

    error = await failure(sender_for(twilio))

    assert error.type == PROVIDER_UNAVAILABLE
    assert not error.non_retryable
    assert f"HTTP {status}" in error.message


async def test_an_answer_that_never_comes_is_an_unknown_outcome_not_an_outage(
    twilio: FakeTwilio,
) -> None:
    # Twilio read the request and may send the SMS: retrying blindly would duplicate it.
    twilio.delay_next(10)

    error = await failure(sender_for(twilio))

    assert error.type == OUTCOME_UNKNOWN
    assert not error.non_retryable
    assert "timed out" in error.message
    assert twilio.attempts == 1


async def test_a_refused_connection_is_an_outage_retried_as_such() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    sender = TwilioSender("AC" + "0" * 32, "token", from_number=FROM_NUMBER,
                          base_url=f"http://127.0.0.1:{port}", timeout=0.3)  # fmt: skip

    error = await failure(sender)

    assert error.type == PROVIDER_UNAVAILABLE
    assert not error.non_retryable


async def test_a_body_over_1600_characters_is_rejected(twilio: FakeTwilio) -> None:
    error = await failure(sender_for(twilio), sms(body="x" * 1601, segments=11))

    assert error.type == PAYLOAD_REJECTED
    assert error.non_retryable
    assert "21617" in error.message
    assert "1600" in error.message


async def test_an_unknown_messaging_service_is_a_payload_error(twilio: FakeTwilio) -> None:
    sender = sender_for(twilio, from_number="", messaging_service_sid="MG-not-a-sid")

    error = await failure(sender)

    assert error.type == PAYLOAD_REJECTED
    assert "TWILIO_MESSAGING_SERVICE_SID" in error.message


async def test_no_personal_data_is_logged_at_info(
    twilio: FakeTwilio, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    await sender_for(twilio).send_sms(sms())

    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert loud
    assert not [line for line in loud if PHONE in line or "cart expires" in line]
