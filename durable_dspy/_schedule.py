"""Schedule an LM or tool call of a durable run: a regular activity, or a local one in the low-latency mode.

Local activities run in the worker that runs the workflow, with no round trip through the server's task
queues, and their inputs (prompts, tool arguments) are not recorded in history, only their results. Each
local call is *flushed* (see ``_flush``): its result is in history before the run goes on, so a crash never
repeats a completed call. The trade-offs (see docs/configuration.md): no activity heartbeats (a worker that dies is
noticed by the workflow task timeout, 10 s by default; a hung call is cut by its start_to_close_timeout), calls
run on the workflow's own worker (no ``task_queue``), and history shows markers instead of activity events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError, FailureError

from . import _progress
from ._options import ActivityOptions
from ._payloads import check_request
from ._progress import Step


async def call(
    kind: str,
    name: str,
    activity: str,
    arg: Any,
    *,
    result_type: Any,
    options: ActivityOptions,
    what: str,
    fix: str,
    check: Callable[[Any], None] | None = None,
) -> tuple[Any, Step | None]:
    """One LM or tool call of a durable run, as a step of its progress: check the request's size, schedule the
    activity (``name`` is its summary), run ``check`` on the result, and return the result with its step.

    A Temporal cancellation becomes ``asyncio.CancelledError``: the run is being cancelled, and that must end it,
    not be caught as an error by code that catches ``Exception`` and carries on (BestOfN, Refine, Parallel,
    ReAct's tool-error observations). Any other failure is raised as ``ActivityError``, for the caller to map.

    Example:
        >>> result, step = await call("tool", "search", "app.search", ToolCall(arguments={"q": "x"}), ...)
    """
    state = _progress.current()
    limit = state.payload_limit if state else None  # known once the run has described its LMs
    if limit is not None:
        check_request(arg, workflow.payload_converter(), what=what, fix=fix, limit=limit)
    step = state.begin(kind, name) if state else None
    try:
        result = await execute(activity, arg, result_type=result_type, summary=name, options=options)
        if check is not None:
            check(result)
    except BaseException as err:
        if state and step:
            state.end(step, failed=True)
        if isinstance(err, ActivityError) and isinstance(err.cause, CancelledError):
            raise asyncio.CancelledError() from err
        raise
    if state and step:
        state.end(step)
    return result, step


async def execute(name: str, arg: Any, *, result_type: Any, summary: str, options: ActivityOptions) -> Any:
    state = _progress.current()
    kwargs = options.as_kwargs()
    if state is not None and state.local and options.task_queue is None:
        kwargs.pop("heartbeat_timeout", None)
        token = state.flusher.token()
        try:
            result = await workflow.execute_local_activity(
                name, arg, result_type=result_type, summary=summary, activity_id=token, **kwargs
            )
        except FailureError as err:
            failure = _as_activity_error(err, name, token)
            if not isinstance(failure.cause, CancelledError):
                # A failure is recorded too: a run that fails now while the flush signal is on its way would
                # have its completion refused by the server (new events), and the call would run again.
                await state.flusher.commit(token)
            raise failure from failure.cause
        await state.flusher.commit(token)
        return result
    return await workflow.execute_activity(name, arg, result_type=result_type, summary=summary, **kwargs)


def _as_activity_error(err: FailureError, name: str, activity_id: str) -> ActivityError:
    """A local activity fails with its cause itself (ApplicationError, TimeoutError, CancelledError); callers
    handle calls of both kinds as ``ActivityError`` with that cause, as a regular activity fails."""
    if isinstance(err, ActivityError):
        return err
    failure = ActivityError(
        f"Local activity {name} failed",
        scheduled_event_id=0,
        started_event_id=0,
        identity="",
        activity_type=name,
        activity_id=activity_id,
        retry_state=None,
    )
    failure.__cause__ = err
    return failure
