"""The unsubscribe pages: small, self-contained HTML (no scripts, no external assets).

Rendered with Jinja's autoescaping, so nothing that reaches a page can inject markup. The pages
carry headers that keep the signed link out of Referer headers, caches and frames.
"""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import DictLoader, Environment
from starlette.responses import HTMLResponse

from kairos.web.i18n import text

TOPICS = ("marketing", "sms", "email")
"""The consent topics a customer can choose on the page, in the order shown."""

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}

_LAYOUT = """<!doctype html>
<html lang="{{ locale }}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · {{ brand }}</title>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; margin: 0; background: #f6f5f2; color: #222; }
  main { max-width: 32rem; margin: 3rem auto; padding: 2rem; background: #fff;
         border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.1); }
  h1 { font-size: 1.4rem; margin-top: 0; }
  label { display: block; margin: .5rem 0; }
  button { margin-top: 1rem; padding: .6rem 1.2rem; font-size: 1rem; border: 0;
           border-radius: 4px; background: #222; color: #fff; cursor: pointer; }
  .error { color: #a00; }
</style>
</head>
<body>
<main>
<h1 id="title">{{ title }}</h1>
{% block content %}{% endblock %}
</main>
</body>
</html>
"""

_TEMPLATES = {
    "layout.html": _LAYOUT,
    "confirm.html": """{% extends "layout.html" %}{% block content %}
<p>{{ intro }}</p>
{% if error %}<p class="error" id="error" role="alert">{{ error }}</p>{% endif %}
<form method="post">
{% for topic, label, checked in options %}
<label><input type="checkbox" name="topic" value="{{ topic }}"{% if checked %} checked{% endif %}>
 {{ label }}</label>
{% endfor %}
<button type="submit" id="submit">{{ submit }}</button>
</form>
{% endblock %}""",
    "done.html": """{% extends "layout.html" %}{% block content %}
<p>{{ body }}</p>
<ul id="topics">{% for label in topics %}<li>{{ label }}</li>{% endfor %}</ul>
<p>{{ note }}</p>
{% endblock %}""",
    "message.html": """{% extends "layout.html" %}{% block content %}
<p id="message">{{ body }}</p>
{% endblock %}""",
}

_env = Environment(loader=DictLoader(_TEMPLATES), autoescape=True, auto_reload=False)


def _render(name: str, status: int, **context: object) -> HTMLResponse:
    html = _env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def confirm_page(
    locale: str, brand: str, checked: Sequence[str], *, error: bool = False
) -> HTMLResponse:
    """The page the link opens: what to unsubscribe from, with the link's topics pre-ticked."""
    options = [(topic, text(locale, f"topic.{topic}"), topic in checked) for topic in TOPICS]
    return _render(
        "confirm.html",
        400 if error else 200,
        locale=locale,
        brand=brand,
        title=text(locale, "title"),
        intro=text(locale, "intro", brand=brand),
        options=options,
        submit=text(locale, "submit"),
        error=text(locale, "choose_one") if error else "",
    )


def done_page(locale: str, brand: str, topics: Sequence[str]) -> HTMLResponse:
    """The confirmation: what the customer will no longer receive."""
    return _render(
        "done.html",
        200,
        locale=locale,
        brand=brand,
        title=text(locale, "done.title"),
        body=text(locale, "done.body"),
        topics=[text(locale, f"topic.{topic}") for topic in topics],
        note=text(locale, "done.note"),
    )


def message_page(
    locale: str, brand: str, kind: str, status: int, headers: dict[str, str] | None = None
) -> HTMLResponse:
    """A page that only explains: ``invalid``, ``expired`` or ``unavailable``."""
    response = _render(
        "message.html",
        status,
        locale=locale,
        brand=brand,
        title=text(locale, f"{kind}.title"),
        body=text(locale, f"{kind}.body"),
    )
    response.headers.update(headers or {})
    return response
