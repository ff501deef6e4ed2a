"""``serve()``: a worker for everything registered, on a configured Temporal or on the embedded dev server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from dspy.clients.base_lm import BaseLM
from temporalio.client import Client, Plugin
from temporalio.runtime import Runtime
from temporalio.worker import Worker

from ._client import default_task_queue, pollers
from ._connect import connect_config
from ._plugin import DurableDSPyPlugin
from ._registry import Registry, default_registry
from ._warmup import warm_up as warm_up_plugin

logger = logging.getLogger("durable_dspy.serve")

EMBEDDED_PORT = 7233
EMBEDDED_UI_PORT = 8233

# After a worker dies, its runs wait this long on its sticky queue before any worker may pick them up.
STICKY_TIMEOUT = timedelta(seconds=2)

# How long a new worker waits for the server to see its first poll before it reports ready anyway.
POLLER_WAIT = 5.0

# Threads for sync durable tools when the worker sets no max_concurrent_activities (DurableDSPyPlugin's default).
DEFAULT_ACTIVITY_THREADS = 32


@contextlib.asynccontextmanager
async def _temporal(
    config: dict[str, Any] | None,
    embedded_db: str | Path | None,
    ui: bool,
    embedded_port: int,
    plugins: Sequence[Plugin],
    runtime: Runtime | None,
) -> AsyncIterator[Client]:
    if config is not None:
        yield await Client.connect(**config, plugins=list(plugins), runtime=runtime)
        return
    from ._devserver import DevServer, default_db_path

    # Temporal's usual ports, so clients reach it as they would a local `temporal server start-dev` (0: any free one).
    server = DevServer(
        db_filename=embedded_db or default_db_path(),
        ui=ui,
        port=embedded_port or None,
        ui_port=(EMBEDDED_UI_PORT if embedded_port else None) if ui else None,
    )
    await asyncio.to_thread(server.start)
    try:
        logger.info("embedded Temporal dev server at %s (UI: %s)", server.address, server.ui_url)
        yield await Client.connect(server.address, plugins=list(plugins), runtime=runtime)
    finally:
        await asyncio.to_thread(server.stop)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` once; a second one gets the default behaviour (Ctrl-C again: stop now)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def first(sig: signal.Signals) -> None:
        logger.info("%s received: shutting down gracefully (send it again to stop now)", sig.name)
        for each in installed:
            loop.remove_signal_handler(each)
        installed.clear()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not on the main thread, or no signals on this platform: the caller stops us with `stop`.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, first, sig)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _until_polling(worker: Worker, *, timeout: float = POLLER_WAIT) -> None:
    """Wait until the worker passed Temporal's namespace check and the server has seen its first poll.

    ``Worker.is_running`` turns true before the first poll request leaves; a run started then would wait for
    it (and, on a new task queue, for the server to create the queue: tens of ms). A worker that fails the
    namespace check ends the ``async with`` block with its error, so this does not wait forever.
    """
    while not worker.is_running:
        await asyncio.sleep(0.02)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            if await _server_sees_poller(worker):
                return
        except Exception:  # e.g. no permission to describe task queues: being ready is all we know
            logger.debug("cannot describe task queue %s", worker.task_queue, exc_info=True)
            return
        await asyncio.sleep(0.01)
    logger.debug("task queue %s: no poll of ours seen after %.0f s; carrying on", worker.task_queue, timeout)


async def _server_sees_poller(worker: Worker) -> bool:
    # The active config: DurableDSPyPlugin adds the workflows, so the initial one has none even on a workflow worker.
    workflows = bool(worker.config(active_config=True).get("workflows"))
    identity = _identity(worker)
    return any(p.identity == identity for p in await pollers(worker.client, worker.task_queue, workflows=workflows))


def _identity(worker: Worker) -> str:
    return worker.config(active_config=True).get("identity") or worker.client.identity


def _write_health_file(path: Path, worker: Worker) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "pid": os.getpid(),
        "task_queue": worker.task_queue,
        "namespace": worker.client.namespace,
        "identity": _identity(worker),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info) + "\n")
    tmp.replace(path)  # atomic: a probe never reads half a file


async def serve_async(
    *,
    task_queue: str | None = None,
    lm: BaseLM | None = None,
    address: str | None = None,
    namespace: str | None = None,
    profile: str | None = None,
    registry: Registry | None = None,
    workflows: bool = True,
    activities: bool = True,
    plugins: Sequence[Plugin] = (),
    runtime: Runtime | None = None,
    embedded_db: str | Path | None = None,
    embedded_port: int = EMBEDDED_PORT,
    ui: bool = False,
    graceful_shutdown_timeout: timedelta = timedelta(seconds=30),
    health_file: str | Path | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Worker], Any] | None = None,
    compression: bool | int = False,
    encryption: Any = None,
    external_storage: Any = None,
    warm_up: bool = True,
    **worker_options: Any,
) -> None:
    """Run a worker until SIGINT/SIGTERM (or ``stop`` is set), then let in-flight activities finish.

    Connects per :func:`durable_dspy.connect` rules (``address``, ``namespace`` and ``profile`` override
    Temporal's environment configuration); with no address configured anywhere it starts the embedded Temporal
    dev server (persisting to ``embedded_db``) and stops it on exit.

    Args:
        task_queue: the queue to poll (default: the one ``Program.run`` uses when given none).
        lm: the worker's default LM; it and its credentials never leave this process.
        address, namespace, profile: where to connect; see :func:`durable_dspy.connect`.
        compression, encryption, external_storage: payload options, as for ``DurableDSPyPlugin``; clients need
            the same ones (``durable_dspy.connect(..., compression=...)``).
        registry: the programs and tools to serve (the default registry when omitted).
        workflows: run the programs' workflows (False for an LM/tool-activity worker).
        activities: run LM calls and durable tools (False for a workflow-only worker).
        plugins: more Temporal plugins for the client and worker, e.g.
            ``durable_dspy.contrib.opentelemetry.TracingPlugin()``.
        runtime: Temporal's ``Runtime`` for the client and worker, e.g. one exporting the SDK's metrics
            (``Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address="0.0.0.0:9464")))``).
        embedded_db, embedded_port, ui: the embedded dev server's SQLite file, port (7233 as Temporal's own dev
            server; 0 for any free port) and web UI (on 8233), when no address is configured.
        graceful_shutdown_timeout: on shutdown, how long in-flight activities may run before being cancelled.
        health_file: written (JSON: pid, task_queue, namespace, identity) once the worker polls, removed as soon
            as it starts shutting down, for readiness probes.
        stop: set it to stop the worker (instead of a signal).
        on_ready: called with the ``Worker`` once it polls.
        warm_up: before polling, do what the first run would otherwise pay for (see
            :func:`durable_dspy.warm_up`); it overlaps with connecting to Temporal.
        **worker_options: passed to ``temporalio.worker.Worker`` (``max_concurrent_activities``, ``identity``,
            ``max_concurrent_workflow_tasks``, ...).

    Example:
        >>> await durable_dspy.serve_async(task_queue="llm", workflows=False, lm=lm, max_concurrent_activities=8)
    """
    if not (workflows or activities):
        raise ValueError("serve(): workflows=False and activities=False leave the worker nothing to do.")
    config = connect_config(address, namespace=namespace, profile=profile)
    threads = max(DEFAULT_ACTIVITY_THREADS, worker_options.get("max_concurrent_activities") or 0)
    plugin = DurableDSPyPlugin(
        lm=lm,
        registry=registry if registry is not None else default_registry,
        workflows=workflows,
        activities=activities,
        activity_threads=threads,
        compression=compression,
        encryption=encryption,
        external_storage=external_storage,
    )
    # In a thread, while we connect; awaited before the worker polls.
    warming = asyncio.ensure_future(asyncio.to_thread(warm_up_plugin, plugin)) if warm_up else None
    stop = stop or asyncio.Event()
    health = Path(health_file) if health_file is not None else None
    worker_options.setdefault("sticky_queue_schedule_to_start_timeout", STICKY_TIMEOUT)
    try:
        with _stop_on_signals(stop):
            async with _temporal(config, embedded_db, ui, embedded_port, [plugin, *plugins], runtime) as client:
                if warming is not None:
                    await warming
                worker = Worker(
                    client,
                    task_queue=task_queue or default_task_queue(),
                    graceful_shutdown_timeout=graceful_shutdown_timeout,
                    **worker_options,
                )
                async with worker:
                    await _until_polling(worker)
                    logger.info(
                        "worker polling task queue %s (workflows: %s, activities: %s)",
                        worker.task_queue,
                        workflows,
                        activities,
                    )
                    if health is not None:
                        _write_health_file(health, worker)
                    if on_ready is not None:
                        on_ready(worker)
                    await stop.wait()
                    if health is not None:
                        health.unlink(missing_ok=True)  # draining: no longer ready for new work
                    logger.info("shutting down: waiting up to %s for in-flight activities", graceful_shutdown_timeout)
    finally:
        if warming is not None and not warming.done():
            await asyncio.wait([warming])  # connecting failed: let the thread finish before we return
        if health is not None:
            health.unlink(missing_ok=True)
    logger.info("worker stopped")


def serve(**kwargs: Any) -> None:
    """Run a durable DSPy worker in the foreground; blocks until Ctrl-C or SIGTERM. Arguments as ``serve_async``.

    Example:
        >>> durable_dspy.serve(task_queue="rag", lm=dspy.LM("openai/gpt-4o-mini"))
    """
    asyncio.run(serve_async(**kwargs))
