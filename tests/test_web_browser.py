"""A real browser on the unsubscribe page: headless Chromium opens the link from an email,
ticks a box, submits, and sees the confirmation in the customer's language."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kairos.config import Settings
from kairos.store import Store
from kairos.unsubscribe import unsubscribe_url
from tests.browser.cdp import chromium, find_chromium
from tests.browser.harness import offline_kairos, serve, web_settings

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed and could not be: run tests/browser/ensure_chromium.sh "
    "as root or with sudo (apt-get install chromium)",
)


@needs_chromium
async def test_a_customer_unsubscribes_from_sms_too_on_the_page(
    settings: Settings, store: Store, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    kairos = await offline_kairos(settings, store)  # the page needs only the store
    async with (
        serve(kairos, web_settings(settings)) as http,
        chromium(CHROMIUM, tmp_path / "profile", language="en-US") as page,
    ):
        await kairos.identify(
            "aino", {"locale": "fi", "email": "aino@example.com"},
            consent={"marketing": True, "sms": True}, source="signup form",
        )  # fmt: skip
        link = unsubscribe_url(
            str(http.base_url), "aino", secret=settings.secret, now=int(time.time())
        )

        await page.goto(link)
        heading = await page.evaluate("document.querySelector('#title').textContent")
        language = await page.evaluate("document.documentElement.lang")
        ticked = await page.evaluate(
            "[...document.querySelectorAll('input[name=topic]:checked')].map(i => i.value)"
        )
        await page.evaluate("document.querySelector('input[value=sms]').click()")
        await page.click_and_wait("#submit")
        done = await page.evaluate("document.querySelector('#title').textContent")
        listed = await page.evaluate(
            "[...document.querySelectorAll('#topics li')].map(li => li.textContent)"
        )
        record = await kairos.customer("aino")

    assert (heading, language, ticked) == ("Lopeta viestit", "fi", ["marketing"])
    assert done == "Viestit on lopetettu"
    assert listed == ["Tarjoukset, vinkit ja uutiset", "Kaikki tekstiviestit (SMS)"]
    consent = record.consent
    assert not consent.marketing and not consent.sms
    assert consent.email and consent.transactional
    assert [c.source for c in record.consent_history if not c.granted] == [
        "unsubscribe page",
        "unsubscribe page",
    ]
