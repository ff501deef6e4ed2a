"""SIGTERM to a worker: it stops taking work, lets the in-flight activity finish and report, then exits 0; another
worker finishes the run without running that activity again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from durable_dspy._devserver import DevServer
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import running_worker
from tests.history import replay, scheduled_activities
from tests.programs import faults
from tests.support.processes import WorkerProcess

SLEEPY_TOOL = "tests.programs.faults.sleepy_tool"


async def sigterm_during_tool(
    client: Client, server: DevServer, lm_server: ScriptedLMServer, task_queue: str, tool_log: Path, program: Any
) -> tuple[WorkerProcess, Any]:
    """Start a worker process and a run of ``program`` (Sleepy or SleepyLocal); SIGTERM the worker while the run's
    2-second tool runs; check it exited 0. Returns the worker and the run's handle."""
    worker = WorkerProcess(
        address=server.address,
        task_queue=task_queue,
        lm_url=lm_server.url,
        extra=["--module", "tests.programs.faults", "--grace", "20"],
        env={"DURABLE_DSPY_TEST_TOOL_LOG": str(tool_log)},
    ).start()
    try:
        handle = await program.start(client, question="shut down gently", seconds=2.0, task_queue=task_queue)
        for _ in range(3000):
            if tool_log.exists() and "sleepy_tool" in tool_log.read_text():
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the tool never started:\n" + "".join(worker.output[-30:]))
        worker.terminate()  # SIGTERM while the 2-second tool runs
        code = await asyncio.to_thread(worker.wait, 30)
    finally:
        worker.kill()
    assert code == 0, "".join(worker.output[-30:])
    return worker, handle


async def test_sigterm_lets_the_in_flight_activity_finish(
    client: Client, temporal_server: DevServer, lm_server: ScriptedLMServer, task_queue: str, lm, tmp_path: Path
) -> None:
    tool_log = tmp_path / "tools.log"
    worker, handle = await sigterm_during_tool(client, temporal_server, lm_server, task_queue, tool_log, faults.Sleepy)
    assert "STOPPED" in "".join(worker.output)

    history = await handle.fetch_history()
    [scheduled] = [
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == SLEEPY_TOOL
    ]
    [started] = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id == scheduled
    ]
    completed = [
        e
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and e.activity_task_completed_event_attributes.scheduled_event_id == scheduled
    ]
    assert completed, "the tool's result was reported before the worker exited"
    assert started.attempt == 1
    assert started.identity.startswith(f"{worker.proc.pid}@"), "it ran on the worker that was shut down"

    async with running_worker(client, task_queue, lm):
        try:
            prediction = await asyncio.wait_for(handle.result(), timeout=60)
        except TimeoutError:
            events = [EventType.Name(e.event_type) for e in (await handle.fetch_history()).events]
            raise AssertionError(f"the second worker did not finish the run: {events}") from None
    assert prediction.answer
    assert tool_log.read_text().split() == ["sleepy_tool"], "the tool ran once"


async def test_sigterm_lets_an_in_flight_local_call_finish(
    client: Client, temporal_server: DevServer, lm_server: ScriptedLMServer, task_queue: str, lm, tmp_path: Path
) -> None:
    """The low-latency mode too: the local tool call in flight finishes, its result is recorded, it never reruns."""
    tool_log = tmp_path / "tools.log"
    _, handle = await sigterm_during_tool(client, temporal_server, lm_server, task_queue, tool_log, faults.SleepyLocal)

    async with running_worker(client, task_queue, lm):
        prediction = await asyncio.wait_for(handle.result(), timeout=60)
    assert prediction.answer
    assert tool_log.read_text().split() == ["sleepy_tool"], "the tool ran once"
    history = await handle.fetch_history()
    assert scheduled_activities(history).count(SLEEPY_TOOL) == 1
    await replay(history)
