"""Bad input gets a clear error and loses nothing; program errors end the run with their type and message."""

from __future__ import annotations

import asyncio
import gc
import uuid
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError

from durable_dspy import InputError, NoWorkerError, ProgramFailedError
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import running_worker
from tests.programs import basic


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return True


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"question": "q", "questoin": "typo"}, "unknown input field(s) ['questoin']"),
        ({}, "missing input field(s) ['question']"),
        ({"question": object()}, "input field 'question' is a object, which cannot be serialized"),
    ],
)
async def test_bad_inputs_fail_at_start_naming_the_field(client: Client, inputs: dict, message: str) -> None:
    workflow_id = f"bad-{uuid.uuid4()}"
    with pytest.raises(InputError) as info:
        await basic.RAG.start(client, id=workflow_id, task_queue="nowhere", **inputs)
    assert message in str(info.value)
    assert "forward() takes: question: str" in str(info.value)
    assert not await _exists(client, workflow_id), "no workflow was created"


async def test_program_error_fails_the_run_with_its_type_and_message(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    async with running_worker(client, task_queue, lm):
        handle = await basic.Failing.start(client, question="boom", task_queue=task_queue)
        with pytest.raises(ProgramFailedError) as info:
            await handle.result()
    assert info.value.type == "ValueError"
    assert "the program refused 'boom'" in str(info.value)
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.FAILED
    assert lm_server.served == 1, "the LM call before the error was made once, and the run was not retried"


async def test_tool_returning_unserializable_value_names_the_tool(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    async with running_worker(client, task_queue, lm):
        handle = await basic.BadTool.start(client, question="x", task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    cause = info.value.cause
    while getattr(cause, "cause", None) is not None:
        cause = cause.cause
    assert "Durable tool 'tests.programs.basic.unserializable' returned a object" in str(cause)
    assert "cannot be serialized" in str(cause)


async def test_non_retryable_tool_error_is_not_retried(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    async with running_worker(client, task_queue, lm):
        handle = await basic.RefusingTool.start(client, question="x", task_queue=task_queue)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    history = await handle.fetch_history()
    failed = [e for e in history.events if e.HasField("activity_task_failed_event_attributes")]
    assert len(failed) == 1
    started = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
    assert started[0].activity_task_started_event_attributes.attempt == 1
    assert "cannot answer 'x'" in failed[0].activity_task_failed_event_attributes.failure.cause.message or (
        "cannot answer 'x'" in failed[0].activity_task_failed_event_attributes.failure.message
    )


async def test_no_worker_is_reported_and_the_run_is_kept(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    handle = await basic.RAG.start(client, question="anyone there?", task_queue=task_queue)
    with pytest.raises(NoWorkerError) as info:
        await handle.result(worker_timeout=timedelta(seconds=1))
    assert f"No worker polls task queue {task_queue!r}" in str(info.value)
    assert f"durable_dspy.serve(task_queue={task_queue!r})" in str(info.value)
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING, "the run is kept"
    async with running_worker(client, task_queue, lm):
        prediction = await handle.result()
    assert prediction.answer


async def test_giving_up_on_result_leaves_no_task_behind(client: Client, task_queue: str) -> None:
    """Cancelling result() (a timeout around it) stops its inner wait too: no orphan task logs an error later."""
    loop = asyncio.get_running_loop()
    orphans: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: orphans.append(context))
    try:
        handle = await basic.RAG.start(client, question="never served", task_queue=task_queue)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(handle.result(), timeout=0.5)  # while it waits for a worker to take the run
        await handle.terminate("test over")
        await asyncio.sleep(0.5)
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert orphans == []
