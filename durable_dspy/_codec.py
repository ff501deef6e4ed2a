"""Optional payload codecs: compression above a size threshold, and AES-GCM encryption with a worker-held key.

Prompts, LM answers and tool results are stored in Temporal's history. Compression keeps large ones under
Temporal's payload limit; encryption keeps them unreadable in the server's database. Both are Temporal
``PayloadCodec``\\ s, so the client and every worker must use the same ones (``configure_payloads`` on both).
A user's own codec is kept and chained: compression runs first (on the plain bytes), then the user's codec,
then encryption (whose output would not compress).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverter,
    DefaultFailureConverterWithEncodedAttributes,
    ExternalStorage,
    PayloadCodec,
    StorageDriver,
)

from ._errors import DurableDSPyError

__all__ = [
    "COMPRESSED_ENCODING",
    "ENCRYPTED_ENCODING",
    "KEY_ENV",
    "ChainCodec",
    "CompressionCodec",
    "EncryptionCodec",
    "EncryptionKeyError",
    "configure_payloads",
]

COMPRESSED_ENCODING = b"binary/zlib"
ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ENV = "DURABLE_DSPY_ENCRYPTION_KEY"
DEFAULT_COMPRESSION_THRESHOLD = 32 * 1024
DEFAULT_STORAGE_THRESHOLD = 256 * 1024
_KEY_ID = "encryption-key-id"
_NONCE_BYTES = 12


class EncryptionKeyError(DurableDSPyError, ValueError):
    """The encryption key is missing or malformed, or a payload was encrypted with a key this process lacks."""


class CompressionCodec(PayloadCodec):
    """zlib-compresses payloads of at least ``threshold`` bytes, when that makes them smaller.

    Example:
        >>> DataConverter(payload_codec=CompressionCodec(threshold=64 * 1024))
    """

    def __init__(self, threshold: int = DEFAULT_COMPRESSION_THRESHOLD, level: int = 6) -> None:
        if threshold < 0:
            raise ValueError(f"CompressionCodec threshold must be >= 0 bytes, got {threshold}.")
        self.threshold = threshold
        self.level = level

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._compress(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decompress(p) for p in payloads]

    def _compress(self, payload: Payload) -> Payload:
        size = payload.ByteSize()
        if size < self.threshold:
            return payload
        data = zlib.compress(payload.SerializeToString(), self.level)
        if len(data) >= size:
            return payload
        return Payload(metadata={"encoding": COMPRESSED_ENCODING}, data=data)

    @staticmethod
    def _decompress(payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != COMPRESSED_ENCODING:
            return payload
        return Payload.FromString(zlib.decompress(payload.data))


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).hexdigest()[:16].encode()


def _parse_key(text: str, *, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise EncryptionKeyError(
            f"{source} is not valid base64. Generate a key with "
            '`python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"`.'
        ) from None
    if len(key) not in (16, 24, 32):
        raise EncryptionKeyError(f"{source} decodes to {len(key)} bytes; AES-GCM needs 16, 24 or 32 (32 recommended).")
    return key


class EncryptionCodec(PayloadCodec):
    """AES-GCM encryption of every payload. The first key encrypts; every key decrypts (for key rotation).

    Payloads carry the id of the key (a hash prefix, not the key) that encrypted them.

    Example:
        >>> codec = EncryptionCodec.from_env()  # DURABLE_DSPY_ENCRYPTION_KEY=<base64 of 32 random bytes>
    """

    def __init__(self, key: bytes, *, previous_keys: Sequence[bytes] = ()) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:  # pragma: no cover - depends on the environment
            raise EncryptionKeyError(
                "Payload encryption needs the `cryptography` package: pip install 'durable-dspy[crypto]'."
            ) from None
        keys = [key, *previous_keys]
        for candidate in keys:
            if len(candidate) not in (16, 24, 32):
                raise EncryptionKeyError(f"AES-GCM keys are 16, 24 or 32 bytes long, got {len(candidate)}.")
        self._key_id = _key_id(key)
        self._cipher = AESGCM(key)
        self._ciphers = {_key_id(k): AESGCM(k) for k in keys}

    @classmethod
    def from_env(cls, name: str = KEY_ENV) -> EncryptionCodec:
        """Keys from the environment: base64, comma-separated, the first one encrypting."""
        value = os.environ.get(name, "")
        if not value.strip():
            raise EncryptionKeyError(
                f"Payload encryption is on but ${name} is not set. Set it to the same base64 key (32 random bytes) "
                "on the client and on every worker."
            )
        keys = [_parse_key(part, source=f"${name}") for part in value.split(",") if part.strip()]
        return cls(keys[0], previous_keys=keys[1:])

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(p) for p in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(_NONCE_BYTES)
        data = nonce + self._cipher.encrypt(nonce, payload.SerializeToString(), None)
        return Payload(metadata={"encoding": ENCRYPTED_ENCODING, _KEY_ID: self._key_id}, data=data)

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCRYPTED_ENCODING:
            return payload
        key_id = payload.metadata.get(_KEY_ID, b"")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(k.decode() for k in self._ciphers)
            raise EncryptionKeyError(
                f"A payload was encrypted with key id {key_id.decode(errors='replace')!r}, which this process does "
                f"not have (it has {known}). Give the client and every worker the same ${KEY_ENV} (old keys after "
                "the current one, comma-separated, while runs that used them are open)."
            )
        data = payload.data
        return Payload.FromString(cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], None))


class ChainCodec(PayloadCodec):
    """Several codecs as one: encode applies them in order, decode in reverse order."""

    def __init__(self, codecs: Sequence[PayloadCodec]) -> None:
        self.codecs = list(codecs)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        result = list(payloads)
        for codec in self.codecs:
            result = await codec.encode(result)
        return result

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        result = list(payloads)
        for codec in reversed(self.codecs):
            result = await codec.decode(result)
        return result


def _flatten(codec: PayloadCodec | None) -> list[PayloadCodec]:
    if codec is None:
        return []
    if isinstance(codec, ChainCodec):
        return [inner for c in codec.codecs for inner in _flatten(c)]
    return [codec]


def encryption_codec(setting: bool | str | bytes | EncryptionCodec | None) -> EncryptionCodec | None:
    """The codec an ``encryption=`` setting asks for (None for none); True reads ``$DURABLE_DSPY_ENCRYPTION_KEY``."""
    if setting is None or setting is False:
        return None
    if isinstance(setting, EncryptionCodec):
        return setting
    if setting is True:
        return EncryptionCodec.from_env()
    if isinstance(setting, str):
        return EncryptionCodec(_parse_key(setting, source="encryption key"))
    return EncryptionCodec(setting)


def _storage(
    setting: StorageDriver | ExternalStorage | str | os.PathLike[str] | None, threshold: int
) -> ExternalStorage | None:
    if setting is None:
        return None
    if isinstance(setting, ExternalStorage):
        return setting
    if isinstance(setting, StorageDriver):
        return ExternalStorage(drivers=[setting], payload_size_threshold=threshold)
    from ._storage import LocalFileStorage

    return ExternalStorage(drivers=[LocalFileStorage(Path(setting))], payload_size_threshold=threshold)


def configure_payloads(
    converter: DataConverter | None = None,
    *,
    compression: bool | int = False,
    encryption: bool | str | bytes | EncryptionCodec | None = None,
    external_storage: StorageDriver | ExternalStorage | str | os.PathLike[str] | None = None,
    external_storage_threshold: int = DEFAULT_STORAGE_THRESHOLD,
    encrypt_failures: bool = True,
) -> DataConverter:
    """A data converter with durable_dspy's optional payload handling added to ``converter``'s own.

    Idempotent: codecs and storage already present are not added twice, so the client and a worker built from
    its config can both apply it.

    Args:
        converter: the converter to extend (Temporal's default when omitted); its codec is kept, chained.
        compression: compress payloads of at least this many bytes (True: 32 KiB).
        encryption: True reads keys from ``$DURABLE_DSPY_ENCRYPTION_KEY``; or a base64 key, raw key bytes, or a
            codec.
        external_storage: a directory (local filesystem driver), a Temporal ``StorageDriver``, or an
            ``ExternalStorage``. Payloads of at least ``external_storage_threshold`` bytes go there and history
            keeps a reference.
        encrypt_failures: with encryption, also encode failure messages and stack traces (they can quote
            prompts), using Temporal's ``DefaultFailureConverterWithEncodedAttributes``.

    Example:
        >>> converter = configure_payloads(compression=True, encryption=True, external_storage="/shared/payloads")
        >>> client = await Client.connect("localhost:7233", data_converter=converter, plugins=[plugin])
    """
    base = converter if converter is not None else DataConverter.default
    existing = _flatten(base.payload_codec)
    codecs = list(existing)
    if compression is not False and not any(isinstance(c, CompressionCodec) for c in codecs):
        threshold = DEFAULT_COMPRESSION_THRESHOLD if compression is True else int(compression)
        codecs.insert(0, CompressionCodec(threshold))
    encryptor = encryption_codec(encryption)
    if encryptor is not None and not any(isinstance(c, EncryptionCodec) for c in codecs):
        codecs.append(encryptor)
    changes: dict[str, Any] = {}
    if codecs != existing:
        changes["payload_codec"] = codecs[0] if len(codecs) == 1 else ChainCodec(codecs)
    if base.external_storage is None:
        storage = _storage(external_storage, external_storage_threshold)
        if storage is not None:
            changes["external_storage"] = storage
    encrypted = any(isinstance(c, EncryptionCodec) for c in codecs)
    if encrypted and encrypt_failures and base.failure_converter_class is DefaultFailureConverter:
        changes["failure_converter_class"] = DefaultFailureConverterWithEncodedAttributes
    return dataclasses.replace(base, **changes) if changes else base
