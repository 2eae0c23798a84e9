"""SMS encoding and segment counting, as a carrier will see the message.

An SMS is sent in the GSM-7 alphabet when every character is in it (160 septets in one message,
153 per part of a concatenated message, the rest going to the concatenation header); otherwise
the whole message goes as UCS-2 (70 UTF-16 code units, 67 per part). One character outside
GSM-7 (a curly apostrophe, a Hungarian ``ő``) therefore more than halves the room, which is why
``analyse`` also names the characters that forced UCS-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# 3GPP TS 23.038 default alphabet, in table order. ESC (0x1B) is left out: it only introduces
# the extension table and is never a character of its own.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs two septets (ESC + code).
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE = 160
GSM7_PART = 153
UCS2_SINGLE = 70
UCS2_PART = 67

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class SmsAnalysis:
    """How a body will travel.

    Attributes:
        encoding: "GSM-7" or "UCS-2".
        segments: Parts the carrier bills for; 0 for an empty body.
        units: Septets for GSM-7, UTF-16 code units for UCS-2.
        chars: Characters (code points) in the body.
        non_gsm: The distinct characters that forced UCS-2, in order of first appearance.
    """

    encoding: Encoding
    segments: int
    units: int
    chars: int
    non_gsm: tuple[str, ...] = ()


def is_gsm7(body: str) -> bool:
    """True when every character of ``body`` can be sent in the GSM-7 alphabet."""
    return all(_in_gsm7(ch) for ch in body)


def analyse(body: str) -> SmsAnalysis:
    """Encoding, segment count and size of an SMS body."""
    non_gsm = tuple(dict.fromkeys(ch for ch in body if not _in_gsm7(ch)))
    if non_gsm:
        costs = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
        segments = _segments(costs, UCS2_SINGLE, UCS2_PART)
        return SmsAnalysis("UCS-2", segments, sum(costs), len(body), non_gsm)
    costs = [2 if ch in GSM7_EXTENSION else 1 for ch in body]
    return SmsAnalysis("GSM-7", _segments(costs, GSM7_SINGLE, GSM7_PART), sum(costs), len(body))


def _in_gsm7(ch: str) -> bool:
    return ch in GSM7_BASIC or ch in GSM7_EXTENSION


def _segments(costs: list[int], single: int, part: int) -> int:
    """Parts needed when no character may straddle two parts.

    An extension character's escape pair and a UTF-16 surrogate pair must travel in one part:
    a part that cannot take the whole character is closed one unit short.
    """
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > part:
            segments += 1
            used = 0
        used += cost
    return segments
