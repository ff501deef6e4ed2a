"""Temporal's payload size limit, checked before a payload is sent, so an oversized one fails once, by name.

Temporal refuses a payload above 2 MB (the server's ``limit.blobSize.error``). Left to the SDK, an oversized
activity result fails with a generic ``PayloadsTooLarge`` error and is retried (the tool runs again, the LM is
paid again), and an oversized activity input fails the workflow task forever. These checks raise a
non-retryable ``PayloadTooLargeError`` naming the predictor or tool instead.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

from temporalio import activity
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import DataConverter, PayloadConverter
from temporalio.exceptions import ApplicationError

logger = logging.getLogger("durable_dspy.payloads")

PAYLOAD_LIMIT = 2 * 1024 * 1024
"""Temporal's default payload size limit in bytes (``limit.blobSize.error``)."""

PAYLOAD_TOO_LARGE = "PayloadTooLargeError"
SDK_PAYLOADS_TOO_LARGE = "PayloadsTooLarge"
"""The type of the SDK's own failure when it refuses an oversized payload (it retries it unless told not to)."""


def json_size_bound(value: Any) -> float:
    """An upper bound of ``value``'s JSON size, without encoding it (``inf`` for types it cannot bound).

    The checks run on every LM call and tool call; a bound far under the limit (the usual case) spares encoding
    the payload once more just to measure it. A character takes at most 6 bytes in JSON (``\\uXXXX``).
    """
    if isinstance(value, str):
        return 6 * len(value) + 2
    if value is None or isinstance(value, bool | int | float):
        return len(repr(value)) + 2
    if isinstance(value, dict):
        return 2 + sum(json_size_bound(k) + json_size_bound(v) + 2 for k, v in value.items())
    if isinstance(value, list | tuple):
        return 2 + sum(json_size_bound(item) + 1 for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_size_bound({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return math.inf


def size_of(payloads: Sequence[Payload]) -> int:
    """Bytes the payloads take on the wire."""
    return Payloads(payloads=list(payloads)).ByteSize()


def _too_large(what: str, size: int, limit: int, fix: str) -> ApplicationError:
    return ApplicationError(
        f"{what} is {size / 1024 / 1024:.1f} MB, above Temporal's payload limit of {limit / 1024 / 1024:.1f} MB "
        f"(it would be stored in the run's history). {fix} Or enable payload compression or external payload "
        "storage on the client and the worker (DurableDSPyPlugin(compression=True) or external_storage=...).",
        {"size": size, "limit": limit},
        type=PAYLOAD_TOO_LARGE,
        non_retryable=True,
    )


def offloads(converter: DataConverter | None, limit: int = PAYLOAD_LIMIT) -> bool:
    """True when external storage takes every payload big enough to hit the limit out of history."""
    storage = converter.external_storage if converter is not None else None
    return storage is not None and storage.payload_size_threshold <= limit


def _worker_converter() -> DataConverter | None:
    try:
        return activity.client().data_converter
    except RuntimeError:  # no client in this activity context (e.g. ActivityEnvironment without one)
        return None


async def check_result(value: Any, *, what: str, fix: str, limit: int = PAYLOAD_LIMIT) -> None:
    """In an activity: raise a non-retryable ``PayloadTooLargeError`` if ``value`` would exceed the limit.

    The size is the one Temporal would see: after the worker's payload codec (compression shrinks it), and
    nothing counts when the worker stores large payloads externally.
    """
    if json_size_bound(value) <= limit:
        return
    converter = _worker_converter()
    if offloads(converter, limit):
        return  # before encoding: nothing to measure
    payloads = activity.payload_converter().to_payloads([value])
    size = size_of(payloads)
    if size <= limit:
        return
    if converter is not None and converter.payload_codec is not None:
        try:
            size = size_of(await converter.payload_codec.encode(payloads))
        except Exception:  # a codec that cannot run here: leave the final say to the SDK's own check
            logger.debug("payload codec failed while measuring %s", what, exc_info=True)
            return
        if size <= limit:
            return
    raise _too_large(what, size, limit, fix)


def request_limit(converter: DataConverter | None) -> int | None:
    """The limit workflow code should check activity inputs against, or None when it cannot know the real size.

    Workflow code measures unencoded payloads: that is the stored size unless a codec changes it (compression,
    a user's codec) or external storage takes large payloads out of history. Encryption adds a few dozen bytes.
    """
    if converter is None or offloads(converter):
        return None
    from ._codec import EncryptionCodec, _flatten

    if any(not isinstance(codec, EncryptionCodec) for codec in _flatten(converter.payload_codec)):
        return None
    return PAYLOAD_LIMIT - 1024


def worker_request_limit() -> int | None:
    """``request_limit`` for the converter of the worker running the current activity (for the describe activity)."""
    return request_limit(_worker_converter())


def check_request(value: Any, converter: PayloadConverter, *, what: str, fix: str, limit: int = PAYLOAD_LIMIT) -> None:
    """In workflow code: raise ``PayloadTooLargeError`` before scheduling an activity whose input is too large.

    Workflow code cannot run the (async) codec, so this measures the unencoded payload: call it only when no
    codec or external storage is configured, or with a ``limit`` that accounts for them.
    """
    if json_size_bound(value) <= limit:
        return
    size = size_of(converter.to_payloads([value]))
    if size > limit:
        raise _too_large(what, size, limit, fix)
