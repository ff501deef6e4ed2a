"""The low-latency mode (``local_activities=True``) keeps the default's guarantees where it can.

Each local call is flushed to history before the run goes on (durable_dspy/_flush.py): crash tests are in
tests/test_crash.py (parametrized over both modes); here: parity, errors, retries, tools, fan-out, progress,
cancellation, what history holds, and replay.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory

from durable_dspy import ProgramFailedError
from durable_dspy._progress import PROGRESS_QUERY, Progress
from durable_dspy.testing import ScriptedLMServer
from tests.conftest import SECRET, make_lm, plain_run, running_worker
from tests.history import (
    DESCRIBE,
    FLUSH,
    LM_CALL,
    flush_signals,
    local_activity_markers,
    replay,
    scheduled_activities,
    workflow_task_problems,
)
from tests.programs import local
from tests.test_faults import wait_until


def statuses(server: ScriptedLMServer, marker: str) -> list[int | None]:
    return [r.status for r in server.requests if marker in json.dumps(r.body.get("messages"))]


async def test_react_agent_matches_plain_dspy_and_history_holds_results_only(
    client: Client, lm_server: ScriptedLMServer, task_queue: str
) -> None:
    lm = make_lm(lm_server)
    local.CALLS.clear()
    expected = plain_run(local.AgentLocal(), lm, question="Tell me about Paris")
    plain_calls = list(local.CALLS)
    local.CALLS.clear()
    lm_server.reset()
    async with running_worker(client, task_queue, lm, registry=local.registry):
        handle = await local.AgentLocal.start(client, question="Tell me about Paris", task_queue=task_queue)
        prediction = await handle.result()
    assert prediction.answer == expected.answer
    assert plain_calls
    assert plain_calls == local.CALLS, "each tool call ran once, as a local activity"
    history = await handle.fetch_history()
    calls = scheduled_activities(history)
    assert calls.count(LM_CALL) == len(lm_server.requests)
    assert calls.count("tests.programs.local.city_facts") == len(local.CALLS)
    assert not any(name for name in calls if not name.startswith(("durable_dspy.", "tests."))), calls
    # Every LM and tool call flushed once (no fallback flush in a run without crashes); describe is not flushed.
    assert flush_signals(history) == len(calls) - 1
    assert scheduled_activities(history, flushes=True).count(FLUSH) == 0
    assert local_activity_markers(history) == len(calls)
    recorded = b"".join(event.SerializeToString() for event in history.events)
    assert b"Tell me about Paris" in recorded  # the run's input
    assert b"Your input fields are" not in recorded, "prompts are not recorded: local activity inputs are not"
    assert SECRET.encode() not in recorded
    assert workflow_task_problems(history) == []
    await replay(history, registry=local.registry)


@pytest.mark.parametrize("program", [local.OneCallLocal, local.FastRetryLocal], ids=["default-policy", "user-policy"])
async def test_a_provider_refusal_is_sent_once_and_fails_the_run(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, program: type
) -> None:
    lm_server.inject("401", times=5)
    async with running_worker(client, task_queue, make_lm(lm_server), registry=local.registry):
        handle = await program.start(client, question="refuse local", task_queue=task_queue)  # type: ignore[attr-defined]
        with pytest.raises(ProgramFailedError) as info:
            await handle.result()
    assert info.value.type == "LMAuthError"
    assert workflow_task_problems(await handle.fetch_history()) == []
    assert statuses(lm_server, "refuse local") == [401], "not retried by Temporal nor in the activity"


async def test_transient_errors_are_retried(client: Client, lm_server: ScriptedLMServer, task_queue: str) -> None:
    lm_server.inject("429", times=2)
    async with running_worker(client, task_queue, make_lm(lm_server, num_retries=3), registry=local.registry):
        handle = await local.FastRetryLocal.start(client, question="transient local", task_queue=task_queue)
        prediction = await handle.result()
    assert prediction.answer
    assert statuses(lm_server, "transient local") == [429, 429, 200]
    await replay(await handle.fetch_history(), registry=local.registry)


def lm_call_spans(history: WorkflowHistory) -> list[tuple[float, float]]:
    """(scheduled, completed) times of the local LM calls, from their markers."""
    spans = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_MARKER_RECORDED:
            continue
        data = json.loads(event.marker_recorded_event_attributes.details["data"].payloads[0].data)
        if data["activity_type"] == LM_CALL:
            start, end = data["original_schedule_time"], data["complete_time"]
            spans.append((start["seconds"] + start["nanos"] / 1e9, end["seconds"] + end["nanos"] / 1e9))
    return spans


async def test_parallel_fan_out_in_local_mode(client: Client, lm_server: ScriptedLMServer, task_queue: str) -> None:
    lm_server.latency = 0.2
    questions = [f"question {i}" for i in range(6)]
    lm = make_lm(lm_server)
    expected = [plain_run(local.OneCallLocal(), lm, question=q).answer for q in questions]
    lm_server.reset()
    async with running_worker(client, task_queue, lm, registry=local.registry):
        handle = await local.FanOutLocal.start(client, questions=questions, task_queue=task_queue)
        prediction = await handle.result()
    assert prediction.answers == expected
    history = await handle.fetch_history()
    spans = sorted(lm_call_spans(history))
    assert len(spans) == 6
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), f"no overlap: {spans}"
    assert workflow_task_problems(history) == []
    await replay(history, registry=local.registry)


async def test_progress_query_and_cancellation(client: Client, lm_server: ScriptedLMServer, task_queue: str) -> None:
    lm_server.inject("hang")
    async with running_worker(client, task_queue, make_lm(lm_server), registry=local.registry):
        handle = await local.OneCallLocal.start(client, question="cancel local", task_queue=task_queue)
        await wait_until(lambda: any(r.fault == "hang" for r in lm_server.requests))
        progress = await handle.query(PROGRESS_QUERY, result_type=Progress)
        assert [(s.kind, s.name, s.status) for s in progress.steps] == [("lm", "OneCallLocal.qa", "running")]
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), timeout=30)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert lm_server.served == 0


async def test_a_call_that_outlives_a_workflow_task_heartbeat_is_flushed_again(
    client: Client, lm_server: ScriptedLMServer, task_queue: str
) -> None:
    """A local call longer than 80% of the workflow task timeout makes Temporal heartbeat the task: the call's
    flush signal arrives before its result, which proves nothing, so the run flushes once more with a no-op."""
    lm_server.latency = 2.5
    async with running_worker(client, task_queue, make_lm(lm_server), registry=local.registry):
        handle = await local.OneCallLocal.start(
            client, question="long local call", task_queue=task_queue, task_timeout=timedelta(seconds=2)
        )
        prediction = await handle.result()
    assert prediction.answer
    assert statuses(lm_server, "long local call") == [200], "sent once"
    history = await handle.fetch_history()
    assert scheduled_activities(history, flushes=True) == [DESCRIBE, LM_CALL, FLUSH]
    assert flush_signals(history) == 2, "the call's signal (early) and the no-op's"
    assert workflow_task_problems(history) == []
    await replay(history, registry=local.registry)
