"""Payload conversion: pydantic JSON (DSPy's types are pydantic models), with one process-wide adapter cache.

Temporal builds a new payload converter for every workflow run; the stock pydantic converter would then rebuild
a ``TypeAdapter`` for every payload type in every run (about 2 ms per type). Sharing the cache keeps that to once
per process.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter, PydanticPayloadConverter

_type_adapter: functools._lru_cache_wrapper[TypeAdapter[Any]] = functools.lru_cache(maxsize=1024)(TypeAdapter)


class DurablePayloadConverter(PydanticPayloadConverter):
    """``PydanticPayloadConverter`` whose type adapters are shared by every run in the process."""

    def __init__(self) -> None:
        super().__init__()
        for converter in self.converters.values():
            if isinstance(converter, PydanticJSONPlainPayloadConverter):
                converter._type_adapter = _type_adapter


def warm_types(types: Iterable[Any]) -> None:
    """Build the shared type adapters of ``types`` now (the warm-up before a worker polls)."""
    for tp in types:
        _type_adapter(tp)
