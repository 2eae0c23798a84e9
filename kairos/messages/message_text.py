"""Turning rendered templates into what is sent: one-line subjects, tidy plain text (made from
the HTML when the template has no text part), SMS whitespace, the hidden preheader.
"""

from __future__ import annotations

import re

import html2text
from markupsafe import escape

from kairos.messages.inlining import Recording

_PREHEADER_STYLE = (
    "display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0;max-width:0;"
    "opacity:0;overflow:hidden;mso-hide:all"
)


_BODY_OPEN = re.compile(r"<body\b[^>]*>", re.IGNORECASE)


_MD_ESCAPE = re.compile(r"\\([\\.+\-])")
_LINE_BREAKS = re.compile(r"[ \t\r\n\f\v]+")


def _one_line(text: str) -> str:
    # ASCII whitespace only: the non-breaking spaces Babel puts in "1 234,50 €" should stay.
    return _LINE_BREAKS.sub(" ", text).strip(" ")


def _tidy(text: str) -> str:
    """Trailing spaces off every line, at most one blank line in a row, no outer blank lines."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def html_to_text(html: str) -> str:
    """A readable plain-text version of an email's HTML: links kept, layout tables flattened."""
    converter = html2text.HTML2Text()
    converter.body_width = 0  # never wrap: a wrapped URL is a broken link
    converter.unicode_snob = True  # keep ä and € rather than ASCII look-alikes
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.ignore_tables = True  # email layouts are tables; their cells are the text
    # html2text escapes what Markdown would misread (1\. Socks, \- 20% off); a plain-text
    # reader is not a Markdown parser, so the escapes are undone.
    return _tidy(_MD_ESCAPE.sub(r"\1", str(converter.handle(html))))


def normalise_sms(text: str) -> str:
    """Collapse spaces within lines and blank-line runs, and strip.

    Non-breaking spaces (Babel puts them in ``1 234,50 €``) become plain spaces: they are not
    in GSM-7, and one of them would turn the whole message into UCS-2.
    """
    lines = [re.sub(r"[^\S\n]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _real(skeleton: str, values: Recording | None) -> str:
    return values.real(skeleton) if values else skeleton


def _with_preheader(html: str, preheader: str) -> str:
    if not preheader:
        return html
    span = f'<span style="{_PREHEADER_STYLE}">{escape(preheader)}</span>'
    body = _BODY_OPEN.search(html)
    if body is None:
        return span + html
    return html[: body.end()] + span + html[body.end() :]
