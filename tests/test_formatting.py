"""Locale styles (templates/locales.yaml), plurals, whole-euro money and monthly dates."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kairos.language.actions_catalogue import action_sample
from kairos.language.plan import Channel
from kairos.messages.rendering import RenderError, TemplateStore

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)  # a Saturday
STYLES = """\
en: {format: en-GB, timezone: Europe/Helsinki}
fi: {format: fi-FI, timezone: Europe/Helsinki}
de: {format: de-DE, timezone: Europe/Berlin}
"""


def project(tmp_path: Path, body: str, *, styles: str | None = STYLES) -> TemplateStore:
    """A template store whose `show/it` email has ``body`` as its text part, in en/fi/de/sv."""
    root = tmp_path / "templates"
    (root / "show").mkdir(parents=True)
    for locale in ("en", "fi", "de", "sv"):
        (root / "show" / f"it.{locale}.subject.j2").write_text("Subject")
        (root / "show" / f"it.{locale}.html.j2").write_text("<p>It</p>")
        (root / "show" / f"it.{locale}.text.j2").write_text(body)
    if styles is not None:
        (root / "locales.yaml").write_text(styles)
    return TemplateStore(root, clock=lambda: NOW)


def text(store: TemplateStore, locale: str, **customer: Any) -> str:
    context = {
        "customer": customer,
        "event": {"at": "2026-02-14T16:00:00Z", "day": "2026-02-14", "n": 1, "total": 10},
        "journey": {},
    }
    return store.render_email(
        "show/it", locale=locale, default_locale="en", context=context, marketing=False
    ).text


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en", "14 February 2026, 18:00"),  # en-GB, in the locale's timezone (Helsinki)
        ("fi", "14. helmikuuta 2026, 18.00"),
        ("de", "14. Februar 2026, 17:00"),  # Berlin
        ("sv", "14 februari 2026, 16:00"),  # not in the file: sv's own style, in UTC
    ],
)
def test_each_locale_writes_dates_in_its_configured_style_and_timezone(
    tmp_path: Path, locale: str, expected: str
) -> None:
    store = project(tmp_path, "{{ event.day | date('long') }}, {{ event.at | time }}")
    assert text(store, locale) == expected


def test_the_customers_own_timezone_wins_over_the_locales(tmp_path: Path) -> None:
    store = project(tmp_path, "{{ event.at | time }}")
    assert text(store, "en", timezone="America/New_York") == "11:00"


def test_without_a_styles_file_a_locale_formats_as_its_own_tag_in_utc(tmp_path: Path) -> None:
    store = project(tmp_path, "{{ event.day | date('long') }}, {{ event.at | time }}", styles=None)
    assert text(store, "en") == "February 14, 2026, 4:00\u202fPM"


def test_templates_know_the_locale_they_render_in(tmp_path: Path) -> None:
    store = project(tmp_path, "{{ locale }}")
    assert text(store, "fi-FI") == "fi"
    assert text(store, "pt") == "en"


@pytest.mark.parametrize(
    ("locale", "one", "two"),
    [
        ("en", "1 loyalty point", "2 loyalty points"),
        ("fi", "1 kanta-asiakaspiste", "2 kanta-asiakaspistettä"),
        ("de", "1 Treuepunkt", "2 Treuepunkte"),
        ("sv", "1 bonuspoäng", "2 bonuspoäng"),
    ],
)
def test_plural_picks_the_form_the_languages_rules_ask_for(
    tmp_path: Path, locale: str, one: str, two: str
) -> None:
    forms = {
        "en": 'one="# loyalty point", other="# loyalty points"',
        "fi": 'one="# kanta-asiakaspiste", other="# kanta-asiakaspistettä"',
        "de": 'one="# Treuepunkt", other="# Treuepunkte"',
        "sv": 'one="# bonuspoäng", other="# bonuspoäng"',
    }[locale]
    store = project(tmp_path, f"{{{{ customer.points | plural({forms}) }}}}")
    assert text(store, locale, points=1) == one
    assert text(store, locale, points=2) == two
    assert text(store, locale, points=1.0) == one  # 1.0 from JSON is still one point


def test_plural_writes_the_number_in_the_locales_style(tmp_path: Path) -> None:
    store = project(tmp_path, '{{ customer.points | plural(one="# point", other="# points") }}')
    assert text(store, "en", points=1234) == "1,234 points"
    assert text(store, "fi", points=1234) == "1\xa0234 points"


def test_plural_without_other_is_a_render_error_naming_the_file(tmp_path: Path) -> None:
    store = project(tmp_path, '{{ customer.points | plural(one="# point") }}')
    with pytest.raises(RenderError, match=r"it\.en\.text\.j2:1: plural\(\) needs other="):
        text(store, "en", points=2)


def test_a_plural_missing_a_form_the_locale_needs_is_a_template_problem(tmp_path: Path) -> None:
    store = project(tmp_path, '{{ customer.points | plural(other="# points") }}')
    [problem] = store.problems("show/it", "en", Channel.email)
    assert problem.message == "plural(...) needs one= for en (its forms are one, other)"
    assert (problem.line, problem.col) == (1, 22)


@pytest.mark.parametrize(
    ("locale", "whole", "cents"),
    [("en", "€10", "€10.50"), ("fi", "10\xa0€", "10,50\xa0€"), ("de", "10\xa0€", "10,50\xa0€")],
)
def test_money_whole_drops_zero_cents_only(
    tmp_path: Path, locale: str, whole: str, cents: str
) -> None:
    store = project(
        tmp_path, "{{ customer.a | money('EUR', whole=true) }}|{{ customer.a | money }}"
    )
    assert text(store, locale, a=10) == f"{whole}|{cents.replace('50', '00')}"
    assert text(store, locale, a=10.5) == f"{cents}|{cents}"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        # Saturday 31 January: February's first Thursday is the 5th, at 18:00 in Helsinki.
        ('"thursday", "18:00", "Europe/Helsinki"', "Thursday 5 February 2026 18:00"),
        # Seven days' notice from 31 January still reaches 5 February...
        ('"thursday", "18:00", "Europe/Helsinki", notice="5d"', "Thursday 5 February 2026 18:00"),
        # ...ten do not: the next one is in March.
        ('"thursday", "18:00", "Europe/Helsinki", notice="10d"', "Thursday 5 March 2026 18:00"),
        ('"friday", "17:00", "Europe/Berlin", week=-1', "Friday 27 February 2026 18:00"),
    ],
)
def test_next_monthly_is_the_next_such_day_shown_in_the_readers_timezone(
    tmp_path: Path, call: str, expected: str
) -> None:
    shown = "{{ t | date('EEEE d MMMM y') }} {{ t | time }}"
    store = project(tmp_path, f"{{% set t = next_monthly({call}) %}}{shown}")
    assert text(store, "en") == expected  # en-GB, shown in Helsinki


def test_next_monthly_refuses_what_is_not_a_weekday(tmp_path: Path) -> None:
    store = project(tmp_path, "{{ next_monthly('thursdy', '18:00', 'Europe/Helsinki') }}")
    with pytest.raises(RenderError, match="'thursdy' is not a weekday"):
        text(store, "en")


def test_the_styles_file_is_part_of_what_a_run_is_pinned_to(tmp_path: Path) -> None:
    store = project(tmp_path, "{{ locale }}")
    assert store.closure("show/it", Channel.email)["locales.yaml"] == STYLES


def test_a_sample_coupon_says_what_the_step_asks_for() -> None:
    sample = action_sample("issue_coupon", {"percent": 20, "valid_days": 14}, NOW)
    assert sample == {"code": "SAMPLE-7KQ2X", "percent": 20, "expires_at": "2026-02-14"}
    templated = action_sample("issue_coupon", {"percent": "{{ customer.vip }}"}, NOW)
    assert templated["percent"] == 10
    assert action_sample("no_such_action", {}, NOW) == {}
