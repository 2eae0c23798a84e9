"""Every message Lumo Coffee sends reads as native copy, in every locale, with or without data.

Each send step of every shipped journey is rendered in every locale of its journey, for a
customer we know a lot about (first name, phone, timezone, every optional event property) and
one we know almost nothing about, through the same context the send activity uses
(kairos.messages.rendering.message_context, via render_preview). What a copy editor checked by hand
is checked here: the SMS links to the cart the customer built, every SMS says how to stop them,
the footer is the one readers of that language expect, numbers take the right plural form,
and subjects and preheaders fit an inbox.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from activities import actions
from kairos.language.plan import ActionStep, Category, Channel, EventTrigger, JourneyPlan, SendStep
from kairos.language.project import Project
from kairos.messages.models import EmailContent, SmsContent
from kairos.messages.rendering import TemplateStore, message_context, render_preview

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)  # a Saturday
UNSUBSCRIBE = "https://lumo.example/u/eyJjIjoiYy00MiJ9.sig"
CART_URL = "https://lumo.example/cart/restore/8d2f0a61b7c94e3a"  # as long as real ones are
LOCALES = ("en", "fi", "sv", "de")

# A customer we know everything about: a long first name, a phone, a timezone.
FULL = {
    "email": "alexandra@example.com",
    "first_name": "Alexandra",
    "phone": "+358401234567",
    "timezone": "Europe/Helsinki",
    "referral_code": "ALEXANDRA10",
    "loyalty_points": 120,
    "cart_total": 123.45,
}
# Every optional property, with values as long as real ones.
EVENTS: dict[str, dict[str, Any]] = {
    "cart_updated": {
        "cart_total": 123.45,
        "currency": "EUR",
        "cart_url": CART_URL,
        "item_count": 3,
        "first_item_name": "Ethiopia Yirgacheffe",
    },
    "lead_captured": {"email": "a@example.com", "interest": "office", "company": "Kontor Oy"},
    "signed_up": {"email": "a@example.com", "first_name": "Alexandra"},
    "referral_converted": {"friend_first_name": "Maximilian", "order_id": "o-1"},
}
REQUIRED: dict[str, dict[str, Any]] = {
    "cart_updated": {"cart_total": 123.45, "currency": "EUR"},
    "lead_captured": {"email": "a@example.com", "interest": "espresso"},
    "signed_up": {"email": "a@example.com"},
    "referral_converted": {},
}

# What readers of each language expect at the bottom of an email.
ADDRESS = {
    "en": "Lumo Coffee Oy · Paahtimonkatu 7, 00580 Helsinki, Finland",
    "fi": "Lumo Coffee Oy · Paahtimonkatu 7, 00580 Helsinki",
    "sv": "Lumo Coffee Oy · Rosterigatan 7, 00580 Helsingfors",
    "de": "Lumo Coffee Oy · Paahtimonkatu 7 · 00580 Helsinki · Finnland",
}
REGISTRATION = {
    "en": "Business ID 3141593-8",
    "fi": "Y-tunnus 3141593-8",
    "sv": "FO-nummer 3141593-8",
    "de": "Unternehmens-ID (Y-tunnus) 3141593-8 · USt-IdNr. FI31415938",
}
IMPRESSUM = "https://lumo.example/de/impressum"
UNSUBSCRIBE_LABEL = {
    "en": "Unsubscribe",
    "fi": "Lopeta markkinointiviestit",
    "sv": "Avregistrera dig från utskicken",
    "de": "Abmelden",
}
# Every SMS says how to stop them, in the reader's language; STOP is the carriers' keyword.
SMS_OPT_OUT = {
    "en": "Reply STOP to opt out",
    "fi": "Lopeta viestit vastaamalla STOP",
    "sv": "Inga fler sms? Svara STOP",
    "de": "Keine SMS mehr? Antworte STOP",
}
# Wording a native editor struck out: "tilaus" is also an order and a coffee subscription.
NEVER = ("Peru tilaus", "Peru viestit", "PL 1234", "Abmelden: STOP", "prenumerationen")


@dataclass(frozen=True)
class Message:
    journey: str
    step: str
    template: str
    channel: Channel
    category: Category
    locale: str
    profile: str  # full or minimal

    def __str__(self) -> str:
        return f"{self.journey}/{self.step} {self.locale} {self.profile}"


@pytest.fixture(scope="module")
def store() -> TemplateStore:
    return TemplateStore(ROOT / "templates", clock=lambda: NOW)


def sends(project: Project) -> Iterator[tuple[JourneyPlan, SendStep]]:
    for plan in project.plans.values():
        for step in plan.steps.values():
            if isinstance(step, SendStep):
                yield plan, step


def render(
    store: TemplateStore,
    plan: JourneyPlan,
    step: SendStep,
    locale: str,
    profile: str,
    **changes: Any,
) -> EmailContent | SmsContent:
    trigger = plan.trigger.event if isinstance(plan.trigger, EventTrigger) else ""
    if profile == "full":
        customer = {**FULL, "locale": locale}
        event = dict(EVENTS.get(trigger, {}))
    else:
        customer = {"email": "someone@example.com", "locale": locale}
        event = dict(REQUIRED.get(trigger, {}))
    customer |= changes
    return render_preview(store, plan, step.id, customer, event, None, UNSUBSCRIBE)


def every_message(project: Project) -> Iterator[Message]:
    for plan, step in sends(project):
        for locale in plan.locales:
            for profile in ("full", "minimal"):
                yield Message(
                    plan.name, step.id, step.template, step.channel, plan.category, locale, profile
                )


@pytest.fixture(scope="module")
def rendered(project: Project, store: TemplateStore) -> list[tuple[Message, Any]]:
    """Every message of every shipped journey, in every locale, for both customers."""
    out = []
    for message in every_message(project):
        plan = project.plans[message.journey]
        step = plan.steps[message.step]
        assert isinstance(step, SendStep)
        out.append((message, render(store, plan, step, message.locale, message.profile)))
    return out


def test_every_shipped_journey_speaks_english_finnish_swedish_and_german(project: Project) -> None:
    for plan in project.plans.values():
        assert set(plan.locales) == set(LOCALES), plan.name
        assert plan.default_locale == "en"
    assert sum(1 for _ in every_message(project)) >= 2 * 4 * 18


def test_every_message_renders_in_its_own_locale_for_both_customers(
    rendered: list[tuple[Message, Any]],
) -> None:
    for message, content in rendered:
        assert content.locale == message.locale, message
        text = content.body if isinstance(content, SmsContent) else content.text + content.html
        for struck in NEVER:
            assert struck not in text, f"{message}: {struck!r}"


def test_the_cart_sms_links_to_the_cart_the_event_restores(
    rendered: list[tuple[Message, Any]],
) -> None:
    cart = [(m, c) for m, c in rendered if m.template == "cart_abandonment/last_chance"]
    sms = [(m, c) for m, c in cart if m.channel == Channel.sms]
    assert len(sms) == 8
    for message, content in sms:
        links = re.findall(r"https://\S+", content.body)
        if message.profile == "full":
            assert links == [CART_URL], message
        else:  # no cart_url on the event: the cart page, where a signed-in customer finds it
            assert links == ["https://lumo.example/cart"], message


def test_every_sms_says_how_to_stop_them(rendered: list[tuple[Message, Any]]) -> None:
    # The referral thank-you is transactional, but it goes out on the SMS opt-in and rewards
    # a promotion: it carries the line too.
    sms = [(m, c) for m, c in rendered if m.channel == Channel.sms]
    assert {m.journey for m, _ in sms} == {"cart_abandonment", "flash_sale", "referral_reward"}
    for message, content in sms:
        assert content.body.endswith(SMS_OPT_OUT[message.locale]), message
        assert content.body.count("STOP") == 1, message


def test_every_sms_is_one_gsm7_segment(rendered: list[tuple[Message, Any]]) -> None:
    for message, content in rendered:
        if isinstance(content, SmsContent):
            assert (content.encoding, content.segments) == ("GSM-7", 1), (message, content.body)


def test_every_email_has_the_footer_its_readers_expect(
    rendered: list[tuple[Message, Any]],
) -> None:
    for message, content in rendered:
        if not isinstance(content, EmailContent):
            continue
        locale = message.locale
        assert f'<html lang="{locale}"' in content.html, message
        for part in (content.text, content.html):
            assert ADDRESS[locale] in part, message
            assert REGISTRATION[locale] in part, message
            assert (IMPRESSUM in part) == (locale == "de"), message
            marketing = message.category == Category.marketing
            assert (UNSUBSCRIBE in part) == marketing, message
        if message.category == Category.marketing:
            assert f"{UNSUBSCRIBE_LABEL[locale]}: {UNSUBSCRIBE}" in content.text, message


@pytest.mark.parametrize(
    ("locale", "one", "two"),
    [
        ("en", "1 loyalty point waiting", "2 loyalty points waiting"),
        ("fi", "lisäksi 1 kanta-asiakaspiste.", "lisäksi 2 kanta-asiakaspistettä."),
        ("sv", "dessutom 1 bonuspoäng på", "dessutom 2 bonuspoäng på"),
        ("de", "noch 1 Treuepunkt auf", "noch 2 Treuepunkte auf"),
    ],
)
def test_loyalty_points_take_the_singular_for_one_and_the_plural_for_two(
    project: Project, store: TemplateStore, locale: str, one: str, two: str
) -> None:
    plan = project.plans["win_back"]
    step = plan.steps["we_miss_you"]
    assert isinstance(step, SendStep)
    for points, expected in ((1, one), (2, two)):
        content = render(store, plan, step, locale, "full", loyalty_points=points)
        assert isinstance(content, EmailContent)
        assert expected in content.text, content.text
        assert expected in re.sub(r"</?strong[^>]*>", "", content.html)


def test_subjects_and_preheaders_fit_an_inbox(rendered: list[tuple[Message, Any]]) -> None:
    for message, content in rendered:
        if not isinstance(content, EmailContent):
            continue
        # About 50 characters show on a phone: without a name or a product we stay within it;
        # a long first name or product may take it to the 60 `kairos validate` allows.
        limit = 60 if message.profile == "full" else 50
        assert len(content.subject) <= limit, (message, content.subject)
        assert 0 < len(content.preheader) <= 100, (message, content.preheader)


@pytest.mark.parametrize(
    ("locale", "day", "reward"),
    [
        ("en", "14 February 2026", "€10"),
        ("fi", "14.2.2026", "10\xa0€"),
        ("sv", "14 februari 2026", "10\xa0€"),
        ("de", "14. Februar 2026", "10\xa0€"),
    ],
)
def test_dates_and_whole_euros_read_as_each_language_writes_them(
    project: Project, store: TemplateStore, locale: str, day: str, reward: str
) -> None:
    offer = project.plans["welcome"].steps["first_order_offer"]
    assert isinstance(offer, SendStep)
    content = render(store, project.plans["welcome"], offer, locale, "full")
    assert isinstance(content, EmailContent)
    assert day in content.text  # British, not "February 14, 2026", in English
    thanks = project.plans["referral_reward"].steps["thanks_email"]
    assert isinstance(thanks, SendStep)
    content = render(store, project.plans["referral_reward"], thanks, locale, "full")
    assert isinstance(content, EmailContent)
    assert reward in content.subject and f"{reward}.00" not in content.text


@pytest.mark.parametrize(
    ("locale", "timezone", "when", "language"),
    [
        ("en", "Europe/London", "Thursday 5 February at 16:00 (your time)", "Language: English"),
        ("en", None, "Thursday 5 February at 18:00 (Finnish time)", "Language: English"),
        ("fi", None, "torstaina 5. helmikuuta klo 18.00 (Suomen aikaa)", "Kieli: englanti"),
        ("sv", "Europe/Helsinki", "torsdag den 5 februari kl. 18.00 (din lokala tid)", "engelska"),
        ("de", None, "Donnerstag, 5. Februar, um 17:00 Uhr (deutsche Zeit)", "auf Deutsch"),
    ],
)
def test_the_tasting_invitation_says_when_in_the_readers_time_and_in_which_language(
    project: Project,
    store: TemplateStore,
    locale: str,
    timezone: str | None,
    when: str,
    language: str,
) -> None:
    plan = project.plans["nurture"]
    step = plan.steps["lesson_3"]
    assert isinstance(step, SendStep)
    customer = {"timezone": timezone} if timezone else {}
    profile = "full" if timezone else "minimal"
    content = render(store, plan, step, locale, profile, **customer)
    assert isinstance(content, EmailContent)
    assert when in content.text
    assert language in content.text
    assert "5" in content.subject


@pytest.mark.parametrize(
    ("wanted", "chosen"), [("sv-FI", "sv"), ("sv", "sv"), ("de-AT", "de"), ("nl-NL", "en")]
)
def test_a_swedish_speaker_in_finland_gets_swedish_then_the_default(
    project: Project, store: TemplateStore, wanted: str, chosen: str
) -> None:
    for plan, step in sends(project):
        assert store.choose_locale(step.template, step.channel, wanted, plan.default_locale) == (
            chosen
        )


async def test_preview_shows_the_coupon_a_run_issues(
    project: Project, store: TemplateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kairos preview and the send activity render the same text: the coupon the step asks
    for (10%, valid 14 days), not the registered action's sample."""
    plan = project.plans["welcome"]
    coupon_step = plan.steps["first_order_coupon"]
    offer = plan.steps["first_order_offer"]
    assert isinstance(offer, SendStep) and isinstance(coupon_step, ActionStep)
    monkeypatch.setattr(actions, "_now", lambda: NOW)
    context = actions.ActionContext("k", "c-1", "welcome", "first_order_coupon", tmp_path)
    issued = await actions.issue_coupon(context, dict(coupon_step.args))
    customer = {"email": "a@example.com", "first_name": "Aino", "locale": "fi"}
    # What the workflow hands the send activity, and what the activity adds to it.
    sent = store.render_email(
        offer.template,
        locale="fi",
        default_locale=plan.default_locale,
        context=message_context(
            customer={**customer, "id": "preview-customer", "stage": "consideration"},
            event={"name": "signed_up", "id": "e-1", "email": "a@example.com"},
            journey={"name": "welcome", "coupon": issued},
            unsubscribe_url=UNSUBSCRIBE,
            key="welcome:c-1:1:first_order_offer:1",
        ),
        marketing=True,
    )
    previewed = render_preview(store, plan, "first_order_offer", customer, {}, None, UNSUBSCRIBE)
    assert isinstance(previewed, EmailContent)
    sample = previewed.text.replace("SAMPLE-7KQ2X", issued["code"])
    assert (previewed.subject, previewed.preheader.replace("SAMPLE-7KQ2X", issued["code"])) == (
        sent.subject,
        sent.preheader,
    )
    assert sample == sent.text
    assert "10\xa0%" in sent.subject and "14.2.2026" in sent.text
