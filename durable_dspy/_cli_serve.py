"""The worker side of the ``durable-dspy`` command: the LM for ``--lm``, and what ``dev`` and ``worker`` run."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from dspy.clients.base_lm import BaseLM

    from ._program import ProgramDefinition
    from .testing import ScriptedLMServer

__all__ = ["SCRIPTED", "SCRIPTED_MODEL", "serve_dev", "serve_worker", "worker_lm"]

SCRIPTED = "scripted"
"""The ``--lm`` value for the offline scripted LM (``durable_dspy.testing.ScriptedLMServer``, placeholder answers)."""
SCRIPTED_MODEL = "openai/scripted"


@contextlib.contextmanager
def worker_lm(model: str | None) -> Iterator[tuple[BaseLM | None, str]]:
    """The LM for ``--lm MODEL`` and a label for it; ``scripted`` runs the offline scripted LM server meanwhile."""
    if model is None:
        yield None, "none given (the worker uses dspy.settings.lm)"
        return
    import dspy

    if model != SCRIPTED:
        yield dspy.LM(model), model
        return
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: bundled model metadata
    from .testing import ScriptedLMServer

    server: ScriptedLMServer
    with ScriptedLMServer() as server:
        lm = dspy.LM(SCRIPTED_MODEL, api_base=server.url + "/v1", api_key="scripted", cache=False)
        yield lm, f"scripted local LM at {server.url} (durable_dspy.testing.ScriptedLMServer: placeholder answers)"


async def serve_dev(
    app: str,
    programs: list[ProgramDefinition],
    task_queue: str | None,
    model: str,
    port: int,
    ui_port: int,
    db: Path | None,
) -> None:
    from . import serve_async
    from ._client import default_task_queue
    from ._devserver import DevServer, DevServerError, default_db_path

    queue = task_queue or default_task_queue()
    server = DevServer(port=port or None, ui=True, ui_port=ui_port or None, db_filename=db or default_db_path())
    try:
        await asyncio.to_thread(server.start)
    except DevServerError as exc:
        raise click.ClickException(
            f"{exc}\nIs another Temporal server using port {port}? Pass --port 0 --ui-port 0 for free ports, or "
            f"run only a worker against it: durable-dspy worker {app} --address localhost:{port}"
        ) from None
    try:
        with worker_lm(model) as (lm, label):

            def ready(_worker: object) -> None:
                example = programs[0]
                first = next(iter(example.signature.parameters), "question")
                flags = "" if port == 7233 else f" --address {server.address}"
                flags += "" if task_queue is None else f" -q {queue}"
                click.echo(f"durable-dspy dev: {len(programs)} program(s) from {app} on task queue {queue!r}")
                for program in programs:
                    click.echo(f"  program   {program.name}({', '.join(program.signature.parameters)})")
                click.echo(f"  Temporal  {server.address}  (state: {db or default_db_path()})")
                click.echo(f"  web UI    {server.ui_url}")
                click.echo(f"  LM        {label}")
                click.echo(
                    f"Start a run:  durable-dspy run {app}:{example.cls.__qualname__} --input {first}=...{flags}"
                )
                click.echo("Ctrl-C to stop.")

            await serve_async(task_queue=queue, lm=lm, address=server.address, on_ready=ready)
    finally:
        await asyncio.to_thread(server.stop)


async def serve_worker(
    task_queue: str | None,
    config: dict[str, Any],
    profile: str | None,
    model: str | None,
    health_file: Path | None,
    grace: float,
) -> None:
    from . import serve_async
    from ._client import default_task_queue

    queue = task_queue or default_task_queue()
    where = f"{config['target_host']} (namespace {config.get('namespace', 'default')})"
    with worker_lm(model) as (lm, label):
        click.echo(f"LM: {label}")
        await serve_async(
            task_queue=queue,
            lm=lm,
            address=config["target_host"],
            namespace=config.get("namespace"),
            profile=profile,  # API key and TLS settings come with it
            health_file=health_file,
            on_ready=lambda _worker: click.echo(f"worker polling task queue {queue!r} at {where}"),
            graceful_shutdown_timeout=timedelta(seconds=grace),
        )
    click.echo("worker stopped")
