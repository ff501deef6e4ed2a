"""Schedule an LM call for a durable run: a regular activity, or a local one in the low-latency mode.

Local activities run in the worker that runs the workflow, with no round trip through the server's task
queues. The trade-offs (see docs/configuration.md): their results are recorded in history only when the workflow
task completes or heartbeats (every 80% of the workflow task timeout, 8 s by default) — consecutive local
calls share one workflow task, so calls completed since the last heartbeat run again after a crash —, they do
not heartbeat (a hung call is cut only by its timeout), and they cannot go to another task queue.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from . import _progress
from ._options import ActivityOptions

_LOCAL_UNSUPPORTED = ("heartbeat_timeout", "task_queue")


async def execute(name: str, arg: Any, *, result_type: Any, summary: str, options: ActivityOptions) -> Any:
    state = _progress.current()
    kwargs = options.as_kwargs()
    if state is not None and state.local:
        for key in _LOCAL_UNSUPPORTED:
            kwargs.pop(key, None)
        return await workflow.execute_local_activity(name, arg, result_type=result_type, summary=summary, **kwargs)
    return await workflow.execute_activity(name, arg, result_type=result_type, summary=summary, **kwargs)
