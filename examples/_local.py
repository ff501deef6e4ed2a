"""What lets each example run on its own: an LM to use, and a worker in this process.

With OPENAI_API_KEY set the examples use openai/gpt-4o-mini (OPENAI_API_BASE is honoured); otherwise the offline
scripted LM from durable_dspy.testing, whose answers are placeholders. The worker connects per Temporal's
environment configuration (TEMPORAL_ADDRESS, ...) and otherwise starts the embedded Temporal dev server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import dspy
from temporalio.client import Client

import durable_dspy


def example_lm() -> dspy.BaseLM:
    if os.environ.get("OPENAI_API_KEY"):
        print("LM: openai/gpt-4o-mini")
        return dspy.LM("openai/gpt-4o-mini")
    from durable_dspy.testing import ScriptedLMServer

    server = ScriptedLMServer().start()  # a daemon thread: it ends with the process
    print(
        "LM: no OPENAI_API_KEY, so the offline scripted LM (durable_dspy.testing.ScriptedLMServer): placeholder answers"
    )
    return dspy.LM("openai/scripted", api_base=server.url + "/v1", api_key="scripted", cache=False)


@contextlib.asynccontextmanager
async def local_worker(lm: dspy.BaseLM) -> AsyncIterator[Client]:
    """Serve every durable program imported so far while the block runs; yields a client of the same server."""
    stop = asyncio.Event()
    ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
    serving = asyncio.ensure_future(
        durable_dspy.serve_async(lm=lm, stop=stop, on_ready=lambda worker: ready.set_result(worker.client))
    )
    await asyncio.wait({ready, serving}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        serving.result()  # raises why the worker could not start
        raise RuntimeError("the worker stopped before it was ready")
    try:
        yield ready.result()
    finally:
        stop.set()
        await serving
