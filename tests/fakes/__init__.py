"""Local HTTP servers that speak the provider APIs, for the real SDK clients to talk to.

``FakeProviderServer`` is what the fakes share: a stdlib ``ThreadingHTTPServer`` on
127.0.0.1, port 0, served from a background thread, with failure injection. Each provider's
module (``sendgrid_server``, ``twilio_server``) subclasses it and answers its API.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Failure:
    """An error answer the fake gives instead of its normal one."""

    status: int
    code: int | None = None
    message: str | None = None
    retry_after: str | None = None
    field: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """An HTTP response: status, headers and body."""

    status: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the fake accepted, parsed: JSON for SendGrid, form fields for Twilio."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]
    provider_id: str = ""  # the id the fake answered with (SendGrid's X-Message-Id, Twilio's sid)


class FakeProviderServer(ABC):
    """A provider API on 127.0.0.1, with failures on demand.

    Usage::

        with FakeSendGrid() as sg:
            ...  # point a client at sg.base_url
            assert len(sg.received) == 1

    Injected failures (``fail_next``, ``delay_next``) apply to the next requests in order,
    before authentication and validation; ``fail_for`` applies to every request for one
    recipient that is otherwise valid.
    """

    def __init__(self) -> None:
        self.received: list[ReceivedRequest] = []
        self.attempts = 0  # every request, accepted or not
        # Requests that came before a 429's Retry-After had passed: a client that honours
        # the provider's rate limit makes none.
        self.calls_while_paused = 0
        self._paused_until = 0.0
        self._lock = threading.Lock()
        self._failures: deque[Failure] = deque()
        self._delays: deque[float] = deque()
        self._recipient_failures: dict[str, Failure] = {}
        self._chaos: Callable[[], Failure | float | None] | None = None
        self._port = 0  # kept across a restart, so clients find it again
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving in a background thread."""
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), _Handler)
        self._server.fake = self
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests held by ``delay_next`` are dropped without an answer."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: what the SDK is pointed at instead of the real API."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- failure injection -----------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: str | int | None = None,
        code: int | None = None,
        message: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` requests with an error.

        Args:
            status: The HTTP status.
            times: How many requests in a row get it.
            retry_after: A Retry-After header: seconds or an HTTP date.
            code: The provider's error code (Twilio's ``code``).
            message: The provider's error message; a realistic default otherwise.
            field: The field the error is about (SendGrid's ``field``).
            headers: More response headers, such as X-RateLimit-Reset.
        """
        failure = Failure(
            status,
            code=code,
            message=message,
            retry_after=None if retry_after is None else str(retry_after),
            field=field,
            headers=dict(headers or {}),
        )
        with self._lock:
            self._failures.extend([failure] * times)

    def delay_next(self, seconds: float) -> None:
        """Hold the next request ``seconds`` before answering it, so the client times out."""
        with self._lock:
            self._delays.append(seconds)

    def chaos(self, pick: Callable[[], Failure | float | None] | None) -> None:
        """Ask ``pick`` about every request no ``fail_next`` or ``delay_next`` caught: a
        ``Failure`` to answer with, seconds to hold the request (then take and answer it), or
        None for the normal answer."""
        with self._lock:
            self._chaos = pick

    def fail_for(
        self,
        recipient: str,
        status: int,
        *,
        code: int | None = None,
        message: str | None = None,
        field: str | None = None,
    ) -> None:
        """Always reject valid requests to ``recipient`` (an address or an E.164 number)."""
        with self._lock:
            self._recipient_failures[recipient.lower()] = Failure(
                status, code=code, message=message, field=field
            )

    # -- for subclasses --------------------------------------------------------------------

    @abstractmethod
    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        """The provider's answer to one request that no injected failure caught."""

    @abstractmethod
    def error(self, failure: Failure) -> Answer:
        """The provider's error response for ``failure``."""

    def recipient_failure(self, recipient: str) -> Failure | None:
        """The rule set by ``fail_for`` for ``recipient``, if any."""
        with self._lock:
            return self._recipient_failures.get(recipient.lower())

    def record(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: dict[str, Any],
        provider_id: str = "",
    ) -> None:
        """Remember an accepted request in ``received``."""
        with self._lock:
            self.received.append(ReceivedRequest(method, path, headers, body, provider_id))

    def _dispatch(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> Answer | None:
        with self._lock:
            self.attempts += 1
            now = time.monotonic()
            if now < self._paused_until:
                self.calls_while_paused += 1
            delay = self._delays.popleft() if self._delays else 0.0
            failure = self._failures.popleft() if self._failures else None
            if not delay and failure is None and self._chaos is not None:
                picked = self._chaos()
                if isinstance(picked, Failure):
                    failure = picked
                elif picked:
                    delay = picked
            wait = failure.retry_after if failure is not None and failure.status == 429 else None
            if wait and wait.isdigit():
                self._paused_until = max(self._paused_until, now + int(wait))
        if delay and self._stopping.wait(delay):
            return None
        if failure is not None:
            return self.error(failure)
        return self.answer(method, path, headers, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeProviderServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out and hung up is part of the test, not an error to print.
        return


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        answer = self.server.fake._dispatch(method, self.path, headers, body)
        if answer is None:
            return
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        # Keep test output clean; failures show in the assertions instead.
        return
