"""What every marketing message must carry: an email an unsubscribe link (a small localized
footer when the template has none, and ``List-Unsubscribe`` headers), an SMS a way to opt out
(a localized STOP hint that never turns a GSM-7 message into UCS-2).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from markupsafe import escape

from kairos.messages.sms import is_gsm7
from kairos.messages.template_files import RenderError

_T = TypeVar("_T")


_EMAIL_FOOTER: dict[str, tuple[str, str]] = {
    "en": ("Don't want these emails?", "Unsubscribe"),
    # Not "Peru tilaus": tilaus is also an order and a (coffee) subscription.
    "fi": ("Etkö halua enää näitä viestejä?", "Lopeta markkinointiviestit"),
    # Not "Avsluta prenumerationen", for the same reason: a prenumeration is also a product.
    "sv": ("Vill du inte längre få de här mejlen?", "Avregistrera dig från utskicken"),
    "de": ("Sie möchten diese E-Mails nicht mehr erhalten?", "Abmelden"),
    "hu": ("Nem szeretne több ilyen levelet kapni?", "Leiratkozás"),
    "ru": ("Не хотите получать эти письма?", "Отписаться"),
}
# STOP stays in English everywhere: it is the keyword carriers and Twilio act on.
_SMS_OPT_OUT: dict[str, str] = {
    "en": "Reply STOP to opt out.",
    "fi": "Lopeta viestit vastaamalla STOP.",
    "sv": "Svara STOP för att avregistrera dig.",
    "de": "Zum Abmelden STOP antworten.",
    "hu": "Leiratkozáshoz válaszoljon STOP szöveggel.",
    "ru": "Чтобы отписаться, ответьте STOP.",
}
_OPT_OUT_HINT = re.compile(r"\b(STOP|STOPALL|UNSUBSCRIBE)\b")


_FOOTER_STYLE = "margin:24px 0 0;font-size:12px;line-height:18px;color:#6b7280;text-align:center"


_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


def email_headers(unsubscribe_url: str | None, *, one_click: bool = True) -> dict[str, str]:
    """``List-Unsubscribe`` headers for a marketing email (RFC 2369; one-click per RFC 8058)."""
    if not unsubscribe_url:
        return {}
    headers = {"List-Unsubscribe": f"<{unsubscribe_url}>"}
    if one_click:
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


def _localized(table: Mapping[str, _T], locale: str) -> _T:
    return table.get(locale) or table.get(locale.split("-")[0]) or table["en"]


def _unsubscribe_url(ctx: Mapping[str, Any], template: str, marketing: bool) -> str | None:
    if not marketing:
        return None
    url = ctx.get("unsubscribe_url")
    if not isinstance(url, str) or not url:
        raise RenderError(
            f"{template}: a marketing email needs an unsubscribe link, but the context has no "
            "unsubscribe_url"
        )
    return url


def _mentions(html: str, url: str) -> bool:
    return url in html or str(escape(url)) in html


def _with_html_footer(html: str, url: str, locale: str) -> str:
    question, label = _localized(_EMAIL_FOOTER, locale)
    footer = (
        f'<p style="{_FOOTER_STYLE}">{escape(question)} '
        f'<a href="{escape(url)}" style="color:#6b7280;text-decoration:underline">'
        f"{escape(label)}</a></p>"
    )
    closes = list(_BODY_CLOSE.finditer(html))
    if not closes:
        return html + footer
    at = closes[-1].start()
    return html[:at] + footer + html[at:]


def _with_text_footer(text: str, url: str, locale: str) -> str:
    question, label = _localized(_EMAIL_FOOTER, locale)
    return f"{text}\n\n{question} {label}: {url}"


def _with_opt_out(body: str, locale: str) -> str:
    suffix = _localized(_SMS_OPT_OUT, locale)
    # A localized hint must not turn a GSM-7 message into UCS-2 (half the room per segment).
    if is_gsm7(body) and not is_gsm7(suffix):
        suffix = _SMS_OPT_OUT["en"]
    return f"{body} {suffix}"
