"""Send through the real SendGrid and Twilio SDKs to local fakes that fail, while workers die.

    .venv/bin/python -m benchmarks.provider_faults --customers 100 --kills 4

Like ``benchmarks.faults`` (a throwaway PostgreSQL, a Temporal dev server, two worker processes
running the benchmark journeys, a worker SIGKILLed and restarted every few seconds), but the
workers send with the ``sendgrid`` and ``twilio`` SDKs to independent local fakes of both APIs
(``tests/fakes``), which answer a share of requests with 429 (Retry-After), 500 or 503, or
take a request and answer it only after the client's 10 s timeout, and which are themselves
stopped and restarted on the same port once. The web front door (``kairos serve``) runs too:
each message a fake took is reported to it as the provider would (SendGrid's signed event
webhook with the key in ``custom_args``; Twilio's signed status callback, key in its URL), so
an unknown outcome can be settled from the provider's feedback.

It prints one JSON object: the faults served, runs ended, the ledger's messages by status, and
what the fakes saw, by message key: ``duplicates`` (keys a fake took more than once), ``lost``
(messages the journeys decided to send that did not end ``sent``, ``blocked`` or ``unknown``,
plus keys the ledger calls ``sent`` that no fake took), ``ambiguous`` (messages with a call
whose answer nobody saw: a held request, a worker killed during the call), and what became of
them: ``settled_by_feedback`` (``sent``, from the provider's feedback, not sent again),
``resent`` (email, no feedback within the wait) or ``unknown`` (left unknown, counted; with how
many of them a fake did take).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from benchmarks.faults import Stack, ended_runs, environment, free_port
from kairos.runtime.client import Kairos
from kairos.runtime.config import load_settings
from kairos.store.database import Database
from kairos.store.embedded import temporary_server
from tests.browser.harness import SendGridKey, twilio_signature
from tests.fakes import Failure, FakeProviderServer
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.fakes.twilio_server import FakeTwilio

# The SDK clients give up waiting after 10 s (activities/providers): a held request is taken
# by the fake and answered after that.
HOLD_SECONDS = 11.0
FROM_NUMBER = "+15005550006"


@dataclass(frozen=True)
class Faults:
    """The share of provider requests answered with each fault."""

    rate_limited: float = 0.10  # 429 with Retry-After: 1
    unavailable: float = 0.10  # 500 or 503
    held: float = 0.03  # taken, answered after the client's timeout


class Chaos:
    """Picks each request's fault, and counts what it served (thread-safe: the fakes are)."""

    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults = faults
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.served: Counter[str] = Counter()

    def pick(self) -> Failure | float | None:
        with self.lock:
            roll = self.random.random()
            f = self.faults
            if roll < f.rate_limited:
                self.served["429"] += 1
                return Failure(429, retry_after="1")
            if roll < f.rate_limited + f.unavailable:
                status = self.random.choice((500, 503))
                self.served[str(status)] += 1
                return Failure(status)
            if roll < f.rate_limited + f.unavailable + f.held:
                self.served["held"] += 1
                return HOLD_SECONDS
            return None


class Feedback:
    """Reports each message a fake took to the web front door, as the provider would."""

    def __init__(self, web: str, sendgrid: FakeSendGrid, twilio: FakeTwilio) -> None:
        self.web = web
        self.sendgrid = sendgrid
        self.twilio = twilio
        self.key = SendGridKey()
        self.sent = {"sendgrid": 0, "twilio": 0}
        self.refused = 0

    async def pump(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                await self._once(http)
                if stop.is_set():
                    await self._once(http)
                    return
                await asyncio.sleep(0.3)

    async def _once(self, http: httpx.AsyncClient) -> None:
        new = self.sendgrid.received[self.sent["sendgrid"] :]
        for n, request in enumerate(new, start=self.sent["sendgrid"]):
            args = request.body.get("custom_args", {})
            event = {
                "email": request.body["personalizations"][0]["to"][0]["email"],
                "event": "processed",
                "sg_event_id": f"ev-{n}",
                "sg_message_id": f"{request.provider_id}.filterdrecv-1",
                "timestamp": int(time.time()),
                **args,
            }
            body = json.dumps([event]).encode()
            await self._post(http, "/webhooks/sendgrid/events", body, self.key.headers(body))
            self.sent["sendgrid"] = n + 1
        new_sms = self.twilio.received[self.sent["twilio"] :]
        for n, request in enumerate(new_sms, start=self.sent["twilio"]):
            url = request.body.get("StatusCallback", "")
            if url:
                form = {"MessageSid": request.provider_id, "MessageStatus": "sent"}
                headers = {
                    "X-Twilio-Signature": twilio_signature(url, form, self.twilio.auth_token)
                }
                await self._post(http, url.removeprefix(self.web), form, headers)
            self.sent["twilio"] = n + 1

    async def _post(
        self, http: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str]
    ) -> None:
        for _ in range(20):  # the front door may still be starting
            try:
                if isinstance(body, bytes):
                    response = await http.post(self.web + path, content=body, headers=headers)
                else:
                    response = await http.post(self.web + path, data=body, headers=headers)
            except httpx.TransportError:
                await asyncio.sleep(0.5)
                continue
            if response.status_code >= 300:
                self.refused += 1
            return
        self.refused += 1


async def run(
    customers: int,
    kills: int,
    seconds: float,
    *,
    faults: Faults = Faults(),
    unknown_wait: str = "",
    seed: int = 7,
) -> dict[str, Any]:
    """Run the journeys of ``customers`` customers through failing fakes; count what came of
    every message. ``unknown_wait`` (such as ``20s``) shortens both channels' wait for feedback
    after an unknown outcome (their policies otherwise: resend email, report SMS, after 10m)."""
    random.seed(seed)
    chaos = Chaos(faults, seed)
    tmp_root = Path(os.environ.get("TMPDIR", tempfile.gettempdir()))
    with (
        tempfile.TemporaryDirectory(dir=tmp_root) as tmp,
        temporary_server(tmp_root) as pg,
        FakeSendGrid() as sendgrid,
        FakeTwilio() as twilio,
    ):
        root = Path(tmp)
        port, web_port = free_port(), free_port()
        web = f"http://127.0.0.1:{web_port}"
        feedback = Feedback(web, sendgrid, twilio)
        env = await environment(root, pg, port)
        env |= {
            "KAIROS_PUBLIC_URL": web,
            "KAIROS_EMAIL_PROVIDER": "sendgrid",
            "SENDGRID_API_KEY": sendgrid.api_key,
            "SENDGRID_BASE_URL": sendgrid.base_url,
            "SENDGRID_WEBHOOK_PUBLIC_KEY": feedback.key.public,
            "KAIROS_SMS_PROVIDER": "twilio",
            "TWILIO_ACCOUNT_SID": twilio.account_sid,
            "TWILIO_AUTH_TOKEN": twilio.auth_token,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_BASE_URL": twilio.base_url,
        }
        if unknown_wait:
            env["KAIROS_UNKNOWN_EMAIL"] = f"resend after {unknown_wait}"
            env["KAIROS_UNKNOWN_SMS"] = f"report after {unknown_wait}"
        stack = Stack(root, env, port)
        stack.start_server()
        front_door = subprocess.Popen(
            [str(Path(sys.executable).parent / "kairos"), "serve", "--port", str(web_port)],
            env=env,
            stdout=(root / "web.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        stack.start_worker()
        stack.start_worker()
        for fake in (sendgrid, twilio):
            fake.delay_next(HOLD_SECONDS)  # at least one answer that never comes, each
            fake.chaos(chaos.pick)
        stop = asyncio.Event()
        pump = asyncio.create_task(feedback.pump(stop))
        try:
            settings = load_settings(env, dotenv=False)
            kairos = await Kairos.connect(settings)
            async with kairos:
                killing = asyncio.create_task(_kill(stack, (sendgrid, twilio), kills, seconds))
                await _emit(kairos, customers)
                await killing
                runs = await ended_runs(kairos.store.database, 2 * customers, timeout=900)
                result: dict[str, Any] = {"customers": customers, "runs": runs}
                stop.set()
                await pump
                # Feedback that came after a message was reported unknown still settles it.
                result.update(await _count(kairos.store.database, sendgrid, twilio))
        finally:
            stop.set()
            stack.stop()
            front_door.terminate()
            front_door.wait(timeout=20)
        result["faults_served"] = dict(chaos.served)
        result["feedback_refused"] = feedback.refused
        return result


async def _emit(kairos: Kairos, customers: int) -> None:
    now = datetime.now(UTC).isoformat()
    for n in range(customers):
        customer = f"f{n}"
        signup = {"email": f"{customer}@example.com", "signed_up_at": now,
                  "marketing_opt_in": True}  # fmt: skip
        if n % 2:  # half of them also get the SMS reminder
            signup |= {"phone": f"+3584012{n:05d}", "sms_opt_in": True}
        await kairos.emit(customer, "signed_up", signup, event_id=f"{customer}-up")
        cart = {"cart_total": 20.0, "currency": "EUR"}
        await kairos.emit(customer, "cart_updated", cart, event_id=f"{customer}-c")


async def _kill(
    stack: Stack, fakes: tuple[FakeProviderServer, ...], kills: int, seconds: float
) -> None:
    """SIGKILL a worker every few seconds (and restart one); halfway, stop a fake for a second
    and start it again on its port."""
    pause = seconds / (kills + 2)
    for n in range(kills):
        await asyncio.sleep(pause)
        stack.kill_a_worker()
        if n == kills // 2:
            fake = fakes[n % len(fakes)]
            fake.stop()
            await asyncio.sleep(1)
            fake.start()
        stack.start_worker()


async def _count(database: Database, sendgrid: FakeSendGrid, twilio: FakeTwilio) -> dict[str, Any]:
    """What the ledger says of every message, against what the fakes took."""
    taken = Counter(
        [r.body.get("custom_args", {}).get("kairos_key", "") for r in sendgrid.received]
        + [_callback_key(r.body.get("StatusCallback", "")) for r in twilio.received]
    )
    rows = await database.fetch_all(
        "SELECT key, status, unconfirmed, resends, channel FROM messages"
    )
    statuses = Counter(str(r["status"]) for r in rows)
    unknown = [r for r in rows if r["status"] == "unknown"]
    return {
        "messages": dict(statuses),
        "provider_calls": {"sendgrid": sendgrid.attempts, "twilio": twilio.attempts},
        "taken_by_fakes": sum(taken.values()),
        "duplicates": sum(1 for count in taken.values() if count > 1),
        "lost": sum(1 for r in rows if r["status"] not in ("sent", "blocked", "unknown"))
        + sum(1 for r in rows if r["status"] == "sent" and not taken[r["key"]]),
        "unconfirmed": sum(int(r["unconfirmed"]) for r in rows),
        "settled_by_feedback": sum(
            1 for r in rows if r["status"] == "sent" and r["unconfirmed"] and not r["resends"]
        ),
        "resent": sum(1 for r in rows if r["resends"]),
        "ambiguous": sum(1 for r in rows if r["unconfirmed"]),
        "unknown": len(unknown),
        "unknown_taken_by_provider": sum(1 for r in unknown if taken[r["key"]]),
    }


def _callback_key(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("key", [""])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100, help="each starts two journeys")
    parser.add_argument("--kills", type=int, default=4, help="worker SIGKILLs")
    parser.add_argument("--seconds", type=float, default=40, help="spread the kills over this long")
    parser.add_argument("--unknown-wait", default="", help="e.g. 20s (default: the channels' 10m)")
    args = parser.parse_args()
    result = asyncio.run(
        run(args.customers, args.kills, args.seconds, unknown_wait=args.unknown_wait)
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
