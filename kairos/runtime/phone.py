"""Phone numbers: E.164 normalisation and validation (libphonenumber rules), and log masking.

SMS goes only to numbers in E.164 form (``+358401234567``). People type numbers every which
way (``040 123 4567``, ``00358 40 1234567``); ``normalise`` turns what can be read into E.164 and
explains, with an example in the right form, what cannot.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat, PhoneNumberType
from phonenumbers import ValidationResult as Reason

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_GENERIC_EXAMPLE = "+358401234567"

_REASONS = {
    Reason.TOO_SHORT: "too short",
    Reason.TOO_LONG: "too long",
    Reason.INVALID_LENGTH: "wrong number of digits",
    Reason.IS_POSSIBLE_LOCAL_ONLY: "too short (a local number: add the area code)",
    Reason.INVALID_COUNTRY_CODE: "unknown country code",
}


class PhoneError(ValueError):
    """A phone number that cannot be read as a valid E.164 number."""


def normalise(raw: str, *, default_region: str | None = None) -> str:
    """Return ``raw`` as an E.164 number.

    Args:
        raw: The number as typed: spaces, dashes, brackets, a leading ``00`` or ``+`` are fine.
        default_region: ISO 3166 region (``"FI"``) for numbers written without a country code.

    Raises:
        PhoneError: The number cannot be parsed or is not a valid number; the message says why
            and shows the expected form.
    """
    region = default_region.upper() if default_region else None
    if region is not None and region not in phonenumbers.SUPPORTED_REGIONS:
        raise PhoneError(f"unknown default region {default_region!r}; use a code such as FI or DE")
    number = _parse(raw, region)
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, PhoneNumberFormat.E164)
    number_region = phonenumbers.region_code_for_country_code(number.country_code or 0)
    where = region if number_region in (None, "ZZ", "001") else number_region
    raise _invalid(raw, where, _reason(number))


def is_e164(value: str) -> bool:
    """True when ``value`` is written in E.164 form *and* is a valid number."""
    if not _E164.match(value):
        return False
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(value, None))
    except NumberParseException:
        return False


def mask(e164: str) -> str:
    """Hide the middle of a number for logs: ``+358401234567`` -> ``+35840***67``.

    The country code and two more digits stay (enough to tell networks apart), as do the last
    two; the hidden part is always ``***`` so the mask does not reveal the number's length.
    """
    if not _E164.match(e164) or len(e164) < 8:
        return "***"
    try:
        keep = len(str(phonenumbers.parse(e164, None).country_code)) + 3
    except NumberParseException:
        keep = 4
    keep = min(keep, len(e164) - 4)
    return f"{e164[:keep]}***{e164[-2:]}"


def _parse(raw: str, region: str | None) -> PhoneNumber:
    text = raw.strip()
    if not text:
        raise PhoneError("the phone number is empty; write it as " + _example(region))
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            if region is None and not text.startswith(("+", "00")):
                raise PhoneError(
                    f"{raw!r} has no country code; write it in international form such as "
                    f"{_GENERIC_EXAMPLE}, or give a default region"
                ) from None
            raise _invalid(raw, region, "unknown country code") from None
        raise _invalid(raw, region, "not a phone number") from None


def _reason(number: PhoneNumber) -> str:
    overall = phonenumbers.is_possible_number_with_reason(number)
    if overall in _REASONS:
        return _REASONS[overall]
    # Many regions have short service numbers, so a too-short mobile number can still be
    # "possible" overall; SMS goes to mobiles, so judge the length as a mobile number.
    as_mobile = phonenumbers.is_possible_number_for_type_with_reason(number, PhoneNumberType.MOBILE)
    return _REASONS.get(as_mobile, "not a number in use")


def _invalid(raw: str, region: str | None, reason: str) -> PhoneError:
    where = f" for {region}" if region else ""
    return PhoneError(
        f"{raw!r} is not a valid phone number{where}: {reason}; write it as {_example(region)}"
    )


def _example(region: str | None) -> str:
    if region:
        example = phonenumbers.example_number_for_type(region, PhoneNumberType.MOBILE)
        if example is not None:
            return phonenumbers.format_number(example, PhoneNumberFormat.E164)
    return _GENERIC_EXAMPLE
