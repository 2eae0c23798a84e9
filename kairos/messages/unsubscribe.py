"""Signed, expiring unsubscribe tokens and the links that carry them.

A token is ``<payload>.<signature>``, both unpadded URL-safe base64. The payload is compact JSON
holding only what the unsubscribe endpoint needs: the customer id, the consent categories to
withdraw and the expiry (Unix seconds) — never an email address or phone number. The signature
is HMAC-SHA256 over a domain-separated copy of the encoded payload, so a token minted for
something else with the same secret is never accepted here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_TTL_SECONDS = 60 * 86400
_DOMAIN = b"kairos.unsubscribe.v1."
_MAX_TOKEN_LENGTH = 2048  # refuse to decode anything a real link could not carry
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")

Reason = Literal["malformed", "tampered", "expired"]


class TokenError(ValueError):
    """An unsubscribe token that cannot be honoured. ``reason`` says which way it failed."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True)
class UnsubscribeClaim:
    """What a valid token asks for: withdraw ``categories`` consent for ``customer_id``."""

    customer_id: str
    categories: tuple[str, ...]
    expires_at: int


def make_token(
    customer_id: str,
    *,
    secret: str,
    expires_at: int,
    categories: tuple[str, ...] = ("marketing",),
) -> str:
    """Sign an unsubscribe token for ``customer_id``, valid until ``expires_at`` (Unix seconds).

    Raises:
        ValueError: An empty customer id, secret or category list.
    """
    if not customer_id:
        raise ValueError("an unsubscribe token needs a customer id")
    if not secret:
        raise ValueError("an unsubscribe token needs a non-empty secret")
    if not categories or not all(categories):
        raise ValueError("an unsubscribe token needs at least one consent category")
    body = {"c": customer_id, "k": list(categories), "x": int(expires_at)}
    payload = _encode(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{payload}.{_encode(_sign(payload, secret))}"


def read_token(token: str, *, secret: str, now: int) -> UnsubscribeClaim:
    """Verify ``token`` and return its claim.

    The signature is checked (in constant time) before the payload is parsed, so nothing
    unsigned is ever interpreted.

    Raises:
        TokenError: ``malformed`` (not a token), ``tampered`` (signature does not match: altered
            or signed with another secret) or ``expired``.
    """
    payload, signature = _split(token)
    if not hmac.compare_digest(signature, _sign(payload, secret)):
        raise TokenError("tampered", "unsubscribe token signature does not match")
    claim = _claim(payload)
    if now >= claim.expires_at:
        raise TokenError("expired", f"unsubscribe token expired at {claim.expires_at}")
    return claim


def unsubscribe_url(
    public_url: str,
    customer_id: str,
    *,
    secret: str,
    now: int,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    categories: tuple[str, ...] = ("marketing",),
) -> str:
    """The one-click unsubscribe link ``<public_url>/u/<token>`` for a customer."""
    token = make_token(
        customer_id, secret=secret, expires_at=now + ttl_seconds, categories=categories
    )
    return f"{public_url.rstrip('/')}/u/{token}"


def _sign(payload: str, secret: str) -> bytes:
    return hmac.new(secret.encode(), _DOMAIN + payload.encode(), hashlib.sha256).digest()


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    if not _B64.match(text):
        raise TokenError("malformed", "unsubscribe token is not URL-safe base64")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise TokenError("malformed", f"unsubscribe token does not decode: {exc}") from None


def _split(token: str) -> tuple[str, bytes]:
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH:
        raise TokenError("malformed", "not an unsubscribe token")
    payload, dot, signature = token.partition(".")
    if not dot or not payload or not signature or "." in signature:
        raise TokenError("malformed", "an unsubscribe token is <payload>.<signature>")
    _decode(payload)
    raw_signature = _decode(signature)
    if len(raw_signature) != hashlib.sha256().digest_size:
        raise TokenError("malformed", "unsubscribe token signature has the wrong length")
    return payload, raw_signature


def _claim(payload: str) -> UnsubscribeClaim:
    # Reaching here means the payload carries our signature, so a bad shape is our own bug or
    # an old format, not an attack; it is still reported rather than trusted.
    try:
        body: Any = json.loads(_decode(payload))
        customer_id, categories, expires_at = body["c"], body["k"], body["x"]
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed", "unsubscribe token payload is unreadable") from None
    if (
        not isinstance(customer_id, str)
        or not isinstance(categories, list)
        or not all(isinstance(c, str) for c in categories)
        or not isinstance(expires_at, int)
    ):
        raise TokenError("malformed", "unsubscribe token payload has the wrong shape")
    return UnsubscribeClaim(customer_id, tuple(categories), expires_at)
