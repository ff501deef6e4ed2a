"""Many sync-forward runs interleaved on one worker: each stays on its own thread lane and completes."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from durable_dspy._executor import RunAffinityExecutor
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import running_worker
from tests.history import DESCRIBE, LM_CALL, replay, scheduled_activities, workflow_task_problems
from tests.programs import basic

RUNS = 50
CALLS = 3


async def test_fifty_concurrent_sync_runs_on_one_worker(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    lm_server.latency = 0.05
    # Fewer lanes than runs, so runs share threads and are interleaved on them.
    async with running_worker(client, task_queue, lm, workflow_task_executor=RunAffinityExecutor(lanes=4)):
        handles = [
            await basic.TenCalls.start(client, question=f"q{i}", calls=CALLS, task_queue=task_queue)
            for i in range(RUNS)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=240)
    assert len(results) == RUNS and all(r.answer for r in results)
    assert lm_server.served == RUNS * CALLS
    assert all(n == 1 for n in lm_server.served_by_key().values())
    for handle in handles[:3]:
        history = await handle.fetch_history()
        assert scheduled_activities(history) == [DESCRIBE] + [LM_CALL] * CALLS
        await replay(history)


async def test_runs_are_evicted_and_resumed_on_their_lane(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    """With a tiny workflow cache runs are evicted and replayed from history, exercising the greenlet unwind."""
    async with running_worker(client, task_queue, lm, max_cached_workflows=2):
        handles = [
            await basic.TenCalls.start(client, question=f"e{i}", calls=3, task_queue=task_queue) for i in range(8)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=120)
    assert all(r.answer for r in results)
    assert lm_server.served == 8 * 3
    for handle in handles:
        history = await handle.fetch_history()
        # A thread switch of a paused greenlet would fail the workflow task. (A run evicted while its opening
        # local activity runs may see one workflow task time out: Temporal's own behaviour, a 10 s delay.)
        assert workflow_task_problems(history, timeouts=False) == []
        await replay(history)
