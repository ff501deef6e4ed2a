"""ProgramOfThought and CodeAct in durable runs: every code cell is a ``durable_dspy.interpreter.execute`` activity.

Unit tests drive the worker side directly (live sessions, rebuilding a session from its earlier cells, outcomes);
integration tests check the activity sequence, parity with plain DSPy on DSPy's own ``LocalInterpreter``, replay.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.primitives.code_interpreter import CodeExecutionError, FinalOutput
from dspy.primitives.local_interpreter import LocalInterpreter
from temporalio.api.enums.v1 import EventType, RetryState
from temporalio.client import Client, WorkflowHistory
from temporalio.exceptions import ApplicationError

from durable_dspy import ProgramFailedError
from durable_dspy._interpreter import (
    INTERPRETER_ACTIVITY,
    Cell,
    CellRequest,
    CellResult,
    DurableInterpreter,
    InterpreterActivities,
)
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import make_lm, running_worker
from tests.history import DESCRIBE, LM_CALL, replay, scheduled_activities
from tests.programs import interpreters, matrix

# -- the worker side, without a server


@pytest.fixture
def activities() -> Any:
    acts = InterpreterActivities()
    yield acts
    acts.close()


def request(session: str, code: str, *earlier: str, **variables: Any) -> CellRequest:
    return CellRequest(session=session, cell=Cell(code, variables), earlier=[Cell(c) for c in earlier])


def test_outcomes(activities: InterpreterActivities) -> None:
    assert activities.execute(request("a", "6 * 7")) == CellResult(kind="result", value=42)
    assert activities.execute(request("b", "print('hi')")) == CellResult(kind="result", value="hi")
    assert activities.execute(request("c", "x + 1", x=41)) == CellResult(kind="result", value=42)
    assert activities.execute(request("d", "SUBMIT({'answer': 42})")) == CellResult(
        kind="final", value={"output": {"answer": 42}}
    )
    syntax = activities.execute(request("e", "def broken(:"))
    assert syntax.kind == "syntax" and syntax.error
    error = activities.execute(request("f", "1 / 0"))
    assert error == CellResult(kind="error", error="ZeroDivisionError: division by zero")


def test_a_live_session_runs_each_cell_once(activities: InterpreterActivities, tmp_path: Path) -> None:
    log = tmp_path / "ran.txt"
    first = f"open({str(log)!r}, 'a').write('1'); total = 20"
    assert activities.execute(request("s", first)).kind == "result"
    assert activities.execute(request("s", "total + 22", first)) == CellResult(kind="result", value=42)
    assert log.read_text() == "1"


def test_a_lost_session_is_rebuilt_from_its_earlier_cells(tmp_path: Path) -> None:
    """Another worker (or a restarted one) replays the earlier cells, side effects included, into a fresh process."""
    log = tmp_path / "ran.txt"
    first = f"open({str(log)!r}, 'a').write('1'); total = 20"
    one, other = InterpreterActivities(), InterpreterActivities()
    try:
        one.execute(request("s", first))
        assert other.execute(request("s", "total + 22", first)) == CellResult(kind="result", value=42)
        assert log.read_text() == "11"
        # A session that ran different cells than the request expects is rebuilt too.
        assert one.execute(request("s", "total", first, "total = 1")) == CellResult(kind="result", value=1)
    finally:
        one.close()
        other.close()


def test_a_broken_session_is_a_non_retryable_failure(activities: InterpreterActivities) -> None:
    leak = "import threading, time\nthreading.Thread(target=time.sleep, args=(2,)).start()"
    with pytest.raises(ApplicationError) as raised:
        activities.execute(request("leaky", leak))
    assert raised.value.type == "CodeInterpreterError" and raised.value.non_retryable


def test_sessions_are_bounded() -> None:
    acts = InterpreterActivities(max_sessions=2)
    try:
        for session in "abc":
            acts.execute(request(session, "1"))
        assert list(acts._sessions) == ["b", "c"]
    finally:
        acts.close()


def test_outside_a_workflow_it_is_a_local_interpreter() -> None:
    interpreter = DurableInterpreter()
    try:
        assert interpreter.execute("x = 20") is None
        assert interpreter.execute("x + 22") == 42
        assert interpreter.execute("SUBMIT({'answer': x})") == FinalOutput({"output": {"answer": 20}})
        with pytest.raises(CodeExecutionError, match="ZeroDivisionError"):
            interpreter.execute("1 / 0")
    finally:
        interpreter.shutdown()


# -- durable runs


@pytest.fixture(scope="module")
async def env(client: Client) -> AsyncIterator[tuple[Client, str, dspy.LM]]:
    with ScriptedLMServer() as server:
        server.responder = lambda r: matrix.respond(server, r)
        lm = make_lm(server)
        task_queue = f"interp-{uuid.uuid4().hex[:8]}"
        async with running_worker(client, task_queue, lm):
            yield client, task_queue, lm


def cells(history: WorkflowHistory) -> list[dict[str, Any]]:
    """The inputs of the run's code-cell activities."""
    return [
        json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == INTERPRETER_ACTIVITY
    ]


def plain(program: dspy.Module, lm: dspy.LM, **inputs: Any) -> Any:
    with dspy.context(lm=lm, interpreter_factory=LocalInterpreter):
        return program(**inputs)


async def test_program_of_thought_fixes_its_code_in_one_session(env: Any) -> None:
    client, task_queue, lm = env
    question = f"What is six times seven? {matrix.RETRY}"
    expected = await asyncio.to_thread(plain, matrix.ProgramOfThoughtSync(), lm, question=question)
    handle = await matrix.ProgramOfThoughtSync.start(client, question=question, task_queue=task_queue)
    prediction = await handle.result()
    assert dict(prediction.items()) == dict(expected.items())
    history = await handle.fetch_history()
    code = INTERPRETER_ACTIVITY
    # generate, run (fails), regenerate, run (uses the failed cell's `value`), answer
    assert scheduled_activities(history) == [DESCRIBE, LM_CALL, code, LM_CALL, code, LM_CALL]
    first, second = cells(history)
    assert first["earlier"] == [] and second["earlier"] == [first["cell"]]
    assert first["session"] == second["session"]
    await replay(history)


async def test_a_broken_interpreter_fails_the_run_once(env: Any) -> None:
    client, task_queue, _ = env
    handle = await matrix.ProgramOfThoughtSync.start(client, question=f"Leak? {matrix.LEAK}", task_queue=task_queue)
    with pytest.raises(ProgramFailedError, match="background threads") as raised:
        await handle.result()
    assert raised.value.type == "CodeInterpreterError"
    history = await handle.fetch_history()
    assert scheduled_activities(history) == [DESCRIBE, LM_CALL, INTERPRETER_ACTIVITY]
    failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED]
    assert [e.activity_task_failed_event_attributes.retry_state for e in failed] == [
        RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE
    ]
    await replay(history)


async def test_code_act_runs_its_pasted_tools_inside_the_code_activity(env: Any) -> None:
    client, task_queue, _ = env
    handle = await matrix.CodeActSync.start(client, question="What is 20 + 22?", task_queue=task_queue)
    prediction = await handle.result()
    assert prediction.trajectory == {"generated_code_0": "print(add(20, 22))", "code_output_0": '"42"'}
    history = await handle.fetch_history()
    # the tools' source is pasted first, then: generate code, run it, extract the answer
    assert scheduled_activities(history) == [DESCRIBE, INTERPRETER_ACTIVITY, LM_CALL, INTERPRETER_ACTIVITY, LM_CALL]
    tool_source, code = cells(history)
    assert tool_source["cell"]["code"].startswith("def add(a: int, b: int) -> int:")
    assert code["earlier"] == [tool_source["cell"]]


async def test_code_act_cannot_paste_a_durable_tool(env: Any) -> None:
    """Its source starts with `@durable_tool`, which the interpreter does not know (plain DSPy fails the same way)."""
    client, task_queue, lm = env
    with pytest.raises(CodeExecutionError, match="name 'durable_tool' is not defined"):
        await asyncio.to_thread(plain, interpreters.CodeActWithDurableTool(), lm, question="Lookup?")
    with pytest.raises(ProgramFailedError, match="name 'durable_tool' is not defined"):
        await interpreters.CodeActWithDurableTool.run(client, question="Lookup?", task_queue=task_queue)


async def test_rlm_is_not_durable_and_says_so(env: Any) -> None:
    client, task_queue, _ = env
    with pytest.raises(ProgramFailedError, match="cannot call host tools") as raised:
        await interpreters.RecursiveLM.run(client, question="Recurse?", task_queue=task_queue)
    assert raised.value.type == "CodeInterpreterError"
