"""Crash-safe local activities: record each call's result in history before the next call starts.

A local activity's result (a marker) reaches history only when its workflow task completes, and a workflow
that goes straight on to its next local call keeps that task open: after a crash, every call completed since
the task began would run again. So after each local call the run waits for a *flush* signal, which its activity
sends (see ``FlushInterceptor``) while it runs: the signal is buffered by the server until the workflow task
completes, so waiting for it completes the task, with the result in it, and the next task starts at once with
the signal. Cost: one small signal event per call; the signal is sent while the call runs, off its critical
path. The worker side (the interceptor and the no-op activity) is in ``_flush_worker``.

A signal that arrives *before* the call's result (the call outlived a workflow task heartbeat, or it is being
re-run after a crash, or retried after a backoff timer) proves nothing about the result: the run then flushes
with a no-op local activity, whose own signal comes after it. The decision depends only on the order of events
in history, so replay takes the same path.

Example:
    >>> token = state.flusher.token()          # in the workflow, before scheduling the call
    >>> await workflow.execute_local_activity(..., activity_id=token)
    >>> await state.flusher.commit(token)       # returns once the result is in history
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

FLUSH_SIGNAL = "durable_dspy.flush"
FLUSH_ACTIVITY = "durable_dspy.flush"
TOKEN_PREFIX = "durable_dspy.flush:"
_FLUSH_TIMEOUT = timedelta(seconds=30)


class Flusher:
    """Workflow side: hands out flush tokens and waits until a call's result is in history."""

    def __init__(self) -> None:
        self._count = 0
        self._received: set[str] = set()

    def token(self) -> str:
        """A new token, used as the local activity's id (deterministic: a counter)."""
        self._count += 1
        return f"{TOKEN_PREFIX}{self._count}"

    def received(self, token: str) -> None:
        """The flush signal handler."""
        self._received.add(token)

    async def commit(self, token: str) -> None:
        """Call right after the local activity with id ``token`` returned: wait until its result is recorded."""
        while token in self._received:  # came before the result: no proof; flush again with a no-op
            token = self.token()
            await workflow.execute_local_activity(
                FLUSH_ACTIVITY, activity_id=token, start_to_close_timeout=_FLUSH_TIMEOUT, summary="flush"
            )
        await workflow.wait_condition(lambda: token in self._received)
