"""Durations as marketers write them: ``90s``, ``15m``, ``1h``, ``2d``, ``1w``, ``1d 12h``."""

from __future__ import annotations

import re

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WORDS = {
    "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "day": "d", "days": "d", "week": "w", "weeks": "w",
}  # fmt: skip
_PART = re.compile(r"\s*(-?\d+)\s*([a-z]+)\s*")
EXAMPLES = "a duration such as 30m, 1h, 2d, 1w or 1d 12h"


class DurationError(ValueError):
    pass


def parse_duration(text: str | int) -> int:
    """Seconds in ``text``. Integers are taken as seconds. Raises DurationError when unclear."""
    if isinstance(text, bool):
        raise DurationError(f"{text!r} is not {EXAMPLES}")
    if isinstance(text, int):
        return text
    s = str(text).strip().lower()
    if not s:
        raise DurationError(f"empty duration (expected {EXAMPLES})")
    sign = 1
    if s.startswith("-"):
        sign, s = -1, s[1:]
    total, pos = 0, 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise DurationError(f"{text!r} is not {EXAMPLES}")
        amount, unit = int(m.group(1)), m.group(2)
        unit = _WORDS.get(unit, unit)
        if unit not in UNITS:
            raise DurationError(
                f"{text!r}: unknown unit {m.group(2)!r} (use s, m, h, d or w, as in {EXAMPLES})"
            )
        total += amount * UNITS[unit]
        pos = m.end()
    return sign * total


def format_duration(seconds: int) -> str:
    """The shortest readable form: 3600 -> '1h', 90000 -> '1d 1h'."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    parts = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + " ".join(parts)
