"""THE FLOOR: a bare Temporal workflow running N sequential no-op activities. No dspy, no durable_dspy.

It lives in its own module because the workflow sandbox re-imports the workflow's module for every run; a module
that imported dspy would make the floor pay for dspy (or fail) without the durable_dspy plugin's passthrough.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

NOOP_ACTIVITY = "bench.floor.noop"


@activity.defn(name=NOOP_ACTIVITY)
async def noop(step: str) -> str:
    return step


@activity.defn(name="bench.floor.wait")
async def wait(seconds: float) -> float:
    """Stands in for an LM's latency when runs must stay in flight (memory per in-flight run)."""
    await asyncio.sleep(seconds)
    return seconds


@workflow.defn(name="bench.floor.Floor")
class Floor:
    @workflow.run
    async def run(self, activities: int, delay: float = 0.0) -> int:
        for i in range(activities):
            if delay:
                await workflow.execute_activity(wait, delay, start_to_close_timeout=timedelta(seconds=60))
            else:
                await workflow.execute_activity(noop, str(i), start_to_close_timeout=timedelta(seconds=60))
        return activities
