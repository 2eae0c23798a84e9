"""Signed unsubscribe tokens: only what we signed, only until it expires."""

from __future__ import annotations

import base64
import json
import re

import pytest

from kairos.messages.unsubscribe import TokenError, make_token, read_token, unsubscribe_url

SECRET = "test-secret"
NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def test_roundtrip() -> None:
    token = make_token("c-42", secret=SECRET, expires_at=NOW + 60)
    claim = read_token(token, secret=SECRET, now=NOW)
    assert (claim.customer_id, claim.categories, claim.expires_at) == (
        "c-42",
        ("marketing",),
        NOW + 60,
    )


def test_categories_travel_in_the_token() -> None:
    token = make_token("c-42", secret=SECRET, expires_at=NOW + 60, categories=("news", "tips"))
    assert read_token(token, secret=SECRET, now=NOW).categories == ("news", "tips")


def test_token_is_url_safe_and_carries_only_id_categories_and_expiry() -> None:
    token = make_token("c-42", secret=SECRET, expires_at=NOW + 60)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token)
    payload = token.split(".")[0]
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert set(body) == {"c", "k", "x"}


def test_another_customer_id_with_the_old_signature_is_tampered() -> None:
    token = make_token("c-42", secret=SECRET, expires_at=NOW + 60)
    other = make_token("c-43", secret=SECRET, expires_at=NOW + 60)
    forged = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(TokenError) as caught:
        read_token(forged, secret=SECRET, now=NOW)
    assert caught.value.reason == "tampered"


def test_wrong_secret_is_tampered() -> None:
    token = make_token("c-42", secret="another-secret", expires_at=NOW + 60)
    with pytest.raises(TokenError) as caught:
        read_token(token, secret=SECRET, now=NOW)
    assert caught.value.reason == "tampered"


def test_expired_at_the_expiry_second() -> None:
    token = make_token("c-42", secret=SECRET, expires_at=NOW + 60)
    assert read_token(token, secret=SECRET, now=NOW + 59).customer_id == "c-42"
    with pytest.raises(TokenError) as caught:
        read_token(token, secret=SECRET, now=NOW + 60)
    assert caught.value.reason == "expired"


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "!!!.???", "eyJjIjoiYyJ9.c2hvcnQ", "x" * 5000 + ".y"],
)
def test_malformed(token: str) -> None:
    with pytest.raises(TokenError) as caught:
        read_token(token, secret=SECRET, now=NOW)
    assert caught.value.reason == "malformed"


def test_url_is_public_url_slash_u_slash_token() -> None:
    url = unsubscribe_url("https://lumo.example/", "c-42", secret=SECRET, now=NOW)
    assert url.startswith("https://lumo.example/u/")
    claim = read_token(url.rsplit("/", 1)[1], secret=SECRET, now=NOW + 59 * 86400)
    assert claim.expires_at == NOW + 60 * 86400


@pytest.mark.parametrize(
    ("customer_id", "secret", "categories"),
    [("", SECRET, ("marketing",)), ("c-42", "", ("marketing",)), ("c-42", SECRET, ())],
)
def test_refuses_to_sign_empty_values(
    customer_id: str, secret: str, categories: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError):
        make_token(customer_id, secret=secret, expires_at=NOW, categories=categories)
