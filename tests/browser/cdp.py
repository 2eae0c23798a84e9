"""Just enough of the Chrome DevTools Protocol to drive headless Chromium from a test.

No Node and no WebDriver: Chromium is started with ``--remote-debugging-port=0``, its port is
read from ``DevToolsActivePort`` in the profile directory, and a page target is driven over a
websocket (aiohttp, already installed with the ``twilio`` SDK).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_SECONDS = 30.0


def find_chromium() -> str | None:
    """The Chromium binary on PATH (Debian's ``chromium`` package), or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Page:
    """One browser tab: navigate, run JavaScript, wait for the next page load."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and return its result (events that arrive meanwhile are kept)."""
        command_id = next(self._ids)
        await self._ws.send_json({"id": command_id, "method": method, "params": params})
        while True:
            message = await self._receive()
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._events.append(message)

    async def wait_for(self, event: str) -> dict[str, Any]:
        """The next ``event`` (one that already arrived counts), consuming it."""
        while True:
            for index, message in enumerate(self._events):
                if message.get("method") == event:
                    return self._events.pop(index)
            self._events.append(await self._receive())

    async def goto(self, url: str) -> None:
        self._drop("Page.loadEventFired")
        await self.call("Page.navigate", url=url)
        await self.wait_for("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def click_and_wait(self, selector: str) -> None:
        """Click an element that loads a new page (a form's submit button) and wait for it."""
        self._drop("Page.loadEventFired")
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")
        await self.wait_for("Page.loadEventFired")

    def seen(self, event: str) -> list[dict[str, Any]]:
        """The ``event`` messages that arrived so far and were not waited for."""
        return [m for m in self._events if m.get("method") == event]

    def _drop(self, event: str) -> None:
        self._events = [m for m in self._events if m.get("method") != event]

    async def _receive(self) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            message = await self._ws.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"Chromium closed the DevTools connection ({message.type})")
        data: dict[str, Any] = json.loads(message.data)
        return data


@contextlib.asynccontextmanager
async def chromium(binary: str, profile: Path, *, language: str = "en-US") -> AsyncIterator[Page]:
    """A headless Chromium with a fresh profile, and its first tab."""
    args = [
        binary,
        "--headless=new",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--lang={language}",
        f"--accept-lang={language}",
        "about:blank",
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        port = await _devtools_port(profile, process)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            target = next(t for t in targets if t.get("type") == "page")
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                yield page
    finally:
        if process.returncode is None:
            process.terminate()
        with contextlib.suppress(ProcessLookupError):
            await asyncio.wait_for(process.wait(), TIMEOUT_SECONDS)


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    """The DevTools port Chromium picked, from the file it writes once listening."""
    active = profile / "DevToolsActivePort"
    async with asyncio.timeout(TIMEOUT_SECONDS):
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"Chromium exited with code {process.returncode}")
            if active.exists():
                first = active.read_text().splitlines()[:1]
                if first and first[0].isdigit():
                    return int(first[0])
            await asyncio.sleep(0.05)
