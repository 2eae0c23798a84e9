"""What Temporal stores is encrypted per customer, and a forgotten customer's key is gone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.converter import ActivitySerializationContext, WorkflowSerializationContext
from temporalio.testing import WorkflowEnvironment

from kairos.runtime.codec import (
    COMPRESSION,
    ENCODING,
    KEY_ID,
    ZLIB,
    CustomerCodec,
    StaticKeys,
    customer_of,
)
from kairos.runtime.config import Settings
from kairos.runtime.contract import JourneyResult, journey_workflow_id
from kairos.runtime.crypto import KeyUnavailable, MasterKeys
from kairos.store.facade import Store
from kairos.store.keys import DatabaseKeys
from tests.conftest import make_kairos, running_worker
from tests.helpers import finish, started, timezone_at

pytestmark = pytest.mark.timeout(120)

NEW_MASTER = "f3b1c9d2e8a7465b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f"


def _plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


def _payloads(message: Message) -> Iterator[Payload]:
    """Every payload anywhere in a history event, but search attributes (plain by design) and
    the markers of ``workflow.patched`` (the SDK writes a patch id there, nothing else)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None or field.name == "search_attributes":
            continue
        if field.name == "marker_recorded_event_attributes" and value.marker_name == "core_patch":
            continue
        if field.message_type.GetOptions().map_entry:
            values = list(value.values())
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            if isinstance(item, Message):
                yield from _payloads(item)


def _workflow(workflow_id: str) -> WorkflowSerializationContext:
    return WorkflowSerializationContext(namespace="default", workflow_id=workflow_id)


def test_the_customer_is_read_from_a_journey_runs_workflow_id_only() -> None:
    assert customer_of("journey:welcome:ada:1") == "ada"
    assert customer_of("journey:welcome:a:b:c:12") == "a:b:c"
    assert customer_of("journey:welcome:ada") is None
    assert customer_of("event-schedule:ada") is None
    assert customer_of(None) is None


async def test_each_customer_has_a_key_of_their_own_and_payloads_name_it() -> None:
    keys = StaticKeys()
    codec = CustomerCodec(keys)
    ada = codec.with_context(_workflow("journey:welcome:ada:1"))
    bo = codec.with_context(_workflow("journey:welcome:bo:1"))
    [for_ada] = await ada.encode([_plain('"ada@example.com"')])
    [for_bo] = await bo.encode([_plain('"ada@example.com"')])
    [installation] = await codec.encode([_plain('"nobody"')])

    assert for_ada.metadata["encoding"] == ENCODING
    assert b"ada@example.com" not in for_ada.data
    ids = {p.metadata[KEY_ID].decode() for p in (for_ada, for_bo, installation)}
    assert len(ids) == 3 and "installation" in ids
    # Decoding needs no context: the payload names its key.
    assert (await codec.decode([for_ada]))[0].data == b'"ada@example.com"'
    # A payload recorded before encryption decodes as it is.
    assert (await codec.decode([_plain("1")]))[0].data == b"1"
    # An activity of Ada's run encrypts under her key too.
    activity = ActivitySerializationContext(
        namespace="default", workflow_id="journey:welcome:ada:1", workflow_type="JourneyWorkflow",
        activity_type="deliver", activity_task_queue="q", activity_id="1", is_local=False,
    )  # fmt: skip
    [again] = await codec.with_context(activity).encode([_plain("2")])
    assert again.metadata[KEY_ID] == for_ada.metadata[KEY_ID]


async def test_a_payload_that_was_altered_or_whose_key_was_deleted_is_refused() -> None:
    keys = StaticKeys()
    ada = CustomerCodec(keys).with_context(_workflow("journey:welcome:ada:1"))
    [sealed] = await ada.encode([_plain('"secret"')])
    altered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + b"\0")
    with pytest.raises(KeyUnavailable, match="does not decrypt"):
        await ada.decode([altered])
    keys.keys.clear()
    with pytest.raises(KeyUnavailable, match="is not known"):
        await ada.decode([sealed])


async def test_a_large_payload_is_compressed_before_it_is_encrypted() -> None:
    ada = CustomerCodec(StaticKeys()).with_context(_workflow("journey:welcome:ada:1"))
    plan = ('{"steps": [' + ", ".join(['{"kind": "wait", "next": null}'] * 100) + "]}").encode()
    [sealed] = await ada.encode([Payload(metadata={"encoding": b"json/plain"}, data=plan)])
    [small] = await ada.encode([_plain('"short"')])

    assert sealed.metadata[COMPRESSION] == ZLIB and COMPRESSION not in small.metadata
    assert len(sealed.data) < len(plan) / 5
    assert (await ada.decode([sealed]))[0].data == plan
    # Metadata altered to hide the compression (or claim it) does not decrypt.
    stripped = Payload(metadata={k: v for k, v in sealed.metadata.items() if k != COMPRESSION})
    stripped.data = sealed.data
    with pytest.raises(KeyUnavailable, match="does not decrypt"):
        await ada.decode([stripped])


async def test_a_master_key_rotation_rewraps_every_data_key(
    settings: Settings, store: Store
) -> None:
    for customer in ("ada", "bo"):
        await store.identify(customer, {"email": f"{customer}@example.com"})
    rows = await store.database.fetch_all("SELECT id, wrapped, master_key_id FROM data_keys")
    assert len(rows) == 2
    new_only = MasterKeys(NEW_MASTER)
    with pytest.raises(KeyUnavailable, match="KAIROS_MASTER_KEY_PREVIOUS"):
        new_only.unwrap(rows[0]["id"], rows[0]["master_key_id"], rows[0]["wrapped"])
    before = {r["id"]: store.master.unwrap(r["id"], r["master_key_id"], r["wrapped"]) for r in rows}

    rotating = MasterKeys(NEW_MASTER, [settings.master_key])
    assert await DatabaseKeys(store.database, rotating).rotate() == (2, 0)
    assert await DatabaseKeys(store.database, rotating).rotate() == (0, 2)

    rows = await store.database.fetch_all("SELECT id, wrapped, master_key_id FROM data_keys")
    assert {r["master_key_id"] for r in rows} == {new_only.current.id}
    after = {r["id"]: new_only.unwrap(r["id"], r["master_key_id"], r["wrapped"]) for r in rows}
    assert after == before


async def test_a_journey_history_holds_no_personal_data_and_is_unreadable_once_forgotten(
    ts_env: WorkflowEnvironment, settings: Settings, store: Store
) -> None:
    now = await ts_env.get_current_time()
    profile = {
        "email": "adalinda@example.com",
        "first_name": "Adalinda",
        "timezone": timezone_at(now, 12),
        "signed_up_at": now.isoformat(),
        "marketing_opt_in": True,
    }
    kairos = make_kairos(ts_env.client, settings, store)
    async with running_worker(ts_env.client, settings, store):
        await kairos.emit("c-ada", "signed_up", profile, event_id="signup-ada")
        handle = await started(
            ts_env.client, journey_workflow_id("welcome", "c-ada", 1), JourneyResult
        )
        await finish(ts_env, handle)

    history = await handle.fetch_history()
    raw = history.to_json().encode() + b"".join(e.SerializeToString() for e in history.events)
    assert b"adalinda@example.com" not in raw and b"Adalinda" not in raw
    payloads = [p for event in history.events for p in _payloads(event)]
    key = await store.database.fetch_one(
        "SELECT id FROM data_keys WHERE customer_id = %s", ("c-ada",)
    )
    assert key is not None
    assert payloads and {p.metadata.get(KEY_ID, b"").decode() for p in payloads} == {key["id"]}
    decoded = await ts_env.client.data_converter.payload_codec.decode(payloads)  # type: ignore[union-attr]
    assert any(b"adalinda@example.com" in p.data for p in decoded)

    await kairos.forget("c-ada")
    assert (
        await store.database.fetch_all("SELECT id FROM data_keys WHERE customer_id IS NOT NULL")
        == []
    )
    with pytest.raises(KeyUnavailable, match="has been deleted"):
        await ts_env.client.data_converter.payload_codec.decode(payloads)  # type: ignore[union-attr]
