"""The client side: python examples/production/app.py TICKET_ID "ticket text"

Starts the triage run for a ticket and follows its progress. The workflow id is derived from the ticket, so running
this again while that run is in flight attaches to it instead of paying for a second one.
"""

from __future__ import annotations

import asyncio
import sys

import triage
from temporalio.common import WorkflowIDConflictPolicy

import durable_dspy


async def print_steps(handle: durable_dspy.DurableHandle, printed: int) -> int:
    """Print the run's finished steps after the first ``printed`` ones (from the progress query); the new count."""
    try:
        progress = await handle.query("durable_dspy.progress", result_type=durable_dspy.Progress)
    except Exception:  # no worker answered (yet)
        return printed
    for step in progress.steps[printed:]:
        if step.status == "running":
            break
        print(f"  {step.status:9} {step.kind:4} {step.name}")
        printed += 1
    return printed


async def main(ticket_id: str = "T-1", ticket: str = "Where is my order A-1002? It should have arrived.") -> dict:
    client = await durable_dspy.connect()  # TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE / TEMPORAL_API_KEY / profile
    handle = await triage.Triage.start(
        client,
        ticket=ticket,
        id=f"triage-{ticket_id}",
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        task_queue=triage.TASK_QUEUE,
    )
    result = asyncio.ensure_future(handle.result())
    printed = 0
    while True:
        done = result.done()
        printed = await print_steps(handle, printed)
        if done:
            break
        await asyncio.wait({result}, timeout=0.5)
    prediction = result.result()
    print(f"[{prediction.category}] {prediction.reply}")
    return dict(prediction.items())


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
