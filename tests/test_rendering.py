"""Rendering messages: locales, strictness, escaping, layouts, unsubscribe footers, preview.

Why over 600 lines: every section renders the same fixture templates with the same store and
plan; its sections follow the modules kairos.messages.rendering is built of.
"""

from __future__ import annotations

import json
import os
import re
import sys
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kairos.language.catalogue import Attribute, AttrType, Catalogue, EventSpec
from kairos.language.plan import (
    ActionStep,
    Category,
    Channel,
    EventTrigger,
    JourneyPlan,
    SendStep,
    WaitStep,
)
from kairos.messages.models import EmailContent, SmsContent
from kairos.messages.rendering import (
    RenderError,
    TemplateStore,
    email_headers,
    normalise_locale,
    render_preview,
)
from kairos.messages.sms import analyse

FIXTURES = Path(__file__).parent / "fixtures" / "templates"
NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
URL = "https://lumo.example/u/eyJjIjoiYy00MiJ9.sig_nature-1"
CART_URL = "https://shop.example/cart?id=1&x=2"


@pytest.fixture
def store() -> TemplateStore:
    return TemplateStore(FIXTURES, clock=lambda: NOW)


def context(**customer: Any) -> dict[str, Any]:
    return {
        "customer": {"id": "c-42", "first_name": "Ada", "timezone": "Europe/Helsinki"} | customer,
        "event": {
            "cart_total": 1234.5,
            "cart_url": CART_URL,
            "items": [{"name": "Socks"}, {"name": "Hat"}],
            "order_id": "A-1",
        },
        "journey": {"name": "cart_abandonment"},
        "unsubscribe_url": URL,
    }


def email(
    store: TemplateStore,
    template: str = "cart/reminder",
    *,
    locale: str | None = "en",
    marketing: bool = True,
    ctx: dict[str, Any] | None = None,
) -> EmailContent:
    return store.render_email(
        template,
        locale=locale,
        default_locale="en",
        context=context() if ctx is None else ctx,
        marketing=marketing,
    )


def sms(
    store: TemplateStore,
    template: str = "cart/last_chance",
    *,
    locale: str | None = "en",
    marketing: bool = True,
) -> SmsContent:
    return store.render_sms(
        template, locale=locale, default_locale="en", context=context(), marketing=marketing
    )


# -- Locales ---------------------------------------------------------------------------------


def test_a_locale_is_complete_with_subject_and_html(store: TemplateStore) -> None:
    # sv has only a subject, so it does not count.
    assert store.locales("cart/reminder", Channel.email) == {"en", "fi", "de"}
    assert store.locales("cart/last_chance", Channel.sms) == {"en", "fi", "de", "hu", "ru"}
    assert store.locales("cart/nothing", Channel.email) == set()


def test_files_lists_existing_parts_only(store: TemplateStore) -> None:
    files = store.files("cart/reminder", "en", Channel.email)
    assert sorted(files) == ["html", "preheader", "subject"]
    assert files["html"] == (FIXTURES / "cart" / "reminder.en.html.j2").resolve()


@pytest.mark.parametrize(
    ("wanted", "chosen"),
    [
        ("fi-FI", "fi"),  # no fi-FI version: the language
        ("fi_fi", "fi"),
        ("DE", "de"),
        ("sv", "en"),  # incomplete: the default
        ("pt-BR", "en"),
        (None, "en"),
    ],
)
def test_choose_locale_falls_back_to_language_then_default(
    store: TemplateStore, wanted: str | None, chosen: str
) -> None:
    assert store.choose_locale("cart/reminder", Channel.email, wanted, "en") == chosen


def test_an_exact_regional_template_wins(store: TemplateStore) -> None:
    assert store.choose_locale("news/welcome", Channel.sms, "fi_fi", "en") == "fi-FI"
    # A region is never invented: plain fi does not pick fi-FI.
    assert store.choose_locale("news/welcome", Channel.sms, "fi", "en") == "en"


@pytest.mark.parametrize(
    ("tag", "normal"),
    [("fi_fi", "fi-FI"), ("EN", "en"), ("zh_hant_tw", "zh-Hant-TW"), ("es-419", "es-419")],
)
def test_normalise_locale(tag: str, normal: str) -> None:
    assert normalise_locale(tag) == normal


def test_renders_in_the_fallback_locale(store: TemplateStore) -> None:
    content = email(store, locale="fi-FI")
    assert content.locale == "fi"
    assert content.subject == "Ada, ostoskorisi odottaa"


# -- Strictness and errors -------------------------------------------------------------------


def test_an_undefined_variable_names_the_variable_and_the_file(store: TemplateStore) -> None:
    ctx = context()
    del ctx["customer"]["first_name"]
    with pytest.raises(RenderError) as caught:
        email(store, ctx=ctx)
    error = caught.value
    assert error.variable == "customer.first_name"
    assert error.file == (FIXTURES / "cart" / "reminder.en.subject.j2").resolve()
    assert str(error).startswith(
        "templates/cart/reminder.en.subject.j2:1: customer.first_name is undefined"
    )


def test_an_undefined_variable_in_a_layout_names_the_layout(store: TemplateStore) -> None:
    ctx = context()
    ctx["journey"] = {}
    with pytest.raises(RenderError) as caught:
        email(store, ctx=ctx)
    assert caught.value.variable == "journey.name"
    assert str(caught.value).startswith("templates/layouts/base.html.j2:14: journey.name")


def test_a_missing_part_names_the_file_that_should_exist(store: TemplateStore) -> None:
    with pytest.raises(RenderError, match=r"templates/cart/nothing\.en\.subject\.j2 does not"):
        email(store, "cart/nothing")
    with pytest.raises(RenderError, match=r"cart/reminder\.en\.sms\.j2"):
        sms(store, "cart/reminder")


def test_a_marketing_email_needs_an_unsubscribe_url(store: TemplateStore) -> None:
    ctx = context()
    ctx["unsubscribe_url"] = None
    with pytest.raises(RenderError, match="unsubscribe_url"):
        email(store, ctx=ctx)


def test_an_empty_sms_is_an_error(store: TemplateStore) -> None:
    with pytest.raises(RenderError, match="renders empty"):
        sms(store, "news/empty")


# -- Email -----------------------------------------------------------------------------------


def test_html_is_escaped_but_subject_text_and_sms_are_not(store: TemplateStore) -> None:
    ctx = context(first_name="<b>Ada</b> & Co")
    content = email(store, ctx=ctx)
    assert "Hi &lt;b&gt;Ada&lt;/b&gt; &amp; Co" in content.html
    assert content.subject == "<b>Ada</b> & Co, your cart is waiting"
    receipt = email(store, "account/receipt", marketing=False, ctx=ctx)
    assert receipt.text.startswith("Thanks <b>Ada</b> & Co!")
    body = store.render_sms(
        "cart/last_chance", locale="en", default_locale="en", context=ctx, marketing=False
    ).body
    assert body.startswith("Hi <b>Ada</b> & Co, your cart")


def test_subject_is_one_line(store: TemplateStore) -> None:
    assert email(store).subject == "Ada, your cart is waiting"


def test_layout_and_imported_macro(store: TemplateStore) -> None:
    html = email(store).html
    assert '<p class="signature">cart_abandonment</p>' in html
    assert "<li>2. Hat</li>" in html  # event.items is the property, not dict.items
    assert re.search(r'<a class="button" href="https://shop\.example/cart\?id=1&amp;x=2"', html)


def test_css_is_inlined_and_media_queries_kept(store: TemplateStore) -> None:
    html = email(store).html
    assert 'style="background: #0a7f5a;color: #ffffff;">Open your cart</a>' in html
    assert "@media (max-width: 600px)" in html
    assert ".button {" not in html


def test_preheader_is_the_hidden_span_at_the_start_of_body(store: TemplateStore) -> None:
    content = email(store)
    assert content.preheader == "Still €1,234.50 in your cart"
    assert re.search(r'<body><span style="display:none;[^"]*">Still €1,234\.50', content.html)
    assert "display:none" not in email(store, locale="fi").html  # fi has no preheader


def test_text_part_is_derived_from_html_with_links(store: TemplateStore) -> None:
    text = email(store).text
    assert text.startswith("# Hi Ada\n\nYour cart holds €1,234.50:")
    assert "* 1. Socks" in text
    assert f"[Open your cart]({CART_URL})" in text
    assert "<" not in text.replace("<b>", "")
    assert "Still" not in text  # the hidden preheader is not body text


def test_explicit_text_part_is_used_and_tidied(store: TemplateStore) -> None:
    content = email(store, "account/receipt", marketing=False)
    assert content.text == "Thanks Ada!\n\nOrder A-1"


@pytest.mark.parametrize(
    ("locale", "words"),
    # Never "Peru tilaus" in Finnish: tilaus is also an order and a coffee subscription.
    [("en", "Don't want these emails? "), ("fi", "Lopeta markkinointiviestit"), ("de", "Abmelden")],
)
def test_marketing_email_gets_a_localized_unsubscribe_footer(
    store: TemplateStore, locale: str, words: str
) -> None:
    content = email(store, locale=locale)
    assert content.html.count(URL) == 1
    assert words in content.html
    assert URL in content.text


def test_no_footer_when_the_template_has_the_link(store: TemplateStore) -> None:
    content = email(store, "news/digest")
    assert content.html.count(URL) == 1
    assert "Don't want these emails?" not in content.html
    assert content.text.count(URL) == 1


def test_no_footer_on_transactional_email(store: TemplateStore) -> None:
    content = email(store, marketing=False)
    assert URL not in content.html
    assert URL not in content.text


def test_list_unsubscribe_headers() -> None:
    assert email_headers(URL) == {
        "List-Unsubscribe": f"<{URL}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert email_headers(URL, one_click=False) == {"List-Unsubscribe": f"<{URL}>"}
    assert email_headers(None) == {}


# -- Babel filters ---------------------------------------------------------------------------

AMOUNTS = {
    "total": 1234.5,
    "count": 1234567.891,
    "share": 0.256,
    "at": "2026-01-31T09:30:00Z",
    "day": "2026-03-01",
}


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        (
            "en",
            {
                "money": "€1,234.50",
                "money_usd": "$1,234.50",
                "number": "1,234,567.891",
                "percent": "26%",
                "date": "Jan 31, 2026",
                "datetime": "1/31/26, 11:30\u202fAM",  # 09:30 UTC is 11:30 in Helsinki
                "date_only": "March 1, 2026",
                "relative": "2 hours ago",
            },
        ),
        (
            "fi",
            {
                "money": "1\xa0234,50\xa0€",
                "money_usd": "1\xa0234,50\xa0$",
                "number": "1\xa0234\xa0567,891",
                "percent": "26\xa0%",
                "date": "31.1.2026",
                "datetime": "31.1.2026 11.30",
                "date_only": "1. maaliskuuta 2026",
                "relative": "2 tuntia sitten",
            },
        ),
        (
            "de",
            {
                "money": "1.234,50\xa0€",
                "money_usd": "1.234,50\xa0$",
                "number": "1.234.567,891",
                "percent": "26\xa0%",
                "date": "31.01.2026",
                "datetime": "31.01.26, 11:30",
                "date_only": "1. März 2026",
                "relative": "vor 2 Stunden",
            },
        ),
    ],
)
def test_babel_filters_use_the_render_locale_and_customer_timezone(
    store: TemplateStore, locale: str, expected: dict[str, str]
) -> None:
    ctx = context()
    ctx["event"] = AMOUNTS
    text = email(store, "format/amounts", locale=locale, marketing=False, ctx=ctx).text
    assert dict(line.split(": ", 1) for line in text.splitlines()) == expected


def test_datetimes_are_utc_without_a_customer_timezone(store: TemplateStore) -> None:
    ctx = context()
    del ctx["customer"]["timezone"]
    ctx["event"] = AMOUNTS
    text = email(store, "format/amounts", marketing=False, ctx=ctx).text
    assert "datetime: 1/31/26, 9:30\u202fAM" in text


def test_a_filter_given_a_bad_value_names_the_file(store: TemplateStore) -> None:
    ctx = context()
    ctx["event"] = AMOUNTS | {"total": "lots"}
    with pytest.raises(RenderError, match=r"format/amounts\.en\.html\.j2:1: expected a number"):
        email(store, "format/amounts", marketing=False, ctx=ctx)


# -- SMS -------------------------------------------------------------------------------------


def test_marketing_sms_gets_a_localized_opt_out(store: TemplateStore) -> None:
    content = sms(store, locale="fi")
    # Whitespace collapsed; Babel's non-breaking spaces made plain so the body stays GSM-7.
    assert content.body == (
        f"Hei Ada! Ostoskorisi (1 234,50 €) vanhenee pian: {CART_URL} "
        "Lopeta viestit vastaamalla STOP."
    )
    assert (content.encoding, content.segments) == ("GSM-7", 1)


@pytest.mark.parametrize(
    ("template", "locale", "suffix", "encoding"),
    [
        ("cart/last_chance", "en", " Reply STOP to opt out.", "GSM-7"),
        ("cart/last_chance", "de", " Zum Abmelden STOP antworten.", "GSM-7"),
        ("cart/last_chance", "hu", " Leiratkozáshoz válaszoljon STOP szöveggel.", "UCS-2"),
        ("cart/last_chance", "ru", " Чтобы отписаться, ответьте STOP.", "UCS-2"),
        # A localized hint that would turn a GSM-7 body into UCS-2 gives way to English.
        ("news/flash", "hu", " Reply STOP to opt out.", "GSM-7"),
        ("news/flash", "ru", " Reply STOP to opt out.", "GSM-7"),
    ],
)
def test_opt_out_suffix_per_locale(
    store: TemplateStore, template: str, locale: str, suffix: str, encoding: str
) -> None:
    content = sms(store, template, locale=locale)
    assert content.body.endswith(suffix)
    assert content.encoding == encoding
    assert content.segments == analyse(content.body).segments


def test_no_second_opt_out_hint(store: TemplateStore) -> None:
    assert sms(store, "news/welcome").body == "Welcome Ada. Reply STOP to opt out."


def test_transactional_sms_has_no_opt_out(store: TemplateStore) -> None:
    assert "STOP" not in sms(store, marketing=False).body


# -- Checking templates ----------------------------------------------------------------------


def test_referenced_paths_follow_layouts_and_skip_local_names(store: TemplateStore) -> None:
    assert store.referenced_paths("cart/reminder", "en", Channel.email) == {
        ("customer", "first_name"),
        ("event", "cart_total"),
        ("event", "cart_url"),
        ("event", "items"),
        ("journey", "name"),  # read by the layout
    }


def test_referenced_paths_leave_out_renderer_names(store: TemplateStore) -> None:
    assert store.referenced_paths("news/digest", "en", Channel.email) == {
        ("customer", "first_name")
    }


def test_problems_syntax_error_with_file_and_line(store: TemplateStore) -> None:
    [problem] = store.problems("broken/syntax", "en", Channel.email)
    assert problem.file == (FIXTURES / "broken" / "syntax.en.subject.j2").resolve()
    # "Hello {{ customer.first_name }": where the tag opens, not Jinja's "unexpected '}'".
    assert (problem.line, problem.col) == (1, 7)
    assert problem.message == "`{{` opened here is never closed (end it with `}}`)"


def test_problems_missing_layout_suggests_the_right_one(store: TemplateStore) -> None:
    [problem] = store.problems("broken/layout", "en", Channel.email)
    assert problem.file.name == "layout.en.html.j2"
    assert problem.line == 1
    assert problem.message == (
        '{% extends "layouts/bsae.html.j2" %}: templates/layouts/bsae.html.j2 does not exist '
        "(did you mean `layouts/base.html.j2`?)"
    )


def test_problems_unknown_filter(store: TemplateStore) -> None:
    [problem] = store.problems("broken/filter", "en", Channel.sms)
    assert "No filter named 'moneyy'" in problem.message


def test_no_problems_in_good_templates(store: TemplateStore) -> None:
    for locale in ("en", "fi", "de"):
        assert store.problems("cart/reminder", locale, Channel.email) == []


def test_a_checked_file_is_read_again_once_it_changes(tmp_path: Path) -> None:
    """Checking reads each file version once (journeys share layouts), but never goes stale:
    `kairos validate --watch`-style reuse of a store must see an edit."""
    (tmp_path / "promo").mkdir()
    subject = tmp_path / "promo" / "deal.en.subject.j2"
    subject.write_text("Hi {{ customer.first_name }}")
    (tmp_path / "promo" / "deal.en.html.j2").write_text("<p>{{ event.total }}</p>")
    store = TemplateStore(tmp_path)
    assert store.problems("promo/deal", "en", Channel.email) == []
    assert store.referenced_paths("promo/deal", "en", Channel.email) == {
        ("customer", "first_name"),
        ("event", "total"),
    }

    subject.write_text("Hi {{ customer.last_name }")
    os.utime(subject, ns=(subject.stat().st_atime_ns, subject.stat().st_mtime_ns + 10**9))

    [problem] = store.problems("promo/deal", "en", Channel.email)
    assert (problem.file, problem.line) == (subject.resolve(), 1)
    subject.write_text("Hi {{ customer.last_name }}")
    os.utime(subject, ns=(subject.stat().st_atime_ns, subject.stat().st_mtime_ns + 2 * 10**9))
    assert store.referenced_paths("promo/deal", "en", Channel.email) == {
        ("customer", "last_name"),
        ("event", "total"),
    }


# -- Cache -----------------------------------------------------------------------------------


def test_second_render_uses_the_compiled_cache(
    store: TemplateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = email(store)
    cache = store.environment.cache
    assert cache is not None
    cached = {key[1] for key in cache}
    assert {
        "cart/reminder.en.subject.j2",
        "cart/reminder.en.preheader.j2",
        "cart/reminder.en.html.j2",
        "layouts/base.html.j2",
        "layouts/macros.html.j2",
    } <= cached

    def no_reading(*args: object) -> None:
        raise AssertionError("a cached template was read again")

    loader = store.environment.loader
    assert loader is not None
    monkeypatch.setattr(loader, "get_source", no_reading)
    assert email(store) == first


# -- Preview ---------------------------------------------------------------------------------

PLAN = JourneyPlan(
    name="cart_abandonment",
    category=Category.marketing,
    locales=("en", "fi", "de"),
    trigger=EventTrigger(event="cart_updated"),
    start="wait_1h",
    steps={
        "wait_1h": WaitStep(id="wait_1h", duration_seconds=3600, next="first_reminder"),
        "first_reminder": SendStep(
            id="first_reminder", channel=Channel.email, template="cart/reminder", next="coupon"
        ),
        "coupon": ActionStep(
            id="coupon", action="issue_coupon", args={"percent": 20}, save_as="coupon", next="offer"
        ),
        "offer": SendStep(id="offer", channel=Channel.sms, template="coupon/offer"),
    },
).with_version()
SHOPPER = {"first_name": "Ada", "locale": "fi-FI", "timezone": "Europe/Helsinki"}
CART = {"cart_total": 59.0, "cart_url": CART_URL, "items": [{"name": "Beans"}]}


def test_preview_renders_a_send_step_in_the_customers_locale(store: TemplateStore) -> None:
    content = render_preview(store, PLAN, "first_reminder", SHOPPER, CART, None, URL)
    assert isinstance(content, EmailContent)
    assert content.locale == "fi"
    assert content.subject == "Ada, ostoskorisi odottaa"
    assert "59,00&nbsp;€" in content.html  # the inliner writes the non-breaking space out
    assert URL in content.html


def test_preview_locale_option_wins(store: TemplateStore) -> None:
    content = render_preview(store, PLAN, "first_reminder", SHOPPER, CART, "de", URL)
    assert content.locale == "de"


def test_preview_fills_saved_action_results_with_samples(store: TemplateStore) -> None:
    content = render_preview(store, PLAN, "offer", SHOPPER, CART, None, URL)
    assert isinstance(content, SmsContent)
    assert content.body == "Use SAMPLE-7KQ2X for 20% off. Reply STOP to opt out."
    assert (content.encoding, content.segments, content.locale) == ("GSM-7", 1, "en")


def test_preview_unknown_step_suggests_one(store: TemplateStore) -> None:
    with pytest.raises(RenderError, match="has no step `first_remnder` \\(did you mean "):
        render_preview(store, PLAN, "first_remnder", SHOPPER, CART, None, URL)


def test_preview_refuses_a_step_that_sends_nothing(store: TemplateStore) -> None:
    with pytest.raises(RenderError, match="is a wait step, not a send"):
        render_preview(store, PLAN, "wait_1h", SHOPPER, CART, None, URL)


# -- kairos preview --------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The CLI app, with load_project replaced by one that returns PLAN and the fixtures."""
    cli_module = pytest.importorskip("kairos.cli")
    # Every command module now, with the real compiler (preview imports load_project when it
    # runs, so it gets the one below); alone, this file once failed on a module loaded later.
    cli_module.load_commands()
    catalogue = Catalogue(
        profile={
            "first_name": Attribute(type=AttrType.string),
            "locale": Attribute(type=AttrType.locale),
            "timezone": Attribute(type=AttrType.timezone),
        },
        events={
            "cart_updated": EventSpec(
                properties={
                    "cart_total": Attribute(type=AttrType.number, required=True),
                    "cart_url": Attribute(type=AttrType.string),
                    "items": Attribute(type=AttrType.list),
                }
            )
        },
    )
    project = types.SimpleNamespace(
        plans={PLAN.name: PLAN}, catalogue=catalogue, templates=TemplateStore(FIXTURES)
    )
    loading = types.ModuleType("kairos.language.project")
    loading.load_project = lambda home, actions=(), cache=None: project  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kairos.language.project", loading)
    monkeypatch.setenv("KAIROS_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ada.yaml").write_text("first_name: Ada\nlocale: fi\n", encoding="utf-8")
    (tmp_path / "cart.json").write_text(json.dumps(CART), encoding="utf-8")
    return cli_module.app


def invoke(app: Any, *args: str) -> Any:
    from typer.testing import CliRunner

    return CliRunner().invoke(app, ["preview", *args])


def test_cli_preview_email_writes_the_html(cli: Any, tmp_path: Path) -> None:
    result = invoke(cli, "cart_abandonment", "first_reminder", "-c", "ada.yaml", "-e", "cart.json")
    assert result.exit_code == 0, result.output
    assert "Subject:   Ada, ostoskorisi odottaa" in result.output
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in result.output
    html = tmp_path / ".kairos" / "preview" / "cart_abandonment-first_reminder.fi.html"
    assert "Lopeta markkinointiviestit" in html.read_text(encoding="utf-8")
    assert "cart_abandonment-first_reminder.fi.html" in result.output


def test_cli_preview_sms_shows_encoding_and_segments(cli: Any) -> None:
    result = invoke(cli, "cart_abandonment", "offer", "-c", "ada.yaml", "--locale", "en")
    assert result.exit_code == 0, result.output
    assert "Use SAMPLE-7KQ2X for 20% off. Reply STOP to opt out." in result.output
    assert "GSM-7, 1 segment" in result.output


@pytest.mark.parametrize(
    ("journey", "step", "expected"),
    [
        ("cart_abandonmnet", "first_reminder", "did you mean `cart_abandonment`?"),
        ("cart_abandonment", "first_remnder", "did you mean `first_reminder`?"),
    ],
)
def test_cli_unknown_names_suggest_the_right_one(
    cli: Any, journey: str, step: str, expected: str
) -> None:
    result = invoke(cli, journey, step, "-c", "ada.yaml")
    assert result.exit_code == 1
    assert expected in " ".join(result.output.split())  # rich wraps at the terminal width
    assert "Traceback" not in result.output


def test_cli_unreadable_customer_file(cli: Any) -> None:
    result = invoke(cli, "cart_abandonment", "first_reminder", "-c", "nobody.json")
    assert result.exit_code == 1
    assert "--customer nobody.json: cannot read it" in " ".join(result.output.split())


def test_cli_broken_customer_and_event_files_are_one_line_each(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("first_name: Ada\nlocale: [fi\n", encoding="utf-8")
    (tmp_path / "broken.json").write_text('{"cart_total": \n', encoding="utf-8")
    yaml = invoke(cli, "cart_abandonment", "first_reminder", "-c", "broken.yaml")
    assert (yaml.exit_code, yaml.output.splitlines()[0]) == (
        1, "error: --customer broken.yaml:2:9: YAML syntax: a `[...]` list is not closed "
           "(add the missing `]`)"
    )  # fmt: skip
    event = invoke(cli, "cart_abandonment", "first_reminder", "-c", "ada.yaml", "-e", "broken.json")
    assert event.output == "error: --event broken.json:2:1: not valid JSON: Expecting value\n"


@pytest.mark.slow
async def test_cli_preview_without_the_event_a_message_reads_says_to_give_it() -> None:
    from tests.commands import command_env, run

    args = ["preview", "cart_abandonment", "first_reminder",
            "--customer", "tests/fixtures/preview/anna.yaml", "--locale", "fi"]  # fmt: skip
    ran = await run(args, command_env())
    assert (ran.code, ran.out) == (1, ""), ran.output
    assert len(ran.err.strip().splitlines()) == 1, ran.err
    said = ran.err.strip()
    assert said.startswith("error: templates/cart_abandonment/reminder.fi.preheader.j2:1: ")
    assert "this journey starts on `cart_updated`: give that event's properties" in said
    assert "with --event FILE" in said
