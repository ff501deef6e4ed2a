"""Workers SIGKILLed mid-run, at every step of a 10-call program, and under load: nothing lost, nothing paid twice.

The kill matrix runs all nine cases at once on one worker process: run k's call k+1 hangs at the LM server, so
when all nine are hung each run has completed exactly k calls; then the worker is SIGKILLed, a new one takes
over, and every run must finish with the answer of an uninterrupted run, each LM call served once.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from durable_dspy._devserver import DevServer
from durable_dspy._executor import RunAffinityExecutor
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import make_lm, plain_run
from tests.history import DESCRIBE, FLUSH, LM_CALL, local_activity_markers, replay, scheduled_activities
from tests.programs import basic
from tests.support.processes import WorkerProcess

STEPS = range(1, 10)


def question(k: int) -> str:
    return f"crash matrix {k}"


def lm_attempts(history: WorkflowHistory) -> list[int]:
    """The attempt number each LM call completed on, in order (Temporal records only the last start)."""
    return [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and _scheduled_type(history, e.activity_task_started_event_attributes.scheduled_event_id) == LM_CALL
    ]


def _scheduled_type(history: WorkflowHistory, event_id: int) -> str:
    event = history.events[event_id - 1]
    return event.activity_task_scheduled_event_attributes.activity_type.name


def served_per_run(server: ScriptedLMServer, prefix: str) -> dict[str, collections.Counter[str]]:
    """LM answers (status 200) per run question, per distinct request."""
    per_run: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for request in server.requests:
        if request.status != 200:
            continue
        text = request.body["messages"][-1]["content"]
        start = text.index(prefix)
        per_run[text[start : text.index("\n", start)]][request.key] += 1
    return per_run


async def wait_for(predicate: Any, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@dataclass
class Matrix:
    program: type
    expected: dict[int, str]
    answers: dict[int, str] = field(default_factory=dict)
    histories: dict[int, WorkflowHistory] = field(default_factory=dict)
    served: dict[str, collections.Counter[str]] = field(default_factory=dict)
    hung_before_kill: int = 0


@pytest.fixture(scope="module", params=[basic.TenCalls, basic.TenCallsLocal], ids=["activities", "local-activities"])
async def matrix(
    request: pytest.FixtureRequest, client: Client, temporal_server: DevServer, lm_server_session: ScriptedLMServer
) -> AsyncIterator[Matrix]:
    program = request.param
    server = lm_server_session
    server.reset()
    server.latency = 0.0
    lm = make_lm(server)
    result = Matrix(program, expected={k: plain_run(program(), lm, question=question(k)).answer for k in STEPS})
    server.reset()
    for k in STEPS:
        # Run k's call k+1 (step index k) hangs: it is in flight, with exactly k calls completed, at the kill.
        server.inject("hang", match=f"{question(k)}\n\n[[ ## step ## ]]\n{k}\n")
    task_queue = f"fault-matrix-{program.__name__}"
    first = WorkerProcess(address=temporal_server.address, task_queue=task_queue, lm_url=server.url).start()
    try:
        handles = {k: await program.start(client, question=question(k), task_queue=task_queue) for k in STEPS}
        await wait_for(lambda: sum(r.fault == "hang" for r in server.requests) == len(STEPS), timeout=90)
        result.hung_before_kill = sum(r.fault == "hang" for r in server.requests)
    finally:
        first.kill()
    with WorkerProcess(address=temporal_server.address, task_queue=task_queue, lm_url=server.url):
        answers = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles.values())), timeout=120)
    result.answers = {k: prediction.answer for k, prediction in zip(handles, answers, strict=True)}
    result.histories = {k: await h.fetch_history() for k, h in handles.items()}
    result.served = served_per_run(server, "crash matrix ")
    server.reset()
    yield result


@pytest.mark.parametrize("k", STEPS)
async def test_sigkill_after_call_k_resumes_with_the_same_answer(matrix: Matrix, k: int) -> None:
    assert matrix.hung_before_kill == len(STEPS), "every run was mid-run when the worker was killed"
    assert matrix.answers[k] == matrix.expected[k], "same output as an uninterrupted run"
    served = matrix.served[question(k)]
    assert len(served) == 10, "each of the 10 distinct LM calls was served"
    assert set(served.values()) == {1}, f"a call was served twice: {served}"
    history = matrix.histories[k]
    assert scheduled_activities(history) == [DESCRIBE] + [LM_CALL] * 10
    if matrix.program is basic.TenCalls:
        # Calls 1..k completed before the kill on their first attempt; call k+1 was in flight and ran again.
        assert lm_attempts(history) == [1] * k + [2] + [1] * (9 - k)
    else:
        # Local activities: results recorded by markers, each call flushed once (plus, at most, one no-op flush
        # for the call whose early signal came from the killed worker).
        assert local_activity_markers(history) - scheduled_activities(history, flushes=True).count(FLUSH) == 11
    # (The Replayer gets a default multi-thread executor before plugins run, so pass a single lane explicitly.)
    await replay(history, workflow_task_executor=RunAffinityExecutor(1))


async def test_load_with_a_worker_killed_half_way(
    client: Client, temporal_server: DevServer, lm_server: ScriptedLMServer, task_queue: str
) -> None:
    """100 runs on two worker processes; one is SIGKILLed half way and restarted. None lost, none duplicated."""
    runs, calls = 100, 2
    lm_server.latency = 0.05
    a = WorkerProcess(address=temporal_server.address, task_queue=task_queue, lm_url=lm_server.url)
    b = WorkerProcess(address=temporal_server.address, task_queue=task_queue, lm_url=lm_server.url)
    restarted = WorkerProcess(address=temporal_server.address, task_queue=task_queue, lm_url=lm_server.url)
    try:
        a.start()
        b.start()
        started = time.monotonic()
        start = basic.TenCalls.start
        handles = await asyncio.gather(
            *(start(client, question=f"load {i}", calls=calls, task_queue=task_queue) for i in range(runs))
        )
        await wait_for(lambda: lm_server.served >= runs * calls // 2, timeout=120)
        a.kill()
        killed_at, half_way = lm_server.served, time.monotonic() - started
        restarted.start()
        results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=180)
        finished = time.monotonic() - started
    finally:
        for worker in (a, b, restarted):
            worker.kill()
    assert killed_at < runs * calls, "the kill happened before the work was done"
    assert len(results) == runs and all(r.answer for r in results), "no run lost"
    served = served_per_run(lm_server, "load ")
    assert len(served) == runs and all(len(c) == calls for c in served.values()), "every LM call was served"
    retried = 0
    for handle in handles:
        attempts = lm_attempts(await handle.fetch_history())
        assert len(attempts) == calls
        retried += sum(1 for n in attempts if n > 1)
    duplicates = sum(n - 1 for c in served.values() for n in c.values())
    # Only a call in flight on the killed worker (retried after it died) may have been served twice.
    assert duplicates <= retried, (duplicates, retried)
    assert lm_server.served == runs * calls + duplicates
    print(
        f"load: {runs} runs x {calls} calls; killed at {killed_at} served ({half_way:.1f} s), all done at "
        f"{finished:.1f} s; {retried} calls retried, {duplicates} served twice"
    )
