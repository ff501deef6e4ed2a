"""dspy.Parallel, Module.batch and asyncio.gather inside durable runs: a concurrent, deterministic fan-out.

What is asserted is the shape of the history (every item's LM activity scheduled before the first one completes,
never more in flight than ``num_threads``), DSPy's own error rules, and replay; wall time is the benchmarks' job.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import dspy
import pytest
from dspy.utils.parallelizer import ParallelExecutor
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory

from durable_dspy import ProgramFailedError, _parallel
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import make_lm, running_worker
from tests.history import LM_CALL, replay, workflow_task_problems
from tests.programs import fanout, matrix

QUESTIONS = ["Paris?", "Rome?", "Oslo?", "Lima?", "Bern?", "Kyiv?"]


@dataclass
class Env:
    client: Client
    task_queue: str
    lm: dspy.LM
    server: ScriptedLMServer

    async def run(self, program: Any, **inputs: Any) -> tuple[Any, WorkflowHistory]:
        handle = await program.start(self.client, **inputs, task_queue=self.task_queue)
        try:
            return await handle.result(), await handle.fetch_history()
        finally:
            history = await handle.fetch_history()
            assert workflow_task_problems(history) == []
            await replay(history)


@pytest.fixture(scope="module")
async def env(client: Client) -> AsyncIterator[Env]:
    with ScriptedLMServer(latency=0.05) as server:
        lm = make_lm(server)
        task_queue = f"parallel-{uuid.uuid4().hex[:8]}"
        async with running_worker(client, task_queue, lm):
            yield Env(client, task_queue, lm, server)


def lm_in_flight(history: WorkflowHistory) -> list[int]:
    """LM activities scheduled but not yet closed, after each LM activity event, in history order."""
    lm_ids: set[int] = set()
    open_now, trace = 0, []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_type.name == LM_CALL:
                lm_ids.add(event.event_id)
                open_now += 1
                trace.append(open_now)
            continue
        for attrs in ("activity_task_completed", "activity_task_failed", "activity_task_canceled"):
            field = f"{attrs}_event_attributes"
            if event.HasField(field) and getattr(event, field).scheduled_event_id in lm_ids:
                open_now -= 1
                trace.append(open_now)
    return trace


def plain_answers(program: dspy.Module, lm: dspy.LM, **inputs: Any) -> Any:
    with dspy.context(lm=lm):
        return program(**inputs)


@pytest.mark.parametrize("program", [matrix.ParallelSync, matrix.BatchSync, matrix.GatherAsync])
async def test_items_run_concurrently_and_come_back_in_order(env: Env, program: Any) -> None:
    inputs: dict[str, Any] = {"questions": QUESTIONS}
    if program is not matrix.GatherAsync:
        inputs["num_threads"] = len(QUESTIONS)
    prediction, history = await env.run(program, **inputs)
    # All six LM activities were scheduled before the first one completed.
    assert lm_in_flight(history)[: len(QUESTIONS) + 1] == [*range(1, len(QUESTIONS) + 1), len(QUESTIONS) - 1]
    if program is matrix.GatherAsync:
        expected = await plain_async(program, env.lm, QUESTIONS)
    else:
        expected = await asyncio.to_thread(plain_answers, program(), env.lm, **inputs)
    assert prediction.answers == expected.answers


async def plain_async(program: Any, lm: dspy.LM, questions: list[str]) -> Any:
    with dspy.context(lm=lm):
        return await program().acall(questions=questions)


async def test_num_threads_bounds_the_lm_calls_in_flight(env: Env) -> None:
    prediction, history = await env.run(fanout.FanOut, questions=QUESTIONS, num_threads=2)
    trace = lm_in_flight(history)
    assert max(trace) == 2
    assert trace.count(2) >= 2
    assert len(prediction.answers) == len(QUESTIONS) and all(prediction.answers)


async def test_sequential_when_num_threads_is_one(env: Env) -> None:
    _, history = await env.run(fanout.FanOut, questions=QUESTIONS[:3], num_threads=1)
    assert lm_in_flight(history) == [1, 0, 1, 0, 1, 0]


async def test_failed_items_follow_dspy_rules(env: Env) -> None:
    questions = ["Paris?", "bad one", "Rome?", "bad two", "Oslo?"]
    inputs = {"questions": questions, "return_failed": True}
    expected = await asyncio.to_thread(plain_answers, fanout.FanOut(), env.lm, **inputs)
    prediction, history = await env.run(fanout.FanOut, **inputs)
    assert dict(prediction.items()) == dict(expected.items())
    assert prediction.answers[1] is None and prediction.answers[3] is None
    assert prediction.failed == ["bad one", "bad two"]
    assert prediction.errors == ["ValueError: refused 'bad one'", "ValueError: refused 'bad two'"]
    assert max(lm_in_flight(history)) == 3


@pytest.mark.parametrize("num_threads", [1, 4])
async def test_too_many_errors_cancel_the_rest_as_dspy_does(env: Env, num_threads: int) -> None:
    inputs = {"questions": ["bad first", "Paris?", "Rome?", "Oslo?"], "max_errors": 1, "num_threads": num_threads}
    with pytest.raises(Exception, match="Execution cancelled due to errors or interruption"):
        await asyncio.to_thread(plain_answers, fanout.FanOut(), env.lm, **inputs)
    with pytest.raises(ProgramFailedError, match="Execution cancelled due to errors or interruption"):
        await env.run(fanout.FanOut, **inputs)


async def test_nested_fan_out(env: Env) -> None:
    groups = [["Paris?", "Rome?"], ["Oslo?", "Lima?"], ["Bern?", "Kyiv?"]]
    expected = await asyncio.to_thread(plain_answers, fanout.NestedFanOut(), env.lm, groups=groups)
    prediction, history = await env.run(fanout.NestedFanOut, groups=groups)
    assert prediction.answers == expected.answers
    assert lm_in_flight(history)[:7] == [1, 2, 3, 4, 5, 6, 5]


async def test_parallel_in_aforward_is_a_clear_error(env: Env) -> None:
    with pytest.raises(ProgramFailedError, match=r"asyncio\.gather") as raised:
        await env.run(fanout.ParallelInAforward, questions=QUESTIONS[:2])
    assert raised.value.type == "WorkflowUsageError"


def test_outside_a_durable_run_parallel_is_dspy_own(lm_server: ScriptedLMServer) -> None:
    assert ParallelExecutor.execute is _parallel._execute  # installed once, for the whole process
    lm = make_lm(lm_server)
    results = plain_answers(matrix.ParallelSync(), lm, questions=QUESTIONS[:3])
    assert len(results.answers) == 3 and lm_server.served == 3
