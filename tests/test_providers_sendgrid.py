"""SendGrid delivery: the real SDK over real HTTP, against a fake of the Mail Send API."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from activities.providers.base import (
    INVALID_RECIPIENT,
    MAX_RETRY_DELAY,
    OUTCOME_UNKNOWN,
    PAYLOAD_REJECTED,
    PROVIDER_AUTH,
    PROVIDER_UNAVAILABLE,
    RATE_LIMITED,
    mask_email,
    mask_phone,
    retry_delay,
)
from activities.providers.sendgrid import KEY_ARG, SendGridSender, classify_error
from kairos.language.plan import Category
from kairos.messages.models import EmailMessage
from tests.fakes.sendgrid_server import FakeSendGrid

RECIPIENT = "ada@example.com"
NOW = 1_750_000_000.0  # a fixed "now" for parsing rate-limit headers


def email(**changes: Any) -> EmailMessage:
    """The cart reminder a shopper gets an hour after leaving their cart."""
    fields: dict[str, Any] = {
        "key": "journey:cart_abandonment:c-42:first_reminder:1",
        "to": RECIPIENT,
        "from_email": "hello@shop.example",
        "from_name": "The Shop",
        "subject": "You left something in your cart",
        "html": "<p>Your cart is waiting.</p>",
        "text": "Your cart is waiting.",
        "headers": {
            "List-Unsubscribe": "<https://shop.example/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "categories": ("cart_abandonment",),
        "metadata": {
            "customer_id": "c-42",
            "journey": "cart_abandonment",
            "step": "first_reminder",
        },
    }
    return EmailMessage(**(fields | changes))


@pytest.fixture
def sendgrid() -> Iterator[FakeSendGrid]:
    with FakeSendGrid() as fake:
        yield fake


def sender_for(fake: FakeSendGrid, **options: Any) -> SendGridSender:
    return SendGridSender(fake.api_key, base_url=fake.base_url, timeout=0.3, **options)


async def failure(sender: SendGridSender, message: EmailMessage | None = None) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await sender.send_email(message or email())
    return caught.value


# -- what SendGrid receives ---------------------------------------------------------------------


async def test_a_marketing_email_reaches_sendgrid_with_everything_webhooks_need(
    sendgrid: FakeSendGrid,
) -> None:
    receipt = await sender_for(sendgrid, asm_group_id=4242).send_email(email())

    assert receipt.provider == "sendgrid"
    assert receipt.provider_id == sendgrid.message_ids[0]
    assert receipt.key == "journey:cart_abandonment:c-42:first_reminder:1"
    assert not receipt.duplicate
    assert len(sendgrid.received) == 1
    request = sendgrid.received[0]
    assert request.headers["authorization"] == f"Bearer {sendgrid.api_key}"
    assert request.body == {
        "from": {"email": "hello@shop.example", "name": "The Shop"},
        "subject": "You left something in your cart",
        "personalizations": [{"to": [{"email": RECIPIENT}]}],
        "content": [
            {"type": "text/plain", "value": "Your cart is waiting."},
            {"type": "text/html", "value": "<p>Your cart is waiting.</p>"},
        ],
        "headers": {
            "List-Unsubscribe": "<https://shop.example/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "categories": ["cart_abandonment"],
        "custom_args": {
            KEY_ARG: "journey:cart_abandonment:c-42:first_reminder:1",
            "customer_id": "c-42",
            "journey": "cart_abandonment",
            "step": "first_reminder",
        },
        "asm": {"group_id": 4242},
    }


async def test_a_transactional_email_is_not_put_in_the_unsubscribe_group(
    sendgrid: FakeSendGrid,
) -> None:
    await sender_for(sendgrid, asm_group_id=4242).send_email(email(category=Category.transactional))

    assert "asm" not in sendgrid.received[0].body


async def test_sandbox_mode_asks_sendgrid_to_validate_without_delivering(
    sendgrid: FakeSendGrid,
) -> None:
    receipt = await sender_for(sendgrid, sandbox=True).send_email(email())

    assert sendgrid.received[0].body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert receipt.provider_id == ""  # SendGrid answers 200 and assigns no message id
    assert sendgrid.message_ids == []


async def test_an_address_that_looks_like_a_name_is_sent_as_is_for_sendgrid_to_judge(
    sendgrid: FakeSendGrid,
) -> None:
    error = await failure(sender_for(sendgrid), email(to="Ada Lovelace"))

    assert error.type == INVALID_RECIPIENT
    assert sendgrid.received == []


async def test_content_that_contains_an_api_key_is_never_sent(sendgrid: FakeSendGrid) -> None:
    error = await failure(sender_for(sendgrid), email(text="SG.abcdefgh.ijklmnop was pasted here"))

    assert error.type == PAYLOAD_REJECTED
    assert "SG.abcdefgh" not in error.message
    assert sendgrid.attempts == 0


# -- failures, and how Temporal will treat them -------------------------------------------------


async def test_a_rate_limit_is_retried_after_the_wait_sendgrid_asks_for(
    sendgrid: FakeSendGrid,
) -> None:
    sendgrid.fail_next(429, retry_after=30)

    error = await failure(sender_for(sendgrid))

    assert error.type == RATE_LIMITED
    assert not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=30)
    assert "HTTP 429" in error.message
    assert sendgrid.received == []


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_sendgrid_outage_is_retried(sendgrid: FakeSendGrid, status: int) -> None:
    sendgrid.fail_next(status)

    error = await failure(sender_for(sendgrid))

    assert error.type == PROVIDER_UNAVAILABLE
    assert not error.non_retryable
    assert f"HTTP {status}" in error.message


async def test_the_next_attempt_after_an_outage_is_delivered(sendgrid: FakeSendGrid) -> None:
    sender = sender_for(sendgrid)
    sendgrid.fail_next(503)
    await failure(sender)

    receipt = await sender.send_email(email())

    assert receipt.provider_id == sendgrid.message_ids[0]
    assert sendgrid.attempts == 2
    assert len(sendgrid.received) == 1


async def test_an_answer_that_never_comes_is_an_unknown_outcome_not_an_outage(
    sendgrid: FakeSendGrid,
) -> None:
    # SendGrid read the request and may send it: retrying blindly would duplicate the email.
    sendgrid.delay_next(10)

    error = await failure(sender_for(sendgrid))

    assert error.type == OUTCOME_UNKNOWN
    assert not error.non_retryable
    assert "timed out" in error.message
    assert error.details == ({"provider": "sendgrid", "key": email().key},)
    assert sendgrid.attempts == 1


async def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    sender = SendGridSender("SG.key", base_url=f"http://127.0.0.1:{port}", timeout=0.3)

    error = await failure(sender)

    assert error.type == PROVIDER_UNAVAILABLE
    assert not error.non_retryable


async def test_an_invalid_address_is_not_retried_and_not_shown_in_full(
    sendgrid: FakeSendGrid,
) -> None:
    error = await failure(sender_for(sendgrid), email(to="ada@@example"))

    assert error.type == INVALID_RECIPIENT
    assert error.non_retryable
    assert "personalizations.0.to.0.email" in error.message
    assert "ada@@example" not in error.message
    assert "ada@@example" not in repr(error.details)


async def test_an_address_sendgrid_refuses_is_an_invalid_recipient(
    sendgrid: FakeSendGrid,
) -> None:
    sendgrid.fail_for(
        RECIPIENT,
        400,
        field="personalizations.0.to.0.email",
        message=f"{RECIPIENT} does not contain a valid address.",
    )

    error = await failure(sender_for(sendgrid))

    assert error.type == INVALID_RECIPIENT
    assert error.message.startswith("SendGrid rejected a***@example.com (HTTP 400")
    assert RECIPIENT not in error.message


async def test_a_bad_payload_is_not_retried(sendgrid: FakeSendGrid) -> None:
    error = await failure(sender_for(sendgrid), email(subject=""))

    assert error.type == PAYLOAD_REJECTED
    assert error.non_retryable
    assert "HTTP 400, subject" in error.message


async def test_an_oversized_email_is_not_retried() -> None:
    with FakeSendGrid(max_bytes=2_000) as sendgrid:
        error = await failure(sender_for(sendgrid), email(html="<p>" + "x" * 5_000 + "</p>"))

    assert error.type == PAYLOAD_REJECTED
    assert error.non_retryable
    assert "HTTP 413" in error.message


async def test_a_wrong_api_key_is_not_retried(sendgrid: FakeSendGrid) -> None:
    sender = SendGridSender("SG.revoked", base_url=sendgrid.base_url, timeout=0.3)

    error = await failure(sender)

    assert error.type == PROVIDER_AUTH
    assert error.non_retryable
    assert "HTTP 401" in error.message
    assert "SENDGRID_API_KEY" in error.message


async def test_a_key_without_mail_send_permission_is_not_retried(sendgrid: FakeSendGrid) -> None:
    sendgrid.fail_next(403)

    error = await failure(sender_for(sendgrid))

    assert error.type == PROVIDER_AUTH
    assert error.non_retryable
    assert "HTTP 403" in error.message


async def test_no_personal_data_is_logged_at_info(
    sendgrid: FakeSendGrid, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    await sender_for(sendgrid).send_email(email())

    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert loud
    assert not [line for line in loud if RECIPIENT in line or "cart is waiting" in line]


# -- rate-limit headers and masking, with a fixed clock -----------------------------------------


def test_rate_limit_reset_is_honoured_when_it_asks_for_longer_than_retry_after() -> None:
    headers = {"retry-after": "5", "x-ratelimit-reset": str(int(NOW) + 40)}

    error = classify_error(429, b"", headers, email(), now=NOW)

    assert error.type == RATE_LIMITED
    assert error.next_retry_delay == timedelta(seconds=40)


def test_retry_after_may_be_an_http_date() -> None:
    when = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)

    assert retry_delay(when, now=NOW) == timedelta(seconds=90)


def test_retry_after_without_a_usable_wait_leaves_the_backoff_to_the_retry_policy() -> None:
    assert retry_delay(None, now=NOW) is None
    assert retry_delay("soon", now=NOW) is None
    assert retry_delay("0", now=NOW) is None
    assert retry_delay(None, str(int(NOW) - 10), now=NOW) is None


def test_a_huge_retry_after_is_capped() -> None:
    assert retry_delay("86400", now=NOW) == MAX_RETRY_DELAY


def test_a_rate_limit_without_headers_is_still_retried() -> None:
    error = classify_error(
        429, b'{"errors":[{"message":"too many requests"}]}', {}, email(), now=NOW
    )

    assert error.type == RATE_LIMITED
    assert error.next_retry_delay is None
    assert not error.non_retryable


def test_recipients_are_masked_for_the_temporal_ui() -> None:
    assert mask_email("ada@example.com") == "a***@example.com"
    assert mask_email("no-at-sign") == "***"
    assert mask_phone("+358401234567") == "+35840***67"
    assert mask_phone("+123") == "***"
