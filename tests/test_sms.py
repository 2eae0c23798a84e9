"""SMS encoding and segments, as carriers count them."""

from __future__ import annotations

import pytest

from kairos.messages.sms import GSM7_EXTENSION, analyse, is_gsm7


@pytest.mark.parametrize(
    ("body", "encoding", "segments", "units"),
    [
        ("", "GSM-7", 0, 0),
        ("Hello", "GSM-7", 1, 5),
        # Finnish and Swedish letters are in the GSM-7 basic set.
        ("Hyvää päivää! Ostoskorisi odottaa. Åbo", "GSM-7", 1, 38),
        # So are the German ones, ß included.
        ("Grüße aus München, Straße Ä Ö Ü", "GSM-7", 1, 31),
        # Hungarian á and ő are not: the whole message goes as UCS-2.
        ("Köszönjük a vásárlást", "UCS-2", 1, 21),
        ("Legyen szép napja, Gergő", "UCS-2", 1, 24),
        ("Привет! Ваша корзина ждёт", "UCS-2", 1, 25),
        # An emoji is two UTF-16 code units.
        ("Hi 👋", "UCS-2", 1, 5),
        # A curly apostrophe, typical of copy pasted from a word processor.
        ("It’s back in stock", "UCS-2", 1, 18),
        # Extension characters cost two septets each.
        ("Only 9,90 €", "GSM-7", 1, 12),
        ("[]{}\\~^|€", "GSM-7", 1, 18),
    ],
)
def test_encoding_and_size_of_realistic_messages(
    body: str, encoding: str, segments: int, units: int
) -> None:
    analysis = analyse(body)
    assert (analysis.encoding, analysis.segments, analysis.units) == (encoding, segments, units)
    assert analysis.chars == len(body)


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # 160 septets
        ("€" * 81, 2),
        # 306 septets would be two parts, but the escape pair of € cannot straddle the first
        # boundary, so part one closes at 152 septets and a third part is needed.
        ("a" * 152 + "€" + "a" * 152, 3),
    ],
)
def test_gsm7_segments(body: str, segments: int) -> None:
    assert analyse(body).segments == segments


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("я" * 70, 1),
        ("я" * 71, 2),
        ("я" * 134, 2),
        ("я" * 135, 3),
        ("😀" * 35, 1),  # 70 code units
        # 134 code units would be two parts, but the surrogate pair stays whole.
        ("я" * 66 + "😀" + "я" * 66, 3),
    ],
)
def test_ucs2_segments(body: str, segments: int) -> None:
    assert analyse(body).segments == segments


def test_names_the_characters_that_forced_ucs2() -> None:
    assert analyse("Szép napot, Gergő! Köszönjük.").non_gsm == ("ő",)
    assert analyse("Tervetuloa!").non_gsm == ()


def test_extension_table_is_gsm7() -> None:
    assert all(is_gsm7(ch) for ch in GSM7_EXTENSION)
    assert not is_gsm7("ç")  # only the capital Ç is in the basic set
    assert is_gsm7("Ç")
