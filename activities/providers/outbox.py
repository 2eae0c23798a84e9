"""The local outbox: messages become files a person can open instead of being sent.

Layout under the outbox directory (its shared parts, and erasure, are kairos.runtime.outbox_files)::

    email/<UTC timestamp>-<key>.eml   an RFC 5322 message (text and HTML alternatives)
    sms/<UTC timestamp>-<key>.txt     To, Encoding, Segments, Key and metadata lines, then the body
    index.jsonl                       one JSON object per message, oldest first
    .keys/<sha256 of key>             one marker per message key: the key has been delivered
    .index.lock                       held while the index is appended to or rewritten (erasure)

Each ``index.jsonl`` line has ``time`` (ISO 8601 UTC), ``key``, ``channel``, ``to``, ``subject``
(email) or ``preview`` (SMS), ``category``, ``customer_id``, ``journey``, ``step`` (from the
message metadata, empty when absent), ``file`` (relative to the outbox) and ``provider_id``.

Delivery is idempotent by message key, across worker processes: the first send creates the
key's marker with ``O_CREAT | O_EXCL`` (atomic on local filesystems), every later send of the
same key finds it and writes nothing. The message is fully rendered before the claim and moved
into place with one rename after it, so the window in which a crash loses a claimed message is
as small as a filesystem allows.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderDefect
from email.headerregistry import Address
from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime
from pathlib import Path

from temporalio.exceptions import ApplicationError

from activities.providers.base import (
    INVALID_RECIPIENT,
    PAYLOAD_REJECTED,
    mask_email,
    mask_phone,
    provider_error,
)
from kairos.language.plan import Channel
from kairos.messages.models import EmailMessage, Receipt, SmsMessage
from kairos.runtime.outbox_files import (
    INDEX_FILE,
    KEYS_DIR,
    index_lock,
    write_all,
    write_atomically,
)

logger = logging.getLogger(__name__)

PROVIDER = "outbox"
_PREVIEW_CHARS = 60
_KEY_CHARS = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;.]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# These describe the MIME structure the outbox builds; a template must not override them.
_STRUCTURAL_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})
# Headers mail clients read as they are sent: a URL in List-Unsubscribe cannot be folded (RFC
# 2369), and the email package would fold a long one into RFC 2047 encoded words, which mail
# clients do not decode there, so they would offer no unsubscribe button (RFC 8058 one-click).
_RAW_HEADERS = frozenset({"list-unsubscribe", "list-unsubscribe-post"})
# The message's own policy, except that headers set raw are written unchanged.
_AS_WRITTEN = policy.default.clone(refold_source="none")


class _OutboxSender:
    """What both outbox senders share: the outbox directory they write under, once per key."""

    name = PROVIDER
    deduplicates = True

    def __init__(self, outbox_dir: Path | str) -> None:
        """Create a sender that writes under ``outbox_dir``.

        Args:
            outbox_dir: The outbox directory; created on first use.
        """
        self._outbox = _Outbox(Path(outbox_dir))


class OutboxEmailSender(_OutboxSender):
    """Writes each email as an ``.eml`` file under ``<outbox>/email/``."""

    async def send_email(self, message: EmailMessage) -> Receipt:
        """Write ``message`` to the outbox, once per key.

        Raises:
            ApplicationError: InvalidRecipient when ``to`` is not an email address;
                PayloadRejected when the sender address is not one.
        """
        return await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> Receipt:
        if not _ADDRESS.match(message.to):
            raise _rejected(
                INVALID_RECIPIENT, message.key, f"{mask_email(message.to)} is not an email address"
            )
        now = datetime.now(UTC)
        provider_id = _provider_id(message.key)
        content = _eml(message, now, provider_id)
        summary = _summary(message.to, message.category, message.metadata, subject=message.subject)
        return self._outbox.deliver(message.key, Channel.email, now, content, summary)


class OutboxSmsSender(_OutboxSender):
    """Writes each SMS as a ``.txt`` file under ``<outbox>/sms/``."""

    async def send_sms(self, message: SmsMessage) -> Receipt:
        """Write ``message`` to the outbox, once per key.

        Raises:
            ApplicationError: InvalidRecipient when ``to`` is not an E.164 number.
        """
        return await asyncio.to_thread(self._send, message)

    def _send(self, message: SmsMessage) -> Receipt:
        if not _E164.match(message.to):
            raise _rejected(
                INVALID_RECIPIENT,
                message.key,
                f"{mask_phone(message.to)} is not an E.164 phone number (such as +358401234567)",
            )
        now = datetime.now(UTC)
        preview = " ".join(message.body.split())[:_PREVIEW_CHARS]
        summary = _summary(message.to, message.category, message.metadata, preview=preview)
        content = _sms_text(message).encode()
        return self._outbox.deliver(message.key, Channel.sms, now, content, summary)


class _Outbox:
    """The directory both senders share: key claims, message files and the index."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def deliver(
        self,
        key: str,
        channel: Channel,
        now: datetime,
        content: bytes,
        summary: Mapping[str, str],
    ) -> Receipt:
        """Write one message unless its key was delivered before; runs off the event loop.

        Args:
            key: The message key; a key is delivered at most once.
            channel: Email or SMS: picks the folder and the file extension.
            now: When the message is written, for its file name and index line.
            content: The file's bytes.
            summary: The message's fields for its index line (see ``_summary``).

        Returns:
            The receipt; ``duplicate`` when the key had been delivered before.
        """
        provider_id = _provider_id(key)
        extension = "eml" if channel is Channel.email else "txt"
        relative = f"{channel.value}/{_stamp(now)}-{_safe_key(key)}.{extension}"
        marker = self._claim(key, relative)
        if marker is None:
            logger.info("outbox: %s %s was delivered before; not written again", channel, key)
            return Receipt(
                provider=PROVIDER,
                provider_id=provider_id,
                key=key,
                channel=channel,
                duplicate=True,
            )
        try:
            write_atomically(self.root / relative, content)
        except OSError:
            # Nothing was delivered (a full disk, say): let the activity's retry claim it again.
            marker.unlink(missing_ok=True)
            raise
        self._append_index(
            {
                "time": now.isoformat().replace("+00:00", "Z"),
                "key": key,
                "channel": channel.value,
                **summary,
                "file": relative,
                "provider_id": provider_id,
            }
        )
        logger.info("outbox: %s %s written to %s", channel, key, relative)
        return Receipt(provider=PROVIDER, provider_id=provider_id, key=key, channel=channel)

    def _claim(self, key: str, relative: str) -> Path | None:
        """Create the key's marker; None when another send (any process) created it first."""
        keys = self.root / KEYS_DIR
        keys.mkdir(parents=True, exist_ok=True)
        marker = keys / hashlib.sha256(key.encode()).hexdigest()
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        try:
            # For a person looking into .keys/; duplicates never need to read it.
            write_all(fd, f"{key}\n{relative}\n".encode())
        finally:
            os.close(fd)
        return marker

    def _append_index(self, entry: Mapping[str, str]) -> None:
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        # One O_APPEND write per line, so lines from several processes never interleave; under
        # the index lock, so an erasure rewriting the index loses no line.
        with index_lock(self.root):
            fd = os.open(self.root / INDEX_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                write_all(fd, line)
            finally:
                os.close(fd)


def _summary(to: str, category: str, metadata: Mapping[str, str], **fields: str) -> dict[str, str]:
    """A message's index fields: recipient, ``fields`` (subject or preview), category, run."""
    return {
        "to": to,
        **fields,
        "category": str(category),
        "customer_id": metadata.get("customer_id", ""),
        "journey": metadata.get("journey", ""),
        "step": metadata.get("step", ""),
    }


def _eml(message: EmailMessage, now: datetime, provider_id: str) -> bytes:
    """Render ``message`` as an RFC 5322 message with text and HTML alternatives."""
    mail = MimeMessage(policy=policy.default)
    try:
        mail["From"] = Address(display_name=message.from_name, addr_spec=message.from_email)
    except (HeaderDefect, ValueError, IndexError) as exc:
        raise _rejected(
            PAYLOAD_REJECTED, message.key, "the sender address (KAIROS_FROM_EMAIL) is not valid"
        ) from exc
    mail["To"] = message.to
    mail["Subject"] = message.subject
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = f"<{provider_id}@outbox.kairos.local>"
    for name, value in message.headers.items():
        if name.lower() in _RAW_HEADERS and value.isascii():
            _set_raw_header(mail, name, value)
        elif name.lower() not in _STRUCTURAL_HEADERS:
            _set_header(mail, name, value)
    mail["X-Kairos-Key"] = _one_line(message.key)
    mail["X-Kairos-Category"] = message.category.value
    if message.categories:
        mail["X-Kairos-Categories"] = _one_line(", ".join(message.categories))
    for name, value in message.metadata.items():
        _set_header(mail, _metadata_header(name), value)
    mail.set_content(message.text)
    mail.add_alternative(message.html, subtype="html")
    # Headers set raw stay as they are; every other header is folded as the policy says.
    return mail.as_bytes(policy=_AS_WRITTEN)


def _sms_text(message: SmsMessage) -> str:
    lines = [
        f"To: {message.to}",
        f"Encoding: {message.encoding}",
        f"Segments: {message.segments}",
        f"Key: {_one_line(message.key)}",
        f"Category: {message.category.value}",
        *(f"{_metadata_header(k)}: {_one_line(v)}" for k, v in message.metadata.items()),
    ]
    return "\n".join(lines) + "\n\n" + message.body + "\n"


def _set_header(mail: MimeMessage, name: str, value: str) -> None:
    if name in mail:
        mail.replace_header(name, _one_line(value))
    else:
        mail[name] = _one_line(value)


def _set_raw_header(mail: MimeMessage, name: str, value: str) -> None:
    """A header written exactly as given, on one line: never folded into encoded words."""
    del mail[name]
    mail.set_raw(name, _one_line(value))


def _metadata_header(name: str) -> str:
    """``customer_id`` -> ``X-Kairos-Customer-Id``; ``kairos_key`` -> ``X-Kairos-Key``."""
    words = [word.capitalize() for word in re.split(r"[^A-Za-z0-9]+", name) if word]
    if words[:1] == ["Kairos"]:
        words = words[1:]
    return "-".join(["X-Kairos", *words])


def _one_line(value: str) -> str:
    # A line break in a header value would start a new header (header injection).
    return " ".join(value.splitlines())


def _provider_id(key: str) -> str:
    """The outbox's message id: derived from the key, so every duplicate reports the first's."""
    return "outbox-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _stamp(now: datetime) -> str:
    """A sortable UTC timestamp that is safe in file names on every OS (no colons)."""
    return now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"


def _safe_key(key: str) -> str:
    safe = _UNSAFE.sub("_", key).strip("._")[:_KEY_CHARS]
    if safe == key:
        return safe
    # Two keys that only differ in replaced characters must not share a file name.
    return f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _rejected(kind: str, key: str, what: str) -> ApplicationError:
    return provider_error(
        kind, f"Outbox rejected the message: {what}", {"provider": PROVIDER, "key": key}
    )
