"""The data converter every Kairos process uses: pydantic payloads, encrypted per customer.

Everything Kairos writes to Temporal (workflow inputs and results, signals, activity inputs and
results, queries, summaries, failure messages) goes through :class:`CustomerCodec`. It picks
the key from the serialization context: a journey run's workflow id names the customer
(``journey:<journey>:<customer>:<run_no>``), and an activity's context names its run, so a
customer's payloads are encrypted with that customer's data key. Anything that belongs to no
customer uses the installation's key. Each encrypted payload names its key id in its metadata,
so decoding needs no context: whoever has the key reads it, and once ``kairos forget`` has
deleted a customer's key, nobody does.

Payloads of more than :data:`COMPRESS_ABOVE` bytes are compressed (zlib) before they are
encrypted, which the metadata says: a run's input carries its compiled plan, mostly repeated
keys and defaults, and histories are what Temporal stores and ships. Payloads that are not
encrypted (histories recorded before encryption) decode as they are.

    client = await Client.connect(target, data_converter=data_converter(keys))
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Protocol

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)

from kairos.runtime import crypto
from kairos.runtime.crypto import KeyUnavailable

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
CIPHER = "encryption-cipher"
AES_GCM = b"AES256-GCM"
COMPRESSION = "compression"
ZLIB = b"zlib"
# Smaller payloads (a send's outcome, a signal) gain little and would cost the time anyway.
COMPRESS_ABOVE = 512
_JOURNEY_PREFIX = "journey:"


class KeyRing(Protocol):
    """Where the codec gets data keys: the customer store (:class:`kairos.store.keys.
    DatabaseKeys`) in every process, fixed keys (:class:`StaticKeys`) for recorded histories."""

    async def customer_key(self, customer_id: str) -> tuple[str, bytes]:
        """The id and key that encrypt this customer's payloads.

        Raises:
            KeyUnavailable: The customer is not in the store (never was, or forgotten).
        """
        ...

    async def installation_key(self) -> tuple[str, bytes]:
        """The id and key for payloads that belong to no customer."""
        ...

    async def key(self, key_id: str) -> bytes:
        """Data key ``key_id``. Raises KeyUnavailable when it was deleted (or never was)."""
        ...


def customer_of(workflow_id: str | None) -> str | None:
    """The customer a journey run's workflow id names; None for any other workflow id."""
    if not workflow_id or not workflow_id.startswith(_JOURNEY_PREFIX):
        return None
    _journey, colon, rest = workflow_id[len(_JOURNEY_PREFIX) :].partition(":")
    customer, colon2, run_no = rest.rpartition(":")
    if not (colon and colon2 and customer and run_no.isdigit()):
        return None
    return customer


def is_encrypted(payload: Payload) -> bool:
    return payload.metadata.get("encoding") == ENCODING


def key_id_of(payload: Payload) -> str | None:
    """The data key an encrypted payload names; None for a payload that is not encrypted."""
    if not is_encrypted(payload):
        return None
    return payload.metadata.get(KEY_ID, b"").decode() or None


def encrypt_payload(key_id: str, key: bytes, payload: Payload) -> Payload:
    plain = payload.SerializeToString()
    metadata = {"encoding": ENCODING, KEY_ID: key_id.encode(), CIPHER: AES_GCM}
    if len(plain) > COMPRESS_ABOVE:
        packed = zlib.compress(plain, 6)
        if len(packed) < len(plain):
            plain = packed
            metadata[COMPRESSION] = ZLIB
    compressed = COMPRESSION in metadata
    return Payload(metadata=metadata, data=crypto.encrypt(key, _bound(key_id, compressed), plain))


def decrypt_payload(key: bytes, payload: Payload) -> Payload:
    key_id = key_id_of(payload) or ""
    compressed = payload.metadata.get(COMPRESSION) == ZLIB
    plain = crypto.decrypt(key, _bound(key_id, compressed), payload.data)
    return Payload.FromString(zlib.decompress(plain) if compressed else plain)


def _bound(key_id: str, compressed: bool) -> str:
    """What the ciphertext is bound to: its key id, and whether it is compressed (so metadata
    altered to say otherwise does not decrypt)."""
    return f"{key_id}+zlib" if compressed else key_id


class CustomerCodec(PayloadCodec, WithSerializationContext):
    """AES-256-GCM under the data key of the customer the context names (see the module)."""

    def __init__(self, keys: KeyRing, customer_id: str | None = None) -> None:
        self.keys = keys
        self.customer_id = customer_id

    def with_context(self, context: SerializationContext) -> CustomerCodec:
        workflow_id = getattr(context, "workflow_id", None)
        return CustomerCodec(self.keys, customer_of(workflow_id))

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if all(is_encrypted(p) for p in payloads):
            return list(payloads)
        if self.customer_id is None:
            key_id, key = await self.keys.installation_key()
        else:
            key_id, key = await self.keys.customer_key(self.customer_id)
        return [p if is_encrypted(p) else encrypt_payload(key_id, key, p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt; raises KeyUnavailable for a payload whose key was deleted."""
        return [await self._decode(p) for p in payloads]

    async def _decode(self, payload: Payload) -> Payload:
        key_id = key_id_of(payload)
        if key_id is None:
            return payload
        return decrypt_payload(await self.keys.key(key_id), payload)


def data_converter(keys: KeyRing) -> DataConverter:
    """The one data converter of every Kairos client, worker, replayer and test."""
    return DataConverter(
        payload_converter_class=PydanticPayloadConverter,
        payload_codec=CustomerCodec(keys),
        # Failure messages can quote what failed: they are encrypted like payloads.
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


class StaticKeys:
    """Keys held in memory: for recorded histories (their keys are fixtures, not secrets)
    and for tests that need no customer store. New customers get a new key on first use."""

    def __init__(self, keys: dict[str, bytes] | None = None) -> None:
        self.keys: dict[str, bytes] = dict(keys or {})
        self.customers: dict[str, str] = {}

    async def customer_key(self, customer_id: str) -> tuple[str, bytes]:
        key_id = self.customers.get(customer_id)
        if key_id is None:
            key_id = self.customers[customer_id] = crypto.new_key_id()
            self.keys[key_id] = crypto.new_data_key()
        return key_id, self.keys[key_id]

    async def installation_key(self) -> tuple[str, bytes]:
        if crypto.INSTALLATION_KEY not in self.keys:
            self.keys[crypto.INSTALLATION_KEY] = crypto.new_data_key()
        return crypto.INSTALLATION_KEY, self.keys[crypto.INSTALLATION_KEY]

    async def key(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise KeyUnavailable(f"data key {key_id} is not known") from None

    def to_json(self) -> str:
        return json.dumps({k: v.hex() for k, v in sorted(self.keys.items())}, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> StaticKeys:
        return cls({k: bytes.fromhex(v) for k, v in json.loads(text).items()})


__all__ = [
    "CustomerCodec",
    "KeyRing",
    "KeyUnavailable",
    "StaticKeys",
    "customer_of",
    "data_converter",
]
