"""Durable runs of ordinary DSPy programs on a real Temporal server, compared with plain DSPy runs."""

from __future__ import annotations

import asyncio

import dspy
import pytest
from temporalio.client import Client

from durable_dspy._progress import PROGRESS_QUERY, Progress
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import make_lm, plain_arun, plain_run, running_worker
from tests.history import DESCRIBE, LM_CALL, replay, scheduled_activities
from tests.programs import basic

SEARCH = "tests.programs.basic.search_web"
FETCH = "tests.programs.basic.fetch_page"
LOOKUP = "tests.programs.basic.lookup"


def fields(prediction: dspy.Prediction) -> dict[str, object]:
    return dict(prediction.items())


@pytest.mark.parametrize("engine", ["auto", "litellm"])
async def test_sync_forward_matches_plain_dspy(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, engine: str
) -> None:
    lm = make_lm(lm_server, engine=engine)
    expected = plain_run(basic.RAG(), lm, question="What is the capital of France?")
    plain_served = lm_server.served
    async with running_worker(client, task_queue, lm):
        handle = await basic.RAG.start(client, question="What is the capital of France?", task_queue=task_queue)
        prediction = await handle.result()
    assert isinstance(prediction, dspy.Prediction)
    assert fields(prediction) == fields(expected)
    assert lm_server.served - plain_served == 1
    history = await handle.fetch_history()
    assert scheduled_activities(history) == [DESCRIBE, SEARCH, LM_CALL]
    usage = prediction.get_lm_usage()
    assert usage and usage["openai/test-model"]["total_tokens"] > 0
    assert usage == expected.get_lm_usage()
    await replay(history)


async def test_async_aforward_matches_plain_dspy(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    expected = await plain_arun(basic.AsyncRAG(), lm, question="Where is Paris?")
    async with running_worker(client, task_queue, lm):
        handle = await basic.AsyncRAG.start(client, question="Where is Paris?", task_queue=task_queue)
        prediction = await handle.result()
    assert fields(prediction) == fields(expected)
    history = await handle.fetch_history()
    assert scheduled_activities(history) == [DESCRIBE, SEARCH, FETCH, LM_CALL]
    await replay(history)


async def test_nested_modules(client: Client, lm_server: ScriptedLMServer, task_queue: str, lm) -> None:
    expected = plain_run(basic.Nested(), lm, question="Why Temporal?")
    async with running_worker(client, task_queue, lm):
        handle = await basic.Nested.start(client, question="Why Temporal?", task_queue=task_queue)
        prediction = await handle.result()
    assert fields(prediction) == fields(expected)
    history = await handle.fetch_history()
    assert scheduled_activities(history) == [DESCRIBE, LM_CALL, LM_CALL]
    await replay(history)


async def test_sync_react_with_sync_and_async_durable_tools(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    basic.TOOL_CALLS.clear()
    async with running_worker(client, task_queue, lm):
        handle = await basic.Agent.start(client, question="What is the capital of France?", task_queue=task_queue)
        prediction = await handle.result()
    assert prediction.answer
    history = await handle.fetch_history()
    # Two ReAct steps (one per tool), finish, then the extract step.
    assert scheduled_activities(history) == [DESCRIBE, LM_CALL, SEARCH, LM_CALL, FETCH, LM_CALL, LM_CALL]
    assert [call.split(":")[0] for call in basic.TOOL_CALLS] == ["search_web", "fetch_page"]
    assert "Paris is the capital" in str(prediction.trajectory)
    await replay(history)


async def test_async_react_matches_plain_dspy(client: Client, lm_server: ScriptedLMServer, task_queue: str, lm) -> None:
    expected = await plain_arun(basic.AsyncAgent(), lm, question="Tell me about Paris")
    async with running_worker(client, task_queue, lm):
        handle = await basic.AsyncAgent.start(client, question="Tell me about Paris", task_queue=task_queue)
        prediction = await handle.result()
    assert fields(prediction) == fields(expected)
    history = await handle.fetch_history()
    assert scheduled_activities(history) == [DESCRIBE, LM_CALL, LOOKUP, LM_CALL, FETCH, LM_CALL, LM_CALL]
    await replay(history)


async def test_subclass_of_durable_program_has_its_own_workflow(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    expected = plain_run(basic.SubRAG(), lm, question="Sub?")
    async with running_worker(client, task_queue, lm):
        handle = await basic.SubRAG.start(client, question="Sub?", task_queue=task_queue)
        prediction = await handle.result()
    description = await handle.describe()
    assert description.workflow_type == "tests.programs.basic.SubRAG"
    assert fields(prediction) == fields(expected)


async def test_run_starts_and_waits(client: Client, lm_server: ScriptedLMServer, task_queue: str, lm) -> None:
    async with running_worker(client, task_queue, lm):
        prediction = await basic.RAG.run(client, question="Run?", task_queue=task_queue)
    assert prediction.answer == plain_run(basic.RAG(), lm, question="Run?").answer


async def test_progress_query_lists_steps_and_usage(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    async with running_worker(client, task_queue, lm):
        handle = await basic.Agent.start(client, question="progress?", task_queue=task_queue)
        prediction = await handle.result()
        progress = await handle.query(PROGRESS_QUERY, result_type=Progress)
    assert progress.status == "completed"
    assert [(s.kind, s.name) for s in progress.steps] == [
        ("lm", "Agent.react.react"),
        ("tool", SEARCH),
        ("lm", "Agent.react.react"),
        ("tool", FETCH),
        ("lm", "Agent.react.react"),
        ("lm", "Agent.react.extract.predict"),
    ]
    assert all(s.status == "completed" and s.duration_ms is not None for s in progress.steps)
    assert progress.total_tokens == prediction.get_lm_usage()["openai/test-model"]["total_tokens"] > 0
    history = await handle.fetch_history()
    summaries = [
        e.user_metadata.summary.data.decode()
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert '"Agent.react.react"' in summaries and f'"{SEARCH}"' in summaries


async def test_two_agents_with_same_named_tools_do_not_clash(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    from tests.programs import agent_a, agent_b

    async with running_worker(client, task_queue, lm):
        handles = [
            await agent_a.AgentA.start(client, question="which corpus?", task_queue=task_queue),
            await agent_b.AgentB.start(client, question="which corpus?", task_queue=task_queue),
        ]
        a, b = await asyncio.gather(*(h.result() for h in handles))
    assert "A-result" in str(a.trajectory) and "B-result" not in str(a.trajectory)
    assert "B-result" in str(b.trajectory) and "A-result" not in str(b.trajectory)
    activities = [scheduled_activities(await h.fetch_history()) for h in handles]
    assert "tests.programs.agent_a.search" in activities[0] and "tests.programs.agent_b.search" in activities[1]
