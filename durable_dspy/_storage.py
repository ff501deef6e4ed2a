"""A local-filesystem driver for Temporal's external payload storage: large payloads in files, references in history.

Files are content-addressed (named by the SHA-256 of the stored bytes), written atomically and never deleted by
durable_dspy. The client and every worker must see the same directory (a shared volume for several hosts).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from ._errors import DurableDSPyError

__all__ = ["LocalFileStorage", "StoredPayloadError"]

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class StoredPayloadError(DurableDSPyError, LookupError):
    """An externally stored payload is missing or damaged."""


class LocalFileStorage(StorageDriver):
    """Stores payloads as files under ``directory``.

    Example:
        >>> ExternalStorage(drivers=[LocalFileStorage("/shared/payloads")], payload_size_threshold=256 * 1024)
    """

    def __init__(self, directory: str | os.PathLike[str], *, name: str = "durable-dspy-local-file") -> None:
        self.directory = Path(directory)
        self._name = name

    def name(self) -> str:
        return self._name

    def type(self) -> str:
        return "durable-dspy-local-file"

    async def store(self, context: StorageDriverStoreContext, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        return await asyncio.to_thread(lambda: [self._store(p) for p in payloads])

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return await asyncio.to_thread(lambda: [self._retrieve(c) for c in claims])

    def _path(self, digest: str) -> Path:
        return self.directory / digest[:2] / f"{digest}.bin"

    def _store(self, payload: Payload) -> StorageDriverClaim:
        data = payload.SerializeToString()
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, path)  # atomic: a reader never sees a partial file
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return StorageDriverClaim(claim_data={"sha256": digest})

    def _retrieve(self, claim: StorageDriverClaim) -> Payload:
        digest = claim.claim_data.get("sha256", "")
        if not _DIGEST.match(digest):  # the claim comes from history: never let it name an arbitrary path
            raise StoredPayloadError(f"Malformed external payload reference {dict(claim.claim_data)!r}.")
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoredPayloadError(
                f"Externally stored payload {digest} is not in {self.directory}. The client and every worker must "
                "use the same external storage directory, and its files must be kept while runs reference them."
            ) from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoredPayloadError(f"Externally stored payload {path} is damaged (its SHA-256 does not match).")
        return Payload.FromString(data)
