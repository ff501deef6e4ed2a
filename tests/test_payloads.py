"""Temporal's 2 MB payload limit: an oversized LM answer or tool result fails once, by name; compression and external
payload storage (both optional, configured on client and worker alike) let large payloads through."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.exceptions import ApplicationError

from durable_dspy import ProgramFailedError
from durable_dspy._codec import COMPRESSED_ENCODING, configure_payloads
from durable_dspy._payloads import PAYLOAD_LIMIT, check_request, request_limit
from durable_dspy.testing._lm_server import ChatRequest, ScriptedLMServer
from tests.conftest import running_worker
from tests.history import DESCRIBE, replay, scheduled_activities
from tests.programs import faults

BIG_TOOL = "tests.programs.faults.big_tool"


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    faults.reset()


def chain(exc: BaseException | None) -> str:
    messages = []
    while exc is not None and len(messages) < 10:
        messages.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ if exc.__cause__ is not exc else None
    return "\n".join(messages)


def failures(history: WorkflowHistory) -> list[Any]:
    return [
        e.activity_task_failed_event_attributes.failure
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]


def tool_result_payload(history: WorkflowHistory, activity_type: str) -> Any:
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    }
    [completed] = [
        e.activity_task_completed_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
    ]
    [payload] = completed.result.payloads
    return payload


def with_converter(client: Client, **options: Any) -> Client:
    config = client.config()
    config["data_converter"] = configure_payloads(client.data_converter, **options)
    return Client(**config)


async def test_an_oversized_tool_result_fails_once_naming_the_tool(client: Client, task_queue: str, lm) -> None:
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.HugeTool.start(client, query="everything", task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    message = chain(info.value)
    assert "PayloadTooLargeError: The result of durable tool 'tests.programs.faults.huge_tool' is 3.0 MB" in message
    assert "above Temporal's payload limit of 2.0 MB" in message
    assert faults.ATTEMPTS == {"huge_tool:everything": 1}, "run once: not retried"
    [failure] = failures(await handle.fetch_history())
    assert failure.application_failure_info.type == "PayloadTooLargeError"
    assert failure.application_failure_info.non_retryable


async def test_an_oversized_lm_answer_fails_once_naming_the_predictor(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    def responder(request: ChatRequest) -> Any:
        if "huge answer" in request.user_text:
            return {"answer": "z" * (3 * 1024 * 1024)}
        return lm_server.default_reply(request)

    lm_server.responder = responder
    try:
        async with running_worker(client, task_queue, lm, registry=faults.registry):
            handle = await faults.OneCall.start(client, question="huge answer", task_queue=task_queue)
            with pytest.raises(WorkflowFailureError):
                await handle.result()
    finally:
        lm_server.responder = None
    assert lm_server.served == 1, "the LM was paid once: the oversized answer is not asked for again"
    [failure] = failures(await handle.fetch_history())
    assert failure.application_failure_info.type == "PayloadTooLargeError"
    assert failure.application_failure_info.non_retryable
    assert "The answer of LM call 'OneCall.qa' in program 'tests.programs.faults.OneCall'" in failure.message
    assert "max_tokens" in failure.message


async def test_an_oversized_prompt_fails_the_run_before_scheduling(client: Client, task_queue: str, lm) -> None:
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.HugePrompt.start(client, size=3 * 1024 * 1024, task_queue=task_queue)
        with pytest.raises(ProgramFailedError) as info:
            await handle.result()
    assert info.value.type == "PayloadTooLargeError"
    assert "The prompt of LM call 'HugePrompt.summarize' is 3.0 MB" in str(info.value)
    assert scheduled_activities(await handle.fetch_history()) == [DESCRIBE], "the LM call was never scheduled"


async def test_compression_lets_a_large_compressible_result_through(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    compressed = with_converter(client, compression=True)
    size = 3 * 1024 * 1024
    async with running_worker(compressed, task_queue, lm, registry=faults.registry):
        handle = await faults.BigTool.start(compressed, query="Paris", size=size, task_queue=task_queue)
        prediction = await handle.result()
    assert prediction.size > PAYLOAD_LIMIT
    history = await handle.fetch_history()
    payload = tool_result_payload(history, BIG_TOOL)
    assert payload.metadata["encoding"] == COMPRESSED_ENCODING
    assert payload.ByteSize() < 100 * 1024
    await replay(history, **_replay_options(compressed))


async def test_external_storage_keeps_large_payloads_out_of_history(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm, tmp_path: Path
) -> None:
    stored = with_converter(client, external_storage=tmp_path)
    size = 3 * 1024 * 1024
    async with running_worker(stored, task_queue, lm, registry=faults.registry):
        handle = await faults.BigTool.start(stored, query="Paris", size=size, task_queue=task_queue)
        prediction = await handle.result()
    assert prediction.size > PAYLOAD_LIMIT
    files = [p for p in tmp_path.rglob("*.bin")]
    assert len(files) == 1 and files[0].stat().st_size > PAYLOAD_LIMIT
    history = await handle.fetch_history()
    payload = tool_result_payload(history, BIG_TOOL)
    assert payload.ByteSize() < 4 * 1024, "history holds a reference, not the payload"
    assert files[0].stem in json.dumps(payload.data.decode(errors="replace"))
    await replay(history, **_replay_options(stored))


def _replay_options(client: Client) -> dict[str, Any]:
    from durable_dspy._executor import RunAffinityExecutor

    return {
        "data_converter": client.data_converter,
        "workflow_task_executor": RunAffinityExecutor(1),
        "registry": faults.registry,
    }


def test_request_limit_is_known_only_when_workflow_code_can_measure(tmp_path: Path) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    assert request_limit(DataConverter.default) == PAYLOAD_LIMIT - 1024
    assert request_limit(configure_payloads(encryption=key)) == PAYLOAD_LIMIT - 1024, "encryption adds bytes only"
    assert request_limit(configure_payloads(compression=True)) is None
    assert request_limit(configure_payloads(external_storage=tmp_path)) is None


def test_check_request_names_what_is_too_large() -> None:
    with pytest.raises(ApplicationError) as info:
        check_request(
            "y" * (3 * 1024 * 1024),
            DataConverter.default.payload_converter,
            what="The prompt of LM call 'Summarize.predict'",
            fix="Send less context.",
        )
    assert info.value.type == "PayloadTooLargeError" and info.value.non_retryable
    assert info.value.message.startswith("The prompt of LM call 'Summarize.predict' is 3.0 MB")
    assert "Send less context." in info.value.message
