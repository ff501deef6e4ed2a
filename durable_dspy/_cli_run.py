"""``durable-dspy run`` against Temporal: parse ``--input`` pairs, start the run, follow it, print its result."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import click

from ._cli_progress import ProgressPrinter, query_progress

if TYPE_CHECKING:
    from temporalio.client import Client

    from ._program import ProgramDefinition

__all__ = ["LOCAL_ADDRESS", "parse_inputs", "start_and_follow"]

LOCAL_ADDRESS = "localhost:7233"
"""Where ``run`` looks when no address is configured: the port ``durable-dspy dev`` listens on by default."""


def parse_inputs(definition: ProgramDefinition, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``name=value`` pairs: the text itself for a ``str`` field, else JSON when it parses (``calls=3``)."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--input")
        parameter = definition.signature.parameters.get(name)
        if parameter is not None and parameter.annotation in (str, "str"):
            inputs[name] = raw
            continue
        try:
            inputs[name] = json.loads(raw)
        except ValueError:
            inputs[name] = raw
    return inputs


async def _has_pollers(client: Client, task_queue: str) -> bool:
    from ._client import pollers

    try:
        return bool(await pollers(client, task_queue))
    except Exception:
        return True  # unknown: do not cry wolf


async def start_and_follow(
    definition: ProgramDefinition,
    inputs: dict[str, Any],
    workflow_id: str | None,
    no_wait: bool,
    task_queue: str | None,
    address: str | None,
    namespace: str | None,
) -> None:
    from . import connect
    from ._client import default_task_queue, start
    from ._errors import ProgramFailedError

    try:
        client = await connect(address, namespace=namespace)
    except Exception as exc:
        where = address or "the configured address"
        raise click.ClickException(
            f"Cannot reach Temporal at {where}: {exc}. Start one with `durable-dspy dev APP`, or pass --address."
        ) from None
    queue = task_queue or definition.task_queue or default_task_queue()
    options: dict[str, Any] = {"task_queue": queue}
    if workflow_id:
        options["id"] = workflow_id
    handle = await start(definition, client, **inputs, **options)
    if no_wait:
        click.echo(json.dumps({"workflow_id": handle.id, "run_id": handle.run_id}))
        return
    printer = ProgressPrinter()
    printer.note(f"{definition.name} run {handle.id} on task queue {queue!r}")
    result = asyncio.ensure_future(handle.result())
    waited, warned = 0.0, False
    while not result.done():
        progress = await query_progress(handle)
        if progress is not None:
            printer.update(progress)
        elif not warned and waited > 5 and not await _has_pollers(client, queue):
            printer.note(
                f"  (no worker polls task queue {queue!r}: start one, e.g. `durable-dspy worker APP -q {queue}`)"
            )
            warned = True
        await asyncio.wait({result}, timeout=0.3)
        waited += 0.3
    try:
        prediction = result.result()
    except ProgramFailedError as exc:
        raise click.ClickException(str(exc)) from None
    final = await query_progress(handle)
    if final is not None:
        printer.update(final)
        printer.note(printer.summary(final))
    value = dict(prediction.items()) if hasattr(prediction, "items") else prediction
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))
