"""Locale-aware filters and functions for templates: money, numbers, dates, plurals, schedules.

Every filter formats in the locale the message renders in (as ``templates/locales.yaml``
styles it, :mod:`kairos.messages.locales`) and shows times in the customer's timezone. The renderer
puts a :class:`Scope` into each render's context under :data:`SCOPE_KEY`; the filters read it from
there, so one compiled template serves every locale.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, format_time, format_timedelta
from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import pass_context
from jinja2.runtime import Context

from kairos.language.durations import DurationError, parse_duration

SCOPE_KEY = "__kairos_render__"  # context key holding the render locale, timezone and clock
# CLDR's plural categories; each language uses some of them, and every language uses `other`.
PLURAL_CATEGORIES = ("zero", "one", "two", "few", "many", "other")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Scope:
    """What locale-aware filters need from the render that calls them."""

    locale: Locale
    zone: tzinfo
    now: datetime


@lru_cache(maxsize=128)
def babel_locale(tag: str) -> Locale:
    """The CLDR locale for a tag (``en-GB``), its language (``en``), or English."""
    for candidate in (tag, tag.split("-")[0], "en"):
        try:
            return Locale.parse(candidate, sep="-")
        except (ValueError, UnknownLocaleError):
            continue
    return Locale("en")


@lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    """The timezone ``name``, or UTC when it is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def plural_categories(tag: str) -> frozenset[str]:
    """The plural categories a language needs (``one`` and ``other`` for English)."""
    return frozenset(babel_locale(tag).plural_form.tags) | {"other"}


def _scope(context: Context) -> Scope:
    scope = context.get(SCOPE_KEY)
    if isinstance(scope, Scope):
        return scope
    # A macro imported without context cannot see the render; English and UTC are the least
    # surprising defaults there.
    return Scope(babel_locale("en"), UTC, datetime.now(UTC))


def _as_number(value: Any) -> int | float | Decimal:
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            pass
    raise ValueError(f"expected a number, not {value!r}")


def _as_moment(value: Any) -> datetime | date:
    """A datetime (aware; naive means UTC) or a date, from either or from ISO 8601 text."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == len("2026-01-31"):
                return date.fromisoformat(text)
            moment = datetime.fromisoformat(text)  # accepts a trailing Z since Python 3.11
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise ValueError(f"expected a date, a datetime or ISO 8601 text, not {value!r}")


# -- Numbers -----------------------------------------------------------------------------------


@pass_context
def _money(
    context: Context,
    amount: Any,
    currency: str = "EUR",
    format: str | None = None,
    whole: bool = False,
) -> str:
    """``€1,234.50``; with ``whole=true`` a whole amount drops its cents (``€10``, not
    ``€10.00``) while ``€10.50`` keeps them."""
    number = _as_number(amount)
    return _formatted_money(
        number, type(number).__name__, currency.upper(), format, whole, _locale(context)
    )


@pass_context
def _number(context: Context, value: Any, format: str | None = None) -> str:
    number = _as_number(value)
    return _formatted(format_decimal, number, type(number).__name__, format, _locale(context))


@pass_context
def _percent(context: Context, value: Any, format: str | None = None) -> str:
    number = _as_number(value)
    return _formatted(format_percent, number, type(number).__name__, format, _locale(context))


def _locale(context: Context) -> Locale:
    return _scope(context).locale


# Babel takes ~30 us to format an amount (it looks up the currency's names on every call);
# amounts repeat (prices, rewards, coupon percentages), and the result depends on nothing
# else, so each is formatted once per process. The number's type is part of the key: 1 and
# 1.0 are equal but need not format alike.
@lru_cache(maxsize=8192)
def _formatted_money(
    number: int | float | Decimal,
    kind: str,
    currency: str,
    format: str | None,
    whole: bool,
    locale: Locale,
) -> str:
    if whole and format is None and number == int(number):
        pattern = copy.copy(locale.currency_formats["standard"])
        pattern.frac_prec = (0, 0)
        text: str = pattern.apply(int(number), locale, currency=currency, currency_digits=False)
        return text
    return format_currency(number, currency, format=format, locale=locale)


@lru_cache(maxsize=8192)
def _formatted(
    function: Callable[..., str],
    number: int | float | Decimal,
    kind: str,
    format: str | None,
    locale: Locale,
) -> str:
    return function(number, format=format, locale=locale)


@pass_context
def _plural(context: Context, count: Any, **forms: str) -> str:
    """The form of ``forms`` the language's plural rules pick for ``count``, with ``#`` as
    the number: ``{{ n | plural(one="# point", other="# points") }}``."""
    unknown = sorted(set(forms) - set(PLURAL_CATEGORIES))
    if unknown:
        raise ValueError(
            f"plural() has no form {unknown[0]}= (forms: {', '.join(PLURAL_CATEGORIES)})"
        )
    if "other" not in forms:
        raise ValueError('plural() needs other= (the form for most numbers, such as "# points")')
    locale = _scope(context).locale
    number = _as_number(count)
    if isinstance(number, float) and number.is_integer():
        number = int(number)  # 1.0 from JSON is one point, not "1 points"
    text = forms.get(locale.plural_form(number)) or forms["other"]
    return text.replace("#", format_decimal(number, locale=locale))


# -- Dates and times ---------------------------------------------------------------------------


@pass_context
def _date(context: Context, value: Any, format: str = "medium") -> str:
    scope = _scope(context)
    moment = _as_moment(value)
    day = moment.astimezone(scope.zone).date() if isinstance(moment, datetime) else moment
    return _formatted_date(day, format, scope.locale)


@lru_cache(maxsize=8192)
def _formatted_date(day: date, format: str, locale: Locale) -> str:
    """A day as ``locale`` writes it (Babel parses the pattern on every call; days repeat)."""
    return format_date(day, format=format, locale=locale)


@pass_context
def _datetime(context: Context, value: Any, format: str = "medium") -> str:
    scope = _scope(context)
    moment = _as_moment(value)
    if not isinstance(moment, datetime):
        return format_date(moment, format=format, locale=scope.locale)
    return format_datetime(moment, format=format, tzinfo=scope.zone, locale=scope.locale)


@pass_context
def _time(context: Context, value: Any, format: str = "short") -> str:
    scope = _scope(context)
    moment = _as_moment(value)
    if not isinstance(moment, datetime):
        raise ValueError(f"expected a datetime, not the date {value!r}")
    return format_time(moment, format=format, tzinfo=scope.zone, locale=scope.locale)


@pass_context
def _relative(context: Context, value: Any) -> str:
    """``in 3 days`` / ``3 days ago`` (localized), relative to the time of rendering."""
    scope = _scope(context)
    moment = _as_moment(value)
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, datetime.min.time(), tzinfo=scope.zone)
    delta: timedelta = moment - scope.now
    return format_timedelta(delta, add_direction=True, locale=scope.locale)


@pass_context
def _next_monthly(
    context: Context,
    weekday: str,
    at: str,
    timezone: str,
    week: int = 1,
    notice: str = "0m",
) -> datetime:
    """The next monthly event after the time of rendering (plus ``notice``).

    ``next_monthly("thursday", "18:00", "Europe/Helsinki")`` is the first Thursday of a month at
    18:00 Helsinki time; ``week=-1`` is the last such weekday of the month. The result is a
    datetime: show it with ``| date``, ``| time`` and ``| datetime``, which put it in the
    reader's timezone.
    """
    day = weekday.strip().lower()
    if day not in WEEKDAYS:
        raise ValueError(f"next_monthly(): {weekday!r} is not a weekday (such as 'thursday')")
    if week not in (1, 2, 3, 4, -1):
        raise ValueError(f"next_monthly(): week={week!r} (1 to 4, or -1 for the last)")
    try:
        hour, minute = (int(part) for part in at.split(":"))
        local_time = time(hour, minute)
        delay = timedelta(seconds=parse_duration(notice))
    except (ValueError, DurationError) as exc:
        raise ValueError(f"next_monthly(): at={at!r}, notice={notice!r}: {exc}") from exc
    place = zone(timezone)
    if place is UTC:  # zone() answers UTC only for a name that is not a timezone
        raise ValueError(f"next_monthly(): {timezone!r} is not a timezone, such as Europe/Helsinki")
    earliest = _scope(context).now + delay
    year, month = earliest.astimezone(place).year, earliest.astimezone(place).month
    for _ in range(13):
        moment = datetime.combine(
            _nth_weekday(year, month, WEEKDAYS.index(day), week), local_time, tzinfo=place
        )
        if moment >= earliest:
            return moment
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    raise AssertionError("a weekday comes round every month")  # pragma: no cover


def _nth_weekday(year: int, month: int, weekday: int, week: int) -> date:
    if week > 0:
        first = date(year, month, 1)
        return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (week - 1))
    following = date(year + (month == 12), month % 12 + 1, 1)
    last = following - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


FILTERS: dict[str, Callable[..., str]] = {
    "money": _money,
    "number": _number,
    "percent": _percent,
    "plural": _plural,
    "date": _date,
    "datetime": _datetime,
    "time": _time,
    "relative": _relative,
    "timeago": _relative,
}
GLOBALS: dict[str, Callable[..., Any]] = {"next_monthly": _next_monthly}
# What gives a different answer at a different time of rendering (they read the clock).
READS_CLOCK = frozenset({"relative", "timeago", "next_monthly"})
