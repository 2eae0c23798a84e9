"""Phone numbers as people type them, normalised to E.164 or explained."""

from __future__ import annotations

import pytest

from kairos.runtime.phone import PhoneError, is_e164, mask, normalise


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+358 40 123 4567", None, "+358401234567"),
        ("040 123 4567", "FI", "+358401234567"),
        ("040-1234567", "fi", "+358401234567"),
        ("00358 40 1234567", "FI", "+358401234567"),
        ("+49 (30) 1234567", "FI", "+49301234567"),
        ("(415) 555-2671", "US", "+14155552671"),
    ],
)
def test_normalises_to_e164(raw: str, region: str | None, e164: str) -> None:
    assert normalise(raw, default_region=region) == e164


def test_too_short_says_so_and_shows_the_right_form() -> None:
    with pytest.raises(PhoneError) as caught:
        normalise("040 123", default_region="FI")
    message = str(caught.value)
    assert message.startswith("'040 123' is not a valid phone number for FI: too short; ")
    assert "write it as +358" in message


@pytest.mark.parametrize(
    ("raw", "region", "fragment"),
    [
        ("0401234567", None, "has no country code"),
        ("040123456789012", "FI", "too long"),
        ("+999 123456", None, "unknown country code"),
        ("call me", "FI", "not a phone number"),
        ("", "FI", "empty"),
        ("0401234567", "XX", "unknown default region 'XX'"),
    ],
)
def test_unreadable_numbers_are_explained(raw: str, region: str | None, fragment: str) -> None:
    with pytest.raises(PhoneError, match=fragment):
        normalise(raw, default_region=region)


def test_phone_error_is_a_value_error() -> None:
    assert issubclass(PhoneError, ValueError)


def test_is_e164_needs_the_form_and_a_real_number() -> None:
    assert is_e164("+358401234567")
    assert not is_e164("358401234567")
    assert not is_e164("+358 40 123 4567")
    assert not is_e164("+35840123")  # right form, not a valid Finnish mobile


def test_mask_keeps_country_code_and_ends() -> None:
    assert mask("+358401234567") == "+35840***67"
    assert mask("+14155552671") == "+141***71"
    assert mask("not a number") == "***"
