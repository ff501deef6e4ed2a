"""Payload codecs (compression, AES-GCM encryption, chaining a user's codec) and the local external-storage driver;
with encryption, prompts and answers are not readable in the Temporal server's database."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from durable_dspy._codec import (
    COMPRESSED_ENCODING,
    ENCRYPTED_ENCODING,
    KEY_ENV,
    ChainCodec,
    CompressionCodec,
    EncryptionCodec,
    EncryptionKeyError,
    configure_payloads,
)
from durable_dspy._devserver import DevServer
from durable_dspy._storage import LocalFileStorage, StoredPayloadError
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import running_worker
from tests.programs import faults

KEY = base64.b64encode(b"k" * 32).decode()
OTHER_KEY = base64.b64encode(b"o" * 32).decode()


def payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=text.encode())


async def roundtrip(codec: PayloadCodec, payloads: Sequence[Payload]) -> tuple[list[Payload], list[Payload]]:
    encoded = await codec.encode(payloads)
    return encoded, await codec.decode(encoded)


class Reverse(PayloadCodec):
    """A user's own codec: reverses the bytes, marking them."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [Payload(metadata={"encoding": b"reversed"}, data=p.SerializeToString()[::-1]) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [Payload.FromString(p.data[::-1]) if p.metadata.get("encoding") == b"reversed" else p for p in payloads]


async def test_compression_applies_above_the_threshold_only() -> None:
    codec = CompressionCodec(threshold=1024)
    small, large = payload("short"), payload("abc " * 10_000)
    incompressible = Payload(metadata={"encoding": b"binary/plain"}, data=os.urandom(50_000))
    encoded, decoded = await roundtrip(codec, [small, large, incompressible])
    assert encoded[0] == small and encoded[2] == incompressible
    assert encoded[1].metadata["encoding"] == COMPRESSED_ENCODING and encoded[1].ByteSize() < 1000
    assert decoded == [small, large, incompressible]


async def test_encryption_roundtrip_hides_the_plaintext() -> None:
    codec = EncryptionCodec(base64.b64decode(KEY))
    [encoded], [decoded] = await roundtrip(codec, [payload("the secret prompt")])
    assert encoded.metadata["encoding"] == ENCRYPTED_ENCODING
    assert b"secret prompt" not in encoded.SerializeToString()
    assert decoded == payload("the secret prompt")
    [again] = await codec.encode([payload("the secret prompt")])
    assert again.data != encoded.data, "a fresh nonce per payload"


async def test_a_payload_from_an_unknown_key_names_the_fix() -> None:
    [encoded] = await EncryptionCodec(base64.b64decode(OTHER_KEY)).encode([payload("x")])
    with pytest.raises(EncryptionKeyError) as info:
        await EncryptionCodec(base64.b64decode(KEY)).decode([encoded])
    assert "which this process does not have" in str(info.value)
    assert KEY_ENV in str(info.value)


async def test_key_rotation_decrypts_with_previous_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    [old] = await EncryptionCodec(base64.b64decode(OTHER_KEY)).encode([payload("before rotation")])
    monkeypatch.setenv(KEY_ENV, f"{KEY},{OTHER_KEY}")
    rotated = EncryptionCodec.from_env()
    assert await rotated.decode([old]) == [payload("before rotation")]
    [new] = await rotated.encode([payload("after")])
    assert await EncryptionCodec(base64.b64decode(KEY)).decode([new]) == [payload("after")]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", f"${KEY_ENV} is not set"),
        ("not base64!", "is not valid base64"),
        (base64.b64encode(b"short").decode(), "decodes to 5 bytes; AES-GCM needs 16, 24 or 32"),
    ],
)
def test_bad_keys_are_reported_with_the_fix(monkeypatch: pytest.MonkeyPatch, value: str, message: str) -> None:
    monkeypatch.setenv(KEY_ENV, value)
    with pytest.raises(EncryptionKeyError) as info:
        EncryptionCodec.from_env()
    assert message in str(info.value)


async def test_configure_payloads_chains_the_users_codec_and_is_idempotent() -> None:
    user = Reverse()
    converter = configure_payloads(DataConverter(payload_codec=user), compression=16, encryption=KEY)
    codec = converter.payload_codec
    assert isinstance(codec, ChainCodec)
    assert [type(c) for c in codec.codecs] == [CompressionCodec, Reverse, EncryptionCodec]
    assert converter.failure_converter_class is DefaultFailureConverterWithEncodedAttributes
    again = configure_payloads(converter, compression=True, encryption=KEY)
    assert again is converter, "applying it twice (client, then a worker built from its config) changes nothing"
    [encoded], [decoded] = await roundtrip(codec, [payload("chained " * 50)])
    assert encoded.metadata["encoding"] == ENCRYPTED_ENCODING
    assert decoded == payload("chained " * 50)


def test_configure_payloads_without_options_keeps_the_converter() -> None:
    base = DataConverter.default
    assert configure_payloads(base) is base


async def test_local_file_storage_roundtrip_and_errors(tmp_path: Path) -> None:
    driver = LocalFileStorage(tmp_path)
    big = payload("x" * 100_000)
    [claim] = await driver.store(StorageDriverStoreContext(), [big])
    [again] = await driver.store(StorageDriverStoreContext(), [big])
    assert claim == again and len(list(tmp_path.rglob("*.bin"))) == 1, "content-addressed"
    assert await driver.retrieve(StorageDriverRetrieveContext(), [claim]) == [big]
    with pytest.raises(StoredPayloadError, match="Malformed external payload reference"):
        await driver.retrieve(StorageDriverRetrieveContext(), [StorageDriverClaim({"sha256": "../../etc/passwd"})])
    next(tmp_path.rglob("*.bin")).unlink()
    with pytest.raises(StoredPayloadError, match="must use the same external storage directory"):
        await driver.retrieve(StorageDriverRetrieveContext(), [claim])


def database_bytes(server: DevServer) -> bytes:
    """The dev server's SQLite database, with its write-ahead log."""
    assert server.log_path is not None
    db = server.log_path.with_suffix("")
    return b"".join(path.read_bytes() for path in db.parent.glob(db.name + "*") if path.name != server.log_path.name)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_encryption_keeps_prompts_out_of_the_servers_database(
    client: Client,
    temporal_server: DevServer,
    lm_server: ScriptedLMServer,
    task_queue: str,
    lm: Any,
    monkeypatch: pytest.MonkeyPatch,
    encrypted: bool,
) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    config = client.config()
    if encrypted:
        monkeypatch.setenv(KEY_ENV, KEY)  # the worker's (and here the client's) environment
        config["data_converter"] = configure_payloads(client.data_converter, encryption=True)
    coded = Client(**config)
    async with running_worker(coded, task_queue, lm, registry=faults.registry):
        prediction = await faults.OneCall.run(coded, question=f"What is {marker}?", task_queue=task_queue)
    assert prediction.answer
    assert any(marker in str(r.body) for r in lm_server.requests), "the worker decrypted the prompt for the LM"
    stored = database_bytes(temporal_server)
    assert (marker.encode() in stored) is not encrypted
