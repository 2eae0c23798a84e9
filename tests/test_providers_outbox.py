"""The local outbox: files a person can open, an index, each key delivered once; and its CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from email import policy
from email.message import EmailMessage as MimeMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import typer
from temporalio.exceptions import ApplicationError
from typer.testing import CliRunner, Result

from activities.providers import (
    EMAIL_PROVIDERS,
    SMS_PROVIDERS,
    OutboxEmailSender,
    OutboxSmsSender,
    SendGridSender,
    TwilioSender,
    build_senders,
)
from activities.providers.base import INVALID_RECIPIENT
from kairos.language.plan import Channel
from kairos.messages.models import EmailMessage, SmsMessage
from kairos.messages.rendering import email_headers
from kairos.messages.unsubscribe import unsubscribe_url
from kairos.runtime.config import ConfigError, Settings, load_settings
from kairos.runtime.delivery import EmailProvider, SmsProvider

KEY = "journey:cart_abandonment:c-42:first_reminder:1"


def email(**changes: Any) -> EmailMessage:
    """The cart reminder a shopper gets an hour after leaving their cart."""
    fields: dict[str, Any] = {
        "key": KEY,
        "to": "ada@example.com",
        "from_email": "hello@shop.example",
        "from_name": "Kärry Shop",
        "subject": "Unohditko jotain? You left something in your cart",
        "html": "<p>Your cart is waiting, Ada. <a href='https://shop.example/c'>Open</a></p>",
        "text": "Your cart is waiting, Ada.\nhttps://shop.example/c\n",
        "headers": {
            "List-Unsubscribe": "<https://shop.example/u/abc>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "categories": ("cart_abandonment",),
        "metadata": {
            "kairos_key": KEY,
            "customer_id": "c-42",
            "journey": "cart_abandonment",
            "step": "first_reminder",
        },
    }
    return EmailMessage(**(fields | changes))


def sms(**changes: Any) -> SmsMessage:
    """The last-chance SMS when the reminder email did not bring the shopper back."""
    fields: dict[str, Any] = {
        "key": "journey:cart_abandonment:c-42:last_chance:1",
        "to": "+358401234567",
        "body": "Your cart expires tonight: https://shop.example/c\nReply STOP to opt out",
        "encoding": "GSM-7",
        "segments": 1,
        "metadata": {"customer_id": "c-42", "journey": "cart_abandonment", "step": "last_chance"},
    }
    return SmsMessage(**(fields | changes))


def index(outbox: Path) -> list[dict[str, Any]]:
    lines = (outbox / "index.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def parse_eml(path: Path) -> MimeMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(parsed, MimeMessage)
    return parsed


# -- email ---------------------------------------------------------------------------------------


async def test_an_email_becomes_an_eml_file_a_mail_client_can_open(tmp_path: Path) -> None:
    receipt = await OutboxEmailSender(tmp_path).send_email(email())

    [path] = (tmp_path / "email").glob("*.eml")
    assert path.name.endswith(".eml") and "cart_abandonment_c-42_first_reminder_1" in path.name
    mail = parse_eml(path)
    assert mail["From"].addresses[0].display_name == "Kärry Shop"
    assert mail["From"].addresses[0].addr_spec == "hello@shop.example"
    assert mail["To"] == "ada@example.com"
    assert mail["Subject"] == "Unohditko jotain? You left something in your cart"
    assert mail["Date"].datetime is not None
    assert mail["Message-ID"] == f"<{receipt.provider_id}@outbox.kairos.local>"
    assert mail["List-Unsubscribe"] == "<https://shop.example/u/abc>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_all("X-Kairos-Key") == [KEY]
    assert mail["X-Kairos-Customer-Id"] == "c-42"
    assert mail["X-Kairos-Journey"] == "cart_abandonment"
    assert mail["X-Kairos-Step"] == "first_reminder"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.iter_parts()
    assert isinstance(text, MimeMessage) and isinstance(html, MimeMessage)
    assert text.get_content_type() == "text/plain"
    assert text.get_content() == email().text
    assert html.get_content_type() == "text/html"
    assert html.get_content().strip() == email().html


async def test_an_email_receipt_names_the_outbox(tmp_path: Path) -> None:
    receipt = await OutboxEmailSender(tmp_path).send_email(email())

    assert receipt.provider == "outbox"
    assert receipt.key == KEY
    assert receipt.channel is Channel.email
    assert not receipt.duplicate


async def test_the_unsubscribe_headers_are_written_as_sent_so_one_click_works(
    tmp_path: Path,
) -> None:
    # A real link: long enough that the email package would fold it into encoded words.
    link = unsubscribe_url(
        "http://localhost:8000", "c-42", secret="kairos-dev-secret-change-me", now=1_790_000_000
    )
    assert len(link) > 100
    headers = email_headers(link)
    await OutboxEmailSender(tmp_path).send_email(email(headers=headers))

    [path] = (tmp_path / "email").glob("*.eml")
    raw = path.read_bytes().decode("ascii").split("\n\n", 1)[0].splitlines()
    assert f"List-Unsubscribe: <{link}>" in raw
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    assert not [line for line in raw if "=?" in line and "Unsubscribe" in line]
    mail = parse_eml(path)
    assert mail.get_all("List-Unsubscribe") == [f"<{link}>"]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # The other headers are folded as before: a long non-ASCII subject still reads back whole.
    assert mail["Subject"] == email().subject


async def test_a_line_break_in_metadata_cannot_add_a_header(tmp_path: Path) -> None:
    message = email(metadata={"journey": "cart\r\nBcc: everyone@example.com"})

    await OutboxEmailSender(tmp_path).send_email(message)

    [path] = (tmp_path / "email").glob("*.eml")
    mail = parse_eml(path)
    assert mail["Bcc"] is None
    assert mail["X-Kairos-Journey"] == "cart Bcc: everyone@example.com"


async def test_an_email_to_a_non_address_is_an_invalid_recipient(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as caught:
        await OutboxEmailSender(tmp_path).send_email(email(to="ada at example"))

    assert caught.value.type == INVALID_RECIPIENT
    assert caught.value.non_retryable
    assert not (tmp_path / "index.jsonl").exists()


# -- SMS -----------------------------------------------------------------------------------------


async def test_an_sms_becomes_a_text_file_with_its_encoding_and_segments(tmp_path: Path) -> None:
    receipt = await OutboxSmsSender(tmp_path).send_sms(sms())

    [path] = (tmp_path / "sms").glob("*.txt")
    head, body = path.read_text(encoding="utf-8").split("\n\n", 1)
    assert head.splitlines()[:3] == ["To: +358401234567", "Encoding: GSM-7", "Segments: 1"]
    assert "X-Kairos-Customer-Id: c-42" in head.splitlines()
    assert body == sms().body + "\n"
    assert receipt.channel is Channel.sms


async def test_an_sms_to_a_number_not_in_e164_is_an_invalid_recipient(tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as caught:
        await OutboxSmsSender(tmp_path).send_sms(sms(to="040 123 4567"))

    assert caught.value.type == INVALID_RECIPIENT
    assert "040 123 4567" not in caught.value.message


# -- the index and idempotency -------------------------------------------------------------------


async def test_each_message_gets_one_index_line(tmp_path: Path) -> None:
    email_receipt = await OutboxEmailSender(tmp_path).send_email(email())
    sms_receipt = await OutboxSmsSender(tmp_path).send_sms(sms())

    first, second = index(tmp_path)
    assert first["key"] == KEY
    assert first["channel"] == "email"
    assert first["to"] == "ada@example.com"
    assert first["subject"] == email().subject
    assert (first["customer_id"], first["journey"], first["step"]) == (
        "c-42",
        "cart_abandonment",
        "first_reminder",
    )
    assert first["provider_id"] == email_receipt.provider_id
    assert (tmp_path / first["file"]).is_file()
    assert first["time"].endswith("Z")
    assert second["channel"] == "sms"
    assert second["preview"] == "Your cart expires tonight: https://shop.example/c Reply STOP"
    assert second["step"] == "last_chance"
    assert second["provider_id"] == sms_receipt.provider_id
    assert (tmp_path / second["file"]).is_file()


async def test_a_retried_send_writes_nothing_and_reports_the_first(tmp_path: Path) -> None:
    sender = OutboxEmailSender(tmp_path)
    first = await sender.send_email(email())

    again = await sender.send_email(email(subject="a retry renders the same key again"))

    assert again.duplicate
    assert again.provider_id == first.provider_id
    assert len(list((tmp_path / "email").glob("*.eml"))) == 1
    assert len(index(tmp_path)) == 1


async def test_a_send_that_could_not_write_its_file_can_be_retried(tmp_path: Path) -> None:
    (tmp_path / "email").write_text("a file where the email folder should be")
    sender = OutboxEmailSender(tmp_path)
    with pytest.raises(OSError):
        await sender.send_email(email())
    (tmp_path / "email").unlink()

    receipt = await sender.send_email(email())

    assert not receipt.duplicate
    assert len(list((tmp_path / "email").glob("*.eml"))) == 1


async def test_workers_racing_on_one_key_send_it_exactly_once(tmp_path: Path) -> None:
    # Separate sender instances stand in for separate worker processes sharing the outbox.
    senders = [OutboxSmsSender(tmp_path) for _ in range(8)]

    receipts = await asyncio.gather(*(s.send_sms(sms()) for s in senders))

    assert sum(not r.duplicate for r in receipts) == 1
    assert len({r.provider_id for r in receipts}) == 1
    assert len(list((tmp_path / "sms").glob("*.txt"))) == 1
    assert len(index(tmp_path)) == 1


async def test_different_keys_are_all_written(tmp_path: Path) -> None:
    sender = OutboxEmailSender(tmp_path)

    receipts = await asyncio.gather(*(sender.send_email(email(key=f"k/{n}")) for n in range(5)))

    assert not any(r.duplicate for r in receipts)
    assert len(list((tmp_path / "email").glob("*.eml"))) == 5
    assert len(index(tmp_path)) == 5


# -- choosing providers from settings ------------------------------------------------------------


def test_every_provider_the_settings_accept_has_a_sender_and_no_other() -> None:
    assert sorted(EMAIL_PROVIDERS) == sorted(EmailProvider) == ["outbox", "sendgrid"]
    assert sorted(SMS_PROVIDERS) == sorted(SmsProvider) == ["outbox", "twilio"]
    with pytest.raises(ConfigError) as refused:
        load_settings(
            {"KAIROS_EMAIL_PROVIDER": "mailgun", "KAIROS_SMS_PROVIDER": "vonage"}, dotenv=False
        )
    assert refused.value.problems == [
        "KAIROS_EMAIL_PROVIDER='mailgun': expected auto, outbox or sendgrid",
        "KAIROS_SMS_PROVIDER='vonage': expected auto, outbox or twilio",
    ]


def test_without_credentials_both_channels_go_to_the_outbox(tmp_path: Path) -> None:
    email_sender, sms_sender = build_senders(Settings(home=tmp_path, outbox_dir=tmp_path))

    assert isinstance(email_sender, OutboxEmailSender)
    assert isinstance(sms_sender, OutboxSmsSender)


def test_configured_providers_are_built_from_settings(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        email_provider="sendgrid",
        sms_provider="twilio",
        sendgrid_api_key="SG.key",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="token",
        twilio_from_number="+15005550006",
    )

    email_sender, sms_sender = build_senders(settings)

    assert isinstance(email_sender, SendGridSender)
    assert isinstance(sms_sender, TwilioSender)
    assert (email_sender.name, sms_sender.name) == ("sendgrid", "twilio")
    # Twilio reports each SMS's status to the web front door, which settles unknown outcomes.
    assert sms_sender._status_callback_url == "http://localhost:8000/webhooks/twilio/status"
    off = dataclasses.replace(settings, twilio_status_callback_url="off")
    assert build_senders(off)[1]._status_callback_url == ""  # type: ignore[attr-defined]


def test_an_unknown_provider_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown SMS provider 'pigeon'"):
        build_senders(Settings(home=tmp_path, sms_provider="pigeon"))


# -- kairos outbox -------------------------------------------------------------------------------


@pytest.fixture
def filled_outbox(tmp_path: Path) -> Path:
    outbox = tmp_path / "outbox"

    async def fill() -> None:
        await OutboxEmailSender(outbox).send_email(email())
        await OutboxSmsSender(outbox).send_sms(sms())
        other = {"customer_id": "c-7", "journey": "welcome", "step": "hello"}
        await OutboxEmailSender(outbox).send_email(
            email(key="welcome:c-7", to="bo@example.com", subject="Welcome!", metadata=other)
        )

    asyncio.run(fill())
    return outbox


@pytest.fixture
def kairos() -> typer.Typer:
    from kairos.cli import app  # the whole command line, as the `kairos` script builds it

    return app


def run_outbox(kairos: typer.Typer, outbox: Path, *args: str, **env: str) -> Result:
    variables = {
        "KAIROS_HOME": str(outbox.parent),
        "KAIROS_OUTBOX": str(outbox),
        "COLUMNS": "200",  # one table row per message, whatever terminal runs the tests
        **env,
    }
    return CliRunner().invoke(kairos, ["outbox", *args], env=variables)


def test_kairos_outbox_lists_the_newest_messages_first(
    kairos: typer.Typer, filled_outbox: Path
) -> None:
    result = run_outbox(kairos, filled_outbox)

    assert result.exit_code == 0, result.output
    assert result.output.index("Welcome!") < result.output.index("Your cart expires")
    assert "welcome / hello" in result.output


def test_kairos_outbox_filters_by_channel_and_customer(
    kairos: typer.Typer, filled_outbox: Path
) -> None:
    result = run_outbox(kairos, filled_outbox, "--json", "--channel", "email", "--customer", "c-42")

    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.output)
    assert entry["key"] == KEY
    assert entry["file"].startswith("email/")


def test_kairos_outbox_limit_keeps_the_newest(kairos: typer.Typer, filled_outbox: Path) -> None:
    result = run_outbox(kairos, filled_outbox, "--json", "--limit", "2")

    assert [e["key"] for e in json.loads(result.output)] == [
        "welcome:c-7",
        "journey:cart_abandonment:c-42:last_chance:1",
    ]


def test_kairos_outbox_on_an_empty_outbox_says_how_messages_get_there(
    kairos: typer.Typer, tmp_path: Path
) -> None:
    result = run_outbox(kairos, tmp_path / "outbox")

    assert result.exit_code == 0, result.output
    assert "No messages" in result.output
    assert "KAIROS_EMAIL_PROVIDER" in result.output


def test_kairos_outbox_reports_bad_settings_with_exit_code_2(
    kairos: typer.Typer, filled_outbox: Path
) -> None:
    result = run_outbox(kairos, filled_outbox, KAIROS_QUIET_HOURS="late")

    assert result.exit_code == 2
    assert "KAIROS_QUIET_HOURS" in result.output


def test_kairos_outbox_help_has_an_example(kairos: typer.Typer) -> None:
    result = CliRunner().invoke(kairos, ["outbox", "--help"], env={"COLUMNS": "120"})

    assert result.exit_code == 0
    assert "kairos outbox --channel email" in result.output
