"""DSPy callbacks in durable runs: each handler fires once per real event, not again on every replay.

A run's workflow code runs again from the start whenever a worker rebuilds the run from its history (after a
restart, a cache eviction, or in a replay test), and DSPy's callbacks (``dspy.settings.callbacks`` and each
module's own) fire inside that code. For the length of a run they are wrapped: while Temporal replays history the
handlers are skipped, and call ids are derived from the run id and the event's position in the run, so a start
fired before a worker restart and the end fired after it carry the same id.

The LM call itself happens in the ``durable_dspy.lm.call`` activity: the worker LM's own callbacks
(``dspy.LM(..., callbacks=[...])``) fire there, around the provider request, once per attempt.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import dspy
from temporalio import workflow

logger = logging.getLogger("durable_dspy.callbacks")

_NAMESPACE = uuid.UUID("6f1c1b9e-5d4b-4f7e-9d0a-2b8c1f3e7a51")


class CallIds:
    """Deterministic call ids for one run: the n-th callback event of a run gets the same id in every replay."""

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._count = 0
        self._ids: dict[str, str] = {}

    def of(self, dspy_call_id: str) -> str:
        found = self._ids.get(dspy_call_id)
        if found is None:
            self._count += 1
            found = uuid.uuid5(_NAMESPACE, f"{self._run_id}/{self._count}").hex
            self._ids[dspy_call_id] = found
        return found


class ReplaySafeCallback:
    """Forwards a callback's ``on_*`` handlers, except while the run replays its history."""

    def __init__(self, callback: Any, ids: CallIds) -> None:
        self.callback = callback
        self._ids = ids

    def __getattr__(self, name: str) -> Any:
        handler = getattr(self.callback, name)  # AttributeError as for the callback itself
        if not (name.startswith("on_") and callable(handler)):
            return handler
        return self._forward(handler)

    def _forward(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*, call_id: str, **kwargs: Any) -> Any:
            call_id = self._ids.of(call_id)  # counted on replay too, so ids stay in step
            if workflow.unsafe.is_replaying():
                return None
            return handler(call_id=call_id, **kwargs)

        return forward


def replay_safe(callbacks: Iterable[Any], ids: CallIds) -> list[Any]:
    return [cb if isinstance(cb, ReplaySafeCallback) else ReplaySafeCallback(cb, ids) for cb in callbacks]


def wrap_program(program: dspy.Module, ids: CallIds) -> None:
    """Make the program's own module-level callbacks replay-safe (its instance is private to this run)."""
    for _, module in program.named_sub_modules():  # the program itself first, each module once
        if getattr(module, "callbacks", None):
            module.callbacks = replay_safe(module.callbacks, ids)


def lm_start(lm: Any, messages: Any, kwargs: dict[str, Any]) -> str:
    """In the LM activity: the worker LM's own ``on_lm_start`` handlers, as DSPy would call them."""
    call_id = uuid.uuid4().hex
    for callback in getattr(lm, "callbacks", None) or []:
        inputs = {"prompt": None, "messages": messages, **kwargs}
        _safely(callback.on_lm_start, call_id=call_id, instance=lm, inputs=inputs)
    return call_id


def lm_end(lm: Any, call_id: str, outputs: Any, exception: BaseException | None) -> None:
    for callback in getattr(lm, "callbacks", None) or []:
        _safely(callback.on_lm_end, call_id=call_id, outputs=outputs, exception=exception)


def _safely(handler: Callable[..., Any], **kwargs: Any) -> None:
    try:
        handler(**kwargs)
    except Exception:  # DSPy's rule: a broken callback never breaks the call
        logger.warning("callback %s failed", getattr(handler, "__qualname__", handler), exc_info=True)
