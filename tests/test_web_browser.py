"""A real browser on the unsubscribe page: headless Chromium opens the link from an email,
ticks a box, submits, and sees the confirmation in the customer's language."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.client import Kairos
from kairos.compiler import Project
from kairos.config import Settings
from kairos.runtime import Consent
from kairos.unsubscribe import unsubscribe_url
from tests.browser.cdp import chromium, find_chromium
from tests.browser.harness import customers, serve, tidy, web_settings
from tests.conftest import running_worker
from tests.helpers import eventually

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed and could not be: run tests/browser/ensure_chromium.sh "
    "as root or with sudo (apt-get install chromium)",
)


@needs_chromium
async def test_a_customer_unsubscribes_from_sms_too_on_the_page(
    ts_env: WorkflowEnvironment, settings: Settings, project: Project, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    kairos = Kairos(ts_env.client, settings, project)
    async with (
        tidy(ts_env.client, customers("aino")),
        running_worker(ts_env.client, settings, project),
        serve(kairos, web_settings(settings)) as http,
        chromium(CHROMIUM, tmp_path / "profile", language="en-US") as page,
    ):
        await kairos.identify("aino", {"locale": "fi", "email": "aino@example.com"})
        await eventually(lambda: _profile_has_locale(kairos, "aino"))
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

        async def withdrawn() -> Consent | None:
            consent = (await kairos.customer("aino")).consent
            return consent if not consent.marketing and not consent.sms else None

        consent = await eventually(withdrawn)

    assert (heading, language, ticked) == ("Peru tilaus", "fi", ["marketing"])
    assert done == "Tilaus on peruttu"
    assert listed == ["Tarjoukset, vinkit ja uutiset", "Kaikki tekstiviestit (SMS)"]
    assert consent.email and consent.transactional


async def _profile_has_locale(kairos: Kairos, customer_id: str) -> bool:
    return (await kairos.customer(customer_id)).profile.get("locale") == "fi"
