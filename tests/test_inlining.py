"""Inlining CSS once per message shape gives exactly the bytes inlining every email gave.

Every email of every shipped journey, in every locale of its journey, for a customer we know
everything about, one we know nearly nothing about and one whose values are made of what HTML
escapes, is rendered by a store that reuses shapes (twice: the second render takes the
proven shape) and by one that inlines each email whole, as rendering did before shapes; the
two must be equal. Then the constructs where a marker cannot stand for a value: each must
still render exactly as the whole-email inliner does, for values that would betray a shortcut.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kairos.language.plan import Channel, EventTrigger, SendStep
from kairos.language.project import Project
from kairos.messages.rendering import TemplateStore, render_preview

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
UNSUBSCRIBE = "https://lumo.example/u/eyJjIjoiYy00MiJ9.sig?a=1&b=2"
AWKWARD = 'Zoë O\'Brien & <Sons> "Ltd"\xa0x'
EVENTS: dict[str, dict[str, Any]] = {
    "cart_updated": {
        "cart_total": 123.45,
        "currency": "EUR",
        "cart_url": 'https://lumo.example/cart/restore/8d2f?x=1&y="2"',
        "item_count": 3,
        "first_item_name": "Ethiopia <Yirgacheffe> & co",
    },
    "lead_captured": {"email": "a@example.com", "interest": "office", "company": AWKWARD},
    "signed_up": {"email": "a@example.com", "first_name": AWKWARD},
    "referral_converted": {"friend_first_name": AWKWARD, "order_id": "o-1"},
}
REQUIRED: dict[str, dict[str, Any]] = {
    "cart_updated": {"cart_total": 5, "currency": "EUR"},
    "lead_captured": {"email": "a@example.com", "interest": "espresso"},
    "signed_up": {"email": "a@example.com"},
}
PROFILES: dict[str, dict[str, Any]] = {
    "full": {"first_name": "Maximilian", "timezone": "America/New_York", "loyalty_points": 1},
    "minimal": {"email": "someone@example.com"},
    "awkward": {"email": "o@example.com", "first_name": AWKWARD, "referral_code": "A&B<1>"},
}


def test_every_shipped_email_is_byte_for_byte_what_whole_email_inlining_gives(
    project: Project,
) -> None:
    fast = TemplateStore(ROOT / "templates", clock=lambda: NOW)
    whole = TemplateStore(ROOT / "templates", clock=lambda: NOW, reuse_shapes=False)
    compared = 0
    for plan in project.plans.values():
        trigger = plan.trigger.event if isinstance(plan.trigger, EventTrigger) else ""
        for step in plan.steps.values():
            if not (isinstance(step, SendStep) and step.channel == Channel.email):
                continue
            for locale in plan.locales:
                for name, profile in PROFILES.items():
                    customer = {**profile, "locale": locale}
                    events = REQUIRED if name == "minimal" else EVENTS
                    event = events.get(trigger, {})
                    expected = render_preview(
                        whole, plan, step.id, customer, event, None, UNSUBSCRIBE
                    )
                    for _ in range(2):
                        got = render_preview(
                            fast, plan, step.id, customer, event, None, UNSUBSCRIBE
                        )
                        assert got == expected, f"{plan.name}/{step.id} {locale} {name}"
                        compared += 1
    assert compared >= 200
    # Most second renders took the shape the first one proved.
    assert fast.shapes_reused >= compared // 2
    assert whole.shapes_reused == 0


def _store(tmp_path: Path, html: str) -> tuple[TemplateStore, TemplateStore]:
    root = tmp_path / "templates"
    (root / "t").mkdir(parents=True, exist_ok=True)
    (root / "t" / "m.en.subject.j2").write_text("Hi")
    (root / "t" / "m.en.html.j2").write_text(html)
    (root / "t" / "m.en.text.j2").write_text("Hi")
    return TemplateStore(root), TemplateStore(root, reuse_shapes=False)


def _html(store: TemplateStore, value: str) -> str:
    context = {
        "customer": {"name": value, "tag": value},
        "event": {},
        "journey": {},
        "unsubscribe_url": "https://x.example/u?a=1&b=2",
    }
    rendered = store.render_email(
        "t/m", locale="en", default_locale="en", context=context, marketing=True
    )
    return rendered.html


STYLE = "<html><head><style>p { color: red } .vip { color: gold } td { padding: 1px }</style>"
# Each a place where a marker must not stand for the value (or must be proven first).
AWKWARD_PLACES = {
    "block set": STYLE + "{% set x %}{{ customer.name }}{% endset %}<p>{{ x | length }}</p>",
    "filter block": STYLE + "<p>{% filter upper %}{{ customer.name }}{% endfilter %}</p>",
    "macro": STYLE + "{% macro m(v) %}<p>{{ v }}</p>{% endmacro %}{{ m(customer.name) | trim }}",
    "safe value": STYLE + "<body>{{ customer.name | safe }}</body>",
    "class": STYLE + '<body><p class="{{ customer.tag }}">x</p></body>',
    "entity": STYLE + "<body><p>&{{ customer.name }}</p></body>",
    "tag name": STYLE + "<body><{{ customer.tag }}>x</p></body>",
    "style element": "<html><head><style>p { color: {{ customer.tag }} }</style></head><p>x</p>",
    "table text": STYLE + "<body><table><tr>{{ customer.name }}<td>x</td></tr></table></body>",
    "unquoted attribute": STYLE + "<body><p title={{ customer.name }}>x</p></body>",
    "pre": STYLE + "<body><pre>{{ customer.name }}</pre></body>",
    "comment": STYLE + "<body><!-- {{ customer.name }} --><p>x</p></body>",
    "text and link": STYLE + '<body><p><a href="{{ customer.name }}">{{ customer.name }}</a></p>',
}
VALUES = ("Ada", "", "  ", "vip", "p", "amp;", "a b", "<b>x</b>", "\nA\r\nB", 'O\'B & "c"\xa0')


@pytest.mark.parametrize("place", sorted(AWKWARD_PLACES))
def test_a_value_in_an_awkward_place_renders_as_whole_email_inlining_does(
    tmp_path: Path, place: str
) -> None:
    fast, whole = _store(tmp_path, AWKWARD_PLACES[place])
    for value in VALUES * 2:
        assert _html(fast, value) == _html(whole, value), repr(value)


def test_plain_text_and_links_reuse_their_shape(tmp_path: Path) -> None:
    fast, _ = _store(tmp_path, AWKWARD_PLACES["text and link"])
    for value in ("Ada", "Bo", "Cy", "Di"):
        _html(fast, value)
    assert fast.shapes_reused == 3


def test_a_capturing_template_is_never_reused(tmp_path: Path) -> None:
    fast, _ = _store(tmp_path, AWKWARD_PLACES["block set"])
    for value in ("Ada", "Bo", "Cy"):
        _html(fast, value)
    assert fast.shapes_reused == 0


def test_a_second_email_of_a_template_touches_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything that does not depend on the customer is looked up once per store."""
    fast, _ = _store(tmp_path, AWKWARD_PLACES["text and link"])
    first = _html(fast, "Ada")

    def no_file(*args: object, **kwargs: object) -> None:
        raise AssertionError("a render touched the file system")

    monkeypatch.setattr(Path, "stat", no_file)
    monkeypatch.setattr(Path, "read_text", no_file)
    monkeypatch.setattr("builtins.open", no_file)
    assert _html(fast, "Ada") == first
    assert _html(fast, "Bo") == first.replace("Ada", "Bo")
