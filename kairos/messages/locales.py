"""How messages in each locale write dates, times, numbers and money: ``templates/locales.yaml``.

A template's locale (``en`` in ``welcome.en.subject.j2``) says which language the copy is in;
how that language writes a date is a brand decision the tag alone does not make: British copy
needs "5 March 2026", not the "March 5, 2026" that CLDR's plain ``en`` gives. The optional file
``templates/locales.yaml`` makes it, per locale::

    en:
      format: en-GB              # dates, times, numbers, money and plural rules of en-GB
      timezone: Europe/Helsinki  # for dates and times when the customer has no timezone

A locale the file does not list formats as its own tag, in UTC when the customer has no
timezone. The file sits with the templates because it changes what they render: it is part of
the template tree a run is pinned to (:mod:`kairos.language.pinning`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError

from kairos.language.problems import Problem, did_you_mean
from kairos.language.yaml_source import YamlDocument, load_yaml, read_source

LOCALES_FILE = "locales.yaml"
_KEYS = ("format", "timezone")


def normalise_locale(tag: str) -> str:
    """Canonical BCP 47 form: ``fi_fi`` -> ``fi-FI``, ``zh_hant_tw`` -> ``zh-Hant-TW``."""
    pieces = [piece for piece in re.split(r"[-_]", tag.strip()) if piece]
    if not pieces:
        return ""
    out = [pieces[0].lower()]
    for piece in pieces[1:]:
        if len(piece) == 4 and piece.isalpha():
            out.append(piece.title())
        elif (len(piece) == 2 and piece.isalpha()) or (len(piece) == 3 and piece.isdigit()):
            out.append(piece.upper())
        else:
            out.append(piece.lower())
    return "-".join(out)


@dataclass(frozen=True)
class LocaleStyle:
    """What ``templates/locales.yaml`` says about one locale.

    Attributes:
        format: The CLDR locale whose dates, numbers, money and plural rules to use.
        timezone: The IANA timezone for dates and times when the customer has none.
    """

    format: str
    timezone: str | None = None


def parse_locale_styles(text: str, shown: str) -> tuple[dict[str, LocaleStyle], list[Problem]]:
    """The styles in the text of a ``locales.yaml``, and every problem with their positions.

    Args:
        text: The file's text.
        shown: The file as its author knows it (``templates/locales.yaml``).
    """
    doc, problems = load_yaml(text, shown)
    if doc is None:
        return {}, problems
    if doc.data is None:
        return {}, []
    if not isinstance(doc.data, dict):
        return {}, [doc.problem((), "expected a mapping of locales, such as `en: {format: en-GB}`")]
    styles: dict[str, LocaleStyle] = {}
    for tag, spec in doc.data.items():
        style = _style(doc, str(tag), spec, problems)
        if style is not None:
            styles[normalise_locale(str(tag))] = style
    return styles, problems


def load_locale_styles(root: Path, shown: str) -> tuple[dict[str, LocaleStyle], list[Problem]]:
    """The styles of the templates under ``root``; none (and no problem) without the file.

    ``shown`` is the file as its author knows it (``templates/locales.yaml``).
    """
    path = root / LOCALES_FILE
    if not path.is_file():
        return {}, []
    # root.parent is the project home, which holds templates/.
    text, problems = read_source(path, shown, home=root.parent)
    if text is None:
        return {}, problems
    return parse_locale_styles(text, shown)


def _style(doc: YamlDocument, tag: str, spec: Any, problems: list[Problem]) -> LocaleStyle | None:
    path = (tag,)
    if not isinstance(spec, Mapping):
        problems.append(
            doc.problem(path, f"`{tag}` needs settings", f"write `{tag}: {{format: {tag}}}`")
        )
        return None
    before = len(problems)
    for key in spec:
        if key not in _KEYS:
            close = did_you_mean(str(key), _KEYS)
            hint = f"did you mean `{close}`?" if close else "a locale takes format and timezone"
            problems.append(doc.problem((*path, str(key)), f"unknown key `{key}`", hint, key=True))
    written = spec.get("format", tag)
    language = normalise_locale(tag).split("-")[0]
    form = _cldr(str(written))
    if form is None:
        problems.append(
            doc.problem(
                (*path, "format"),
                f"`{written}` is not a locale Kairos can format in",
                f"use a tag such as {language}-{language.upper()}",
            )
        )
    elif form.language != language:
        problems.append(
            doc.problem(
                (*path, "format"),
                f"`{written}` writes {form.language}, but the `{tag}` templates are in {language}",
                f"use a form of {language}, such as {language}-{language.upper()}",
            )
        )
    zone = spec.get("timezone")
    if zone is not None and not _known_zone(str(zone)):
        problems.append(
            doc.problem(
                (*path, "timezone"),
                f"`{zone}` is not a timezone",
                "use an IANA name such as Europe/Helsinki",
            )
        )
    if len(problems) != before:
        return None
    return LocaleStyle(format=normalise_locale(str(written)), timezone=str(zone) if zone else None)


def _cldr(tag: str) -> Locale | None:
    try:
        return Locale.parse(tag, sep="-" if "-" in tag else "_")
    except (ValueError, UnknownLocaleError):
        return None


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
