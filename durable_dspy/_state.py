"""Compiled (optimized) program state, pinned per run.

``@durable_program(state="rag.json")`` loads a state saved by DSPy's ``program.save("rag.json")``. Every new
run uses the worker's current state and records its hash (and the state itself, when it fits the payload
budget) in its history, so a run resumed by a worker with a newer state keeps the prompts it started with.
Give older states too (``state=["v2.json", "v1.json"]``, current first) so that runs pinned to an old state
that did not fit in history can still be resumed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import DefinitionError

# A state larger than this is recorded by hash only; the worker must then know it (state=[..., old]).
STATE_IN_HISTORY_LIMIT = 256 * 1024

_cache: dict[tuple[str, float], CompiledState] = {}


@dataclass(frozen=True)
class CompiledState:
    hash: str
    data: dict[str, Any]
    source: str

    @functools.cached_property
    def fits_history(self) -> bool:
        return len(json.dumps(self.data)) <= STATE_IN_HISTORY_LIMIT


def state_hash(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON without DSPy's ``metadata`` (dependency versions), first 16 hex digits."""
    body = {key: val for key, val in data.items() if key != "metadata"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def _load(source: str | os.PathLike[str] | dict[str, Any]) -> CompiledState:
    if isinstance(source, dict):
        return CompiledState(state_hash(source), source, "<dict>")
    path = Path(source)
    try:
        key = (str(path.resolve()), path.stat().st_mtime)
    except OSError as exc:
        raise DefinitionError(
            f"Compiled state {str(path)!r} cannot be read ({exc}). Save it with program.save(path)."
        ) from exc
    if key not in _cache:
        # The workflow sandbox re-imports programs for each run; the file is read once per process.
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DefinitionError(f"Compiled state {str(path)!r} is not a JSON state saved by DSPy ({exc}).") from exc
        _cache[key] = CompiledState(state_hash(data), data, str(path))
    return _cache[key]


def load_states(state: Any) -> list[CompiledState]:
    """The states a program knows, current first."""
    if state is None:
        return []
    sources = state if isinstance(state, list | tuple) else [state]
    return [_load(source) for source in sources]


def for_program(data: dict[str, Any]) -> dict[str, Any]:
    """The state to load into a run's program: LMs are never loaded from state (they live on the worker)."""
    body = {key: val for key, val in data.items() if key != "metadata"}
    return {name: ({**val, "lm": None} if isinstance(val, dict) and "lm" in val else val) for name, val in body.items()}
