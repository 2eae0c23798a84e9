"""A real browser: headless Chromium on the unsubscribe page (opens the link from an email,
ticks a box, submits, sees the confirmation in the customer's language), and on the Temporal
UI, which decrypts a run through the codec server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from kairos.messages.unsubscribe import unsubscribe_url
from kairos.runtime.codec import data_converter
from kairos.runtime.config import Settings
from kairos.runtime.contract import journey_workflow_id
from kairos.store.facade import Store
from kairos.store.keys import DatabaseKeys
from kairos.tools.dev import dev_server_args, temporal_binary
from kairos.web.app import create_app
from kairos.web.config import WebConfig, dev_ui_origins
from kairos.web.server import running
from tests.browser.cdp import Page, chromium, find_chromium
from tests.browser.harness import offline_kairos, serve, web_settings
from tests.commands import free_port
from tests.conftest import make_kairos, running_worker
from tests.helpers import started

pytestmark = pytest.mark.slow  # every test here starts a process or a server

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


SIGNUP = {
    "email": "ada@example.com", "first_name": "Ada", "locale": "en",
    "timezone": "Europe/Helsinki", "marketing_opt_in": True,
}  # fmt: skip


# The page's text, and that of its frames (the UI renders a run's summary as Markdown in one;
# a frame still loading has no body yet).
VISIBLE_TEXT = """
[document.body ? document.body.innerText : '',
 ...[...document.querySelectorAll('iframe')].map(
     f => f.contentDocument && f.contentDocument.body
          ? f.contentDocument.body.innerText : (f.srcdoc || ''))].join('\\n')
"""


async def _text_with(page: Page, needle: str, *, attempts: int = 150) -> str:
    """The page's visible text once it shows ``needle`` (the UI renders after loading)."""
    text = ""
    for _ in range(attempts):
        text = await page.evaluate(VISIBLE_TEXT) or ""
        if needle in text:
            return str(text)
        await asyncio.sleep(0.2)
    raise AssertionError(f"the page never showed {needle!r}; it showed:\n{text[:3000]}")


@needs_chromium
@pytest.mark.timeout(180)
async def test_support_reads_a_run_decrypted_in_the_temporal_ui(
    settings: Settings, store: Store, keys: DatabaseKeys, tmp_path: Path
) -> None:
    """The dev server's real Temporal UI, its codec endpoint the web front door's ``/codec``
    as ``make dev`` wires it: the run's summary, encrypted in Temporal, reads in clear."""
    assert CHROMIUM is not None
    ui_port = free_port()
    web = WebConfig(codec_origins=dev_ui_origins(ui_port))
    offline = await offline_kairos(settings, store)  # the codec server needs only the store
    async with running(create_app(offline, settings, web)) as web_url:
        args = dev_server_args(None, 0, ui_port, f"{web_url}/codec")
        # start_local adds start-dev, the ip, the ports and --ui-port itself.
        extra = args[args.index("--log-level") :]
        at = extra.index("--ui-port")
        del extra[at : at + 2]
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_binary("temporal")),
            dev_server_extra_args=extra,
            data_converter=data_converter(keys),
            ui=True,
            ui_port=ui_port,
        )
        async with env, chromium(CHROMIUM, tmp_path / "profile") as page:
            kairos = make_kairos(env.client, settings, store)
            async with running_worker(env.client, settings, store):
                await kairos.emit("c-codec", "signed_up", SIGNUP)
                workflow_id = journey_workflow_id("welcome", "c-codec", 1)
                described = await (await started(env.client, workflow_id)).describe()
                summary = await described.static_summary()
                stored = described.raw_description.execution_config.user_metadata.summary
                await page.goto(
                    f"http://localhost:{ui_port}/namespaces/default/workflows/{workflow_id}"
                )
                # The run's input (its pinned plan) opens decoded.
                shown_input = await _text_with(page, '"plan": {')
                await page.evaluate(
                    "[...document.querySelectorAll('a, button, [role=tab]')]"
                    ".find(e => e.textContent.trim() === 'User Metadata').click()"
                )
                shown_metadata = await _text_with(page, "run 1 for customer c-codec")

    assert stored.metadata["encoding"] == b"binary/encrypted"
    assert b"c-codec" not in stored.data
    assert '"name": "welcome"' in shown_input
    assert summary is not None and summary.startswith("welcome (v")
    assert summary in shown_metadata
