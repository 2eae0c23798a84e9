"""The unsubscribe pages' words in every supported language, and choosing the language.

The customer's own profile locale wins (it is the language their email was written in); then
the browser's Accept-Language; then English.
"""

from __future__ import annotations

import re
from typing import Final

DEFAULT_LOCALE: Final = "en"

STRINGS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "title": "Unsubscribe",
        "intro": "Choose the messages from {brand} that you no longer want to receive.",
        "topic.marketing": "Offers, tips and news",
        "topic.sms": "All text messages (SMS)",
        "topic.email": "All email from us",
        "submit": "Unsubscribe",
        "choose_one": "Choose at least one kind of message.",
        "done.title": "You are unsubscribed",
        "done.body": "You will no longer receive:",
        "done.note": "A message already on its way may still arrive.",
        "invalid.title": "This link does not work",
        "invalid.body": "Copy the whole link from the email, or use the link in a newer email.",
        "expired.title": "This link has expired",
        "expired.body": "Please use the unsubscribe link in a more recent email from us.",
        "unavailable.title": "Please try again in a minute",
        "unavailable.body": "We could not save your choice just now. Nothing has changed yet.",
        "one_click": "You are unsubscribed.",
    },
    "fi": {
        # Not "Peru tilaus": tilaus is also an order and a (coffee) subscription.
        "title": "Lopeta viestit",
        "intro": "Valitse, mitä viestejä {brand} ei enää lähetä sinulle.",
        "topic.marketing": "Tarjoukset, vinkit ja uutiset",
        "topic.sms": "Kaikki tekstiviestit (SMS)",
        "topic.email": "Kaikki sähköpostit meiltä",
        "submit": "Lopeta valitut viestit",
        "choose_one": "Valitse vähintään yksi viestityyppi.",
        "done.title": "Viestit on lopetettu",
        "done.body": "Et enää saa:",
        "done.note": "Jo matkalla oleva viesti voi vielä saapua.",
        "invalid.title": "Linkki ei toimi",
        "invalid.body": "Kopioi koko linkki sähköpostista tai käytä uudemman viestin linkkiä.",
        "expired.title": "Linkki on vanhentunut",
        "expired.body": "Käytä uudemman sähköpostimme linkkiä viestien lopettamiseen.",
        "unavailable.title": "Yritä uudelleen hetken kuluttua",
        "unavailable.body": (
            "Valintaasi ei voitu tallentaa juuri nyt. Mitään ei ole vielä muutettu."
        ),
        "one_click": "Viestit on lopetettu.",
    },
    # Du, as in the brand's German emails.
    "de": {
        "title": "Abmelden",
        "intro": "Wähle, welche Nachrichten von {brand} du nicht mehr bekommen möchtest.",
        "topic.marketing": "Angebote, Tipps und Neuigkeiten",
        "topic.sms": "Alle SMS",
        "topic.email": "Alle E-Mails von uns",
        "submit": "Abmelden",
        "choose_one": "Wähle mindestens eine Art von Nachricht.",
        "done.title": "Du bist abgemeldet",
        "done.body": "Du bekommst nicht mehr:",
        "done.note": "Eine Nachricht, die schon unterwegs ist, kann noch ankommen.",
        "invalid.title": "Dieser Link funktioniert nicht",
        "invalid.body": (
            "Kopiere den ganzen Link aus der E-Mail oder nimm den Link aus einer neueren E-Mail."
        ),
        "expired.title": "Dieser Link ist abgelaufen",
        "expired.body": "Bitte nimm den Abmeldelink aus einer neueren E-Mail von uns.",
        "unavailable.title": "Bitte versuch es gleich noch einmal",
        "unavailable.body": (
            "Deine Auswahl konnte gerade nicht gespeichert werden. Noch hat sich nichts geändert."
        ),
        "one_click": "Du bist abgemeldet.",
    },
    "sv": {
        "title": "Avsluta utskick",
        "intro": "Välj vilka meddelanden från {brand} du inte längre vill få.",
        "topic.marketing": "Erbjudanden, tips och nyheter",
        "topic.sms": "Alla sms",
        "topic.email": "All e-post från oss",
        "submit": "Avsluta valda utskick",
        "choose_one": "Välj minst en sorts meddelande.",
        "done.title": "Utskicken är avslutade",
        "done.body": "Du får inte längre:",
        "done.note": "Ett meddelande som redan är på väg kan fortfarande komma fram.",
        "invalid.title": "Länken fungerar inte",
        "invalid.body": "Kopiera hela länken från mejlet, eller använd länken i ett nyare mejl.",
        "expired.title": "Länken har gått ut",
        "expired.body": "Använd länken för att avsluta utskick i ett nyare mejl från oss.",
        "unavailable.title": "Försök igen om en stund",
        "unavailable.body": "Vi kunde inte spara ditt val just nu. Ingenting har ändrats än.",
        "one_click": "Utskicken är avslutade.",
    },
}

_LANGUAGE_RANGE = re.compile(
    r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q=([0-9.]+))?\s*$"
)


def primary(locale: str) -> str:
    """The language of a locale tag: ``de-DE`` and ``de_AT`` are ``de``."""
    return re.split(r"[-_]", locale.strip(), maxsplit=1)[0].lower()


def choose_locale(profile_locale: object, accept_language: str) -> str:
    """The supported language to answer in.

    Args:
        profile_locale: The customer's ``locale`` profile attribute, if known.
        accept_language: The request's Accept-Language header (may be empty).
    """
    if isinstance(profile_locale, str) and primary(profile_locale) in STRINGS:
        return primary(profile_locale)
    for language in _accepted(accept_language):
        if language in STRINGS:
            return language
    return DEFAULT_LOCALE


def _accepted(header: str) -> list[str]:
    """Languages from an Accept-Language header, most preferred first (RFC 9110 q-values)."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(header.split(",")):
        match = _LANGUAGE_RANGE.match(item)
        if not match or match.group(1) == "*":
            continue
        try:
            weight = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        if weight > 0:
            ranked.append((-weight, position, primary(match.group(1))))
    return [language for _, _, language in sorted(ranked)]


def text(locale: str, key: str, **values: str) -> str:
    """One string in ``locale`` (English when the locale lacks it), with ``values`` filled in."""
    template = STRINGS.get(locale, {}).get(key) or STRINGS[DEFAULT_LOCALE][key]
    return template.format(**values) if values else template
