"""Keys and ciphers for what Kairos writes to Temporal: pure functions, no I/O.

Two levels of keys (envelope encryption):

* a **data key** per customer (AES-256, random) encrypts that customer's payloads; it is stored
  in PostgreSQL only *wrapped*, and deleting it (``kairos forget``) makes every payload it
  encrypted unreadable for good (crypto-shredding);
* the **master key** (the key-encryption key, ``KAIROS_MASTER_KEY``) wraps the data keys. It
  lives in configuration, never in the database, so a copy of the database alone decrypts
  nothing. Previous master keys (``KAIROS_MASTER_KEY_PREVIOUS``) still unwrap the keys they
  wrapped until ``kairos db rotate-keys`` has wrapped every key under the current one.

A master key is any string of at least 32 random bytes (``openssl rand -hex 32``); the AES key
is derived from it with HKDF-SHA256, and named by a fingerprint so each wrapped key says which
master key wrapped it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# Secrets shorter than this (in bytes), or with fewer distinct characters, are refused.
MIN_SECRET_BYTES = 32
MIN_DISTINCT_CHARACTERS = 10
NONCE_BYTES = 12
INSTALLATION_KEY = "installation"
_WRAP_CONTEXT = b"kairos.data-key.v1:"


class KeyUnavailable(Exception):
    """A data key cannot be used: deleted (its customer was forgotten), or wrapped by a master
    key this process does not have."""


def secret_problem(name: str, value: str) -> str | None:
    """Why ``value`` is not usable as a secret (HMAC or master key), or None.

    Randomness cannot be measured from one value; what can be refused is a short value or one
    with few distinct characters (a word, a repeated character).
    """
    size = len(value.encode())
    if size < MIN_SECRET_BYTES or len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return (
            f"{name} is too weak ({size} bytes): use at least {MIN_SECRET_BYTES} random bytes, "
            "such as the output of `openssl rand -hex 32`"
        )
    return None


@dataclass(frozen=True)
class MasterKey:
    """One key-encryption key, derived from a configured secret."""

    id: str
    aead: AESGCM

    @classmethod
    def derive(cls, secret: str) -> MasterKey:
        material = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"kairos.master-key.v1"
        ).derive(secret.encode())
        fingerprint = hmac.new(material, b"kairos.master-key.id", hashlib.sha256).hexdigest()
        return cls(id=fingerprint[:16], aead=AESGCM(material))


class MasterKeys:
    """The current master key (wraps new data keys) and previous ones (still unwrap)."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        self.current = MasterKey.derive(current)
        self.known = {self.current.id: self.current}
        for secret in previous:
            key = MasterKey.derive(secret)
            self.known.setdefault(key.id, key)

    def wrap(self, key_id: str, data_key: bytes) -> tuple[str, bytes]:
        """``data_key`` encrypted under the current master key: (master key id, blob)."""
        nonce = os.urandom(NONCE_BYTES)
        blob = nonce + self.current.aead.encrypt(nonce, data_key, _WRAP_CONTEXT + key_id.encode())
        return self.current.id, blob

    def unwrap(self, key_id: str, master_key_id: str, blob: bytes) -> bytes:
        """The data key ``key_id``. Raises KeyUnavailable when its master key is not known (or
        the blob was not wrapped for this key id)."""
        master = self.known.get(master_key_id)
        if master is None:
            raise KeyUnavailable(
                f"data key {key_id} is wrapped by master key {master_key_id}, which this process "
                "does not have: set KAIROS_MASTER_KEY (or KAIROS_MASTER_KEY_PREVIOUS) to it"
            )
        try:
            return master.aead.decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _WRAP_CONTEXT + key_id.encode()
            )
        except InvalidTag:
            raise KeyUnavailable(f"data key {key_id} does not unwrap: it was altered") from None


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def new_key_id() -> str:
    """A random data key id. Random, not derived from the customer id: a customer created
    again with the same id gets a new key, and the old histories stay unreadable."""
    return "k" + secrets.token_hex(12)


def encrypt(data_key: bytes, key_id: str, plaintext: bytes) -> bytes:
    """AES-256-GCM with a random nonce, bound to ``key_id``: nonce + ciphertext + tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(data_key).encrypt(nonce, plaintext, key_id.encode())


def decrypt(data_key: bytes, key_id: str, blob: bytes) -> bytes:
    """The plaintext of :func:`encrypt`. Raises KeyUnavailable when it does not authenticate."""
    try:
        return AESGCM(data_key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], key_id.encode())
    except (InvalidTag, ValueError):
        raise KeyUnavailable(f"a payload under data key {key_id} does not decrypt") from None
