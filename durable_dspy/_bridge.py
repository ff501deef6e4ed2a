"""Run sync DSPy code inside a workflow's event loop, one greenlet per sync call chain.

The sync code runs in a child greenlet. Where it needs an activity's result it hands the awaitable to its
parent (the workflow coroutine) with :func:`await_`, which awaits it on the workflow loop and switches back
with the value. This is the technique SQLAlchemy's asyncio layer uses. A paused greenlet can only be resumed
on the thread that created it, so the worker must keep every activation of a run on one thread
(see ``_executor.RunAffinityExecutor``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet

from ._errors import WorkflowUsageError

T = TypeVar("T")


class _BridgeGreenlet(greenlet.greenlet):
    """Marks greenlets that run sync code on behalf of a workflow coroutine."""


def in_bridge() -> bool:
    """True when the caller is sync code running under :func:`run_sync`."""
    return isinstance(greenlet.getcurrent(), _BridgeGreenlet)


def await_(awaitable: Awaitable[T]) -> T:
    """Block the sync caller until ``awaitable`` completes on the workflow loop, and return its result.

    Example:
        >>> result = await_(workflow.execute_activity("tool", arg, start_to_close_timeout=timedelta(seconds=9)))
    """
    current = greenlet.getcurrent()
    if not isinstance(current, _BridgeGreenlet):
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()
        raise WorkflowUsageError(
            "A sync DSPy call (an LM call or a durable tool) was made from async workflow code. "
            "In `aforward`, use the async forms: `await module.acall(...)`, `await tool.acall(...)`; "
            "or write the program with a sync `forward`."
        )
    parent = current.parent
    assert parent is not None
    return parent.switch(awaitable)  # type: ignore[no-any-return]


async def run_sync(fn: Callable[..., T], /, *args: Any, context: contextvars.Context | None = None, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in a child greenlet, awaiting on its behalf whatever it passes to ``await_``.

    ``context`` is the contextvars context the code runs in (a copy of the caller's by default): a new
    greenlet otherwise starts with an empty one and every ``dspy.context(...)`` setting would vanish.
    """
    child = _BridgeGreenlet(fn, parent=greenlet.getcurrent())
    child.gr_context = context if context is not None else contextvars.copy_context()
    pending: Any = child.switch(*args, **kwargs)
    while not child.dead:
        try:
            value = await pending
        except BaseException as exc:  # cancellation and eviction must unwind the sync code's context managers
            pending = child.throw(exc)
        else:
            pending = child.switch(value)
    return pending  # type: ignore[no-any-return]
