"""The Temporal server itself SIGKILLed mid-run and restarted on the same SQLite file: the run completes, and the
worker and client reconnect by themselves."""

from __future__ import annotations

import asyncio
from pathlib import Path

from durable_dspy import connect
from durable_dspy._devserver import DevServer
from durable_dspy._executor import RunAffinityExecutor
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import make_lm, plain_run, running_worker
from tests.history import DESCRIBE, LM_CALL, replay, scheduled_activities
from tests.programs import basic


async def test_server_killed_and_restarted_mid_run(
    lm_server: ScriptedLMServer, task_queue: str, tmp_path: Path
) -> None:
    expected = plain_run(basic.TenCalls(), make_lm(lm_server), question="server crash").answer
    lm_server.reset()
    lm_server.latency = 0.2
    server = DevServer(db_filename=tmp_path / "temporal.sqlite")
    await asyncio.to_thread(server.start)
    try:
        address = server.address
        client = await connect(address)
        async with running_worker(client, task_queue, make_lm(lm_server)):
            handle = await basic.TenCalls.start(client, question="server crash", task_queue=task_queue)
            while lm_server.served < 4:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(server.kill)
            served_while_down = lm_server.served
            await asyncio.sleep(1.0)  # the worker's polls and the client's long poll fail meanwhile
            await asyncio.to_thread(server.start)
            assert server.address == address, "same port, same SQLite file"
            prediction = await asyncio.wait_for(handle.result(), timeout=120)
        history = await handle.fetch_history()
    finally:
        await asyncio.to_thread(server.stop)
    assert prediction.answer == expected
    counts = lm_server.served_by_key()
    assert len(counts) == 10, "each of the 10 distinct LM calls was served"
    # A call answered while the server was down could not be recorded and may have run again: at most that one.
    assert sum(n - 1 for n in counts.values()) <= 1, counts
    assert served_while_down < 10
    assert scheduled_activities(history) == [DESCRIBE] + [LM_CALL] * 10
    await replay(history, workflow_task_executor=RunAffinityExecutor(1))
