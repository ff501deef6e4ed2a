"""Worker side of the flush (see ``_flush``): local activities of durable runs signal their run as they run."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from ._flush import FLUSH_ACTIVITY, FLUSH_SIGNAL, TOKEN_PREFIX

logger = logging.getLogger("durable_dspy.flush")


@activity.defn(name=FLUSH_ACTIVITY)
async def flush_activity() -> None:
    """A no-op local activity: its flush signal (sent by ``FlushInterceptor``) is all it is for."""


async def _signal(info: activity.Info) -> None:
    # The client retries the signal RPC on transient errors itself (with backoff).
    handle = activity.client().get_workflow_handle(info.workflow_id or "", run_id=info.workflow_run_id)
    await handle.signal(FLUSH_SIGNAL, info.activity_id)


class _Inbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if not (info.is_local and info.activity_id.startswith(TOKEN_PREFIX)):
            return await self.next.execute_activity(input)
        # Sent while the call runs; the server holds it until the current workflow task completes.
        signal = asyncio.ensure_future(_signal(info))
        try:
            result = await self.next.execute_activity(input)
        except asyncio.CancelledError:
            signal.cancel()  # the run is being cancelled (or the worker stops): it does not wait for a flush
            raise
        except BaseException:
            await self._sent(signal, info)  # a failed call is flushed too (see _schedule.execute)
            raise
        await self._sent(signal, info)
        return result

    @staticmethod
    async def _sent(signal: asyncio.Future[None], info: activity.Info) -> None:
        try:
            await signal
        except Exception as exc:
            # Without the signal the run would wait forever: fail this attempt, so it is retried (and signals).
            logger.warning("flush signal for %s failed: %s", info.activity_id, exc)
            raise RuntimeError(f"Could not signal the run that {info.activity_type} completed: {exc}") from exc


class FlushInterceptor(Interceptor):
    """Worker side: a local activity of a durable run signals its run once it runs (see the module docstring)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next)
