"""``dspy.Parallel``, ``Module.batch`` and ``dspy.Evaluate`` inside a durable run: a fan-out on greenlets.

DSPy runs them on a thread pool (``ParallelExecutor``). Workflow code cannot use threads: each thread would call
the LM outside Temporal, and DSPy would swallow the failures. Inside a durable run every item instead runs in its
own bridge greenlet, all of them concurrently on the workflow loop, at most ``num_threads`` at a time, so the
items' LM and tool activities are scheduled together and the run waits for the slowest item, not their sum.
Results come back in input order; errors follow DSPy's own rules (``max_errors``, failed items as ``None``, the
``return_failed_examples`` bookkeeping); DSPy's straggler resubmission is left to Temporal's timeouts and retries.

The same applies to DSPy's async-to-sync tool conversion (a plain async tool in a sync ``ReAct`` with
``allow_tool_async_sync_conversion``): inside a durable run the coroutine is awaited on the workflow loop.

Both hooks patch DSPy's library code once, when this module is imported; outside a durable run DSPy behaves
exactly as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

from dspy.adapters.types.tool import Tool
from dspy.dsp.utils.settings import thread_local_overrides
from dspy.utils.callback_context import _bind_active_call_id
from dspy.utils.parallelizer import ParallelExecutor
from temporalio import workflow

from . import _bridge
from ._errors import WorkflowUsageError

logger = logging.getLogger("durable_dspy.parallel")

_UNSET = object()
CANCELLED_MESSAGE = "Execution cancelled due to errors or interruption."  # DSPy's own message


def _in_durable_run() -> bool:
    """True in a durable run's workflow code; raises if that code is async and cannot block."""
    if not workflow.in_workflow():
        return False
    if not _bridge.in_bridge():
        raise WorkflowUsageError(
            "dspy.Parallel, Module.batch and dspy.Evaluate are sync; they were called from async workflow code "
            "(aforward). In aforward, run items concurrently with "
            "`await asyncio.gather(*(module.acall(**inputs) for inputs in items))`, "
            "or write the program with a sync `forward`."
        )
    return True


def fan_out(executor: ParallelExecutor, function: Callable[[Any], Any], data: Sequence[Any]) -> list[Any]:
    """``ParallelExecutor.execute`` for sync code in a durable run (see the module docstring)."""
    items = list(data)
    wrapped = executor._wrap_function(_bind_active_call_id(function))  # DSPy's error counting and logging
    results: list[Any] = [_UNSET] * len(items)
    if executor.num_threads == 1:
        # DSPy's sequential mode: items in order, in the caller's own context, stopping at the error limit.
        for index, item in enumerate(items):
            if executor.cancel_jobs.is_set():
                break
            executor._process_outcome(results, index, wrapped(item))
    else:
        contexts = [_item_context() for _ in items]
        _bridge.await_(_gather(executor, wrapped, items, contexts, results))
    if executor.cancel_jobs.is_set():
        logger.warning(CANCELLED_MESSAGE)
        raise Exception(CANCELLED_MESSAGE)
    return [None if result is _UNSET else result for result in results]


def _item_context() -> contextvars.Context:
    """What one of DSPy's worker threads would see: the caller's settings, with a usage tracker of its own."""
    context = contextvars.copy_context()
    overrides = {**thread_local_overrides.get()}
    if overrides.get("usage_tracker"):
        overrides["usage_tracker"] = copy.deepcopy(overrides["usage_tracker"])
    context.run(thread_local_overrides.set, overrides)
    return context


async def _gather(
    executor: ParallelExecutor,
    wrapped: Callable[[Any], Any],
    items: list[Any],
    contexts: list[contextvars.Context],
    results: list[Any],
) -> None:
    slots = asyncio.Semaphore(max(1, executor.num_threads))
    tasks: list[asyncio.Task[None]] = []
    stopped = False

    async def run_item(index: int) -> None:
        nonlocal stopped
        async with slots:
            if executor.cancel_jobs.is_set():
                return
            outcome = await _bridge.run_sync(wrapped, items[index], context=contexts[index])
        # Outcomes are processed in completion order, as DSPy does; under Temporal that order is in the history.
        executor._process_outcome(results, index, outcome)
        if executor.cancel_jobs.is_set() and not stopped:
            # Too many errors: like DSPy, stop waiting for the rest (their activities are cancelled).
            stopped = True
            for task in tasks:
                if not task.done() and task is not asyncio.current_task():
                    task.cancel()

    tasks.extend(asyncio.ensure_future(run_item(index)) for index in range(len(items)))
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, asyncio.CancelledError) and stopped:
            continue
        if isinstance(outcome, BaseException):
            raise outcome


def _original(fn: Any) -> Any:
    """DSPy's own function, also when this module is imported again (its hooks record what they replaced)."""
    return getattr(fn, "_durable_dspy_original", fn)


_original_execute = _original(ParallelExecutor.execute)
_original_run_async_in_sync = _original(Tool._run_async_in_sync)


def _execute(self: ParallelExecutor, function: Callable[[Any], Any], data: Sequence[Any]) -> list[Any]:
    if _in_durable_run():
        return fan_out(self, function, data)
    results: list[Any] = _original_execute(self, function, data)
    return results


def _run_async_in_sync(self: Tool, coroutine: Any) -> Any:
    if workflow.in_workflow() and _bridge.in_bridge():
        # A plain async tool runs inline on the workflow loop: like a plain sync tool, it is not durable.
        return _bridge.await_(coroutine)
    return _original_run_async_in_sync(self, coroutine)


_execute._durable_dspy_original = _original_execute  # type: ignore[attr-defined]
_run_async_in_sync._durable_dspy_original = _original_run_async_in_sync  # type: ignore[attr-defined]


def install() -> None:
    """Route DSPy's thread-based helpers through the bridge inside durable runs (idempotent)."""
    ParallelExecutor.execute = _execute
    Tool._run_async_in_sync = _run_async_in_sync


install()
