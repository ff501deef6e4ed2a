"""``serve()``: a worker for everything registered, on a configured Temporal or on the embedded dev server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from dspy.clients.base_lm import BaseLM
from temporalio.client import Client
from temporalio.worker import Worker

from ._client import default_task_queue
from ._connect import connect_config
from ._plugin import DurableDSPyPlugin
from ._protocol import DEFAULT_LM_KEY
from ._registry import Registry, default_registry

logger = logging.getLogger("durable_dspy.serve")

# After a worker dies, its runs wait this long on its sticky queue before any worker may pick them up.
STICKY_TIMEOUT = timedelta(seconds=2)


@contextlib.asynccontextmanager
async def _temporal(
    address: str | None, namespace: str | None, embedded_db: str | Path | None, ui: bool, plugin: DurableDSPyPlugin
) -> AsyncIterator[Client]:
    config = connect_config(address, namespace=namespace)
    if config is not None:
        yield await Client.connect(**config, plugins=[plugin])
        return
    from ._devserver import DevServer, default_db_path

    server = DevServer(db_filename=embedded_db or default_db_path(), ui=ui)
    await asyncio.to_thread(server.start)
    try:
        logger.info("embedded Temporal dev server at %s (UI: %s)", server.address, server.ui_url)
        yield await Client.connect(server.address, plugins=[plugin])
    finally:
        await asyncio.to_thread(server.stop)


def _warm(plugin: DurableDSPyPlugin) -> None:
    """Resolve lazy work (litellm's import, model capability lookups) before polling, not in the first run."""
    for program in plugin.registry.programs():
        with contextlib.suppress(Exception):
            plugin.lm_activities.info(program.name, DEFAULT_LM_KEY)


async def serve_async(
    *,
    task_queue: str | None = None,
    lm: BaseLM | None = None,
    address: str | None = None,
    namespace: str | None = None,
    registry: Registry | None = None,
    embedded_db: str | Path | None = None,
    ui: bool = False,
    graceful_shutdown_timeout: timedelta = timedelta(seconds=30),
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Worker], Any] | None = None,
    **worker_options: Any,
) -> None:
    """Run a worker until SIGINT/SIGTERM (or ``stop`` is set), then let in-flight activities finish.

    Connects per :func:`durable_dspy.connect` rules; with no address configured it starts the embedded
    Temporal dev server (persisting to ``embedded_db``) and stops it on exit. ``worker_options`` go to
    ``temporalio.worker.Worker`` (e.g. ``max_concurrent_activities``).
    """
    plugin = DurableDSPyPlugin(lm=lm, registry=registry if registry is not None else default_registry)
    await asyncio.to_thread(_warm, plugin)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    async with _temporal(address, namespace, embedded_db, ui, plugin) as client:
        worker_options.setdefault("sticky_queue_schedule_to_start_timeout", STICKY_TIMEOUT)
        worker = Worker(
            client,
            task_queue=task_queue or default_task_queue(),
            graceful_shutdown_timeout=graceful_shutdown_timeout,
            **worker_options,
        )
        async with worker:
            logger.info("worker polling task queue %s", worker.task_queue)
            if on_ready is not None:
                on_ready(worker)
            await stop.wait()
            logger.info("shutting down: waiting up to %s for in-flight activities", graceful_shutdown_timeout)


def serve(**kwargs: Any) -> None:
    """Run a durable DSPy worker in the foreground; blocks until Ctrl-C or SIGTERM. Arguments as ``serve_async``.

    Example:
        >>> durable_dspy.serve(task_queue="rag", lm=dspy.LM("openai/gpt-4o-mini"))
    """
    asyncio.run(serve_async(**kwargs))
