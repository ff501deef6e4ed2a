"""Logs name programs, predictors, tools and ids; prompts, completions and tool arguments stay out of INFO and above."""

from __future__ import annotations

import logging

import pytest
from temporalio.client import Client

from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import running_worker
from tests.programs import basic

QUESTION = "What is the population of Quuxville-on-Sea?"


async def test_no_prompt_or_tool_argument_is_logged_at_info_or_above(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm, caplog: pytest.LogCaptureFixture
) -> None:
    basic.TOOL_CALLS.clear()
    lm_server.inject("500", times=1)  # one failed attempt: Temporal logs the activity failure and retries
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="durable_dspy")  # the CLI tests may have raised this logger's level
    async with running_worker(client, task_queue, lm):
        rag = await basic.RAG.run(client, question=QUESTION, task_queue=task_queue)  # search_web(QUESTION)
        agent = await basic.Agent.run(client, question=QUESTION, task_queue=task_queue)  # ReAct picks the arguments
    assert rag.answer and agent.answer
    assert basic.TOOL_CALLS[0] == f"search_web:{QUESTION}" and len(basic.TOOL_CALLS) == 3, basic.TOOL_CALLS

    secrets = ["Quuxville", *(f"'{call.split(':', 1)[1]}'" for call in basic.TOOL_CALLS[1:]), rag.reasoning]
    assert any(r.levelno >= logging.WARNING for r in caplog.records), "the failed attempt was logged"
    assert any(r.name.startswith("durable_dspy") for r in caplog.records), "durable_dspy logged the LM calls"
    for record in caplog.records:
        if record.levelno >= logging.INFO or record.name.startswith("durable_dspy"):
            text = record.getMessage()
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{record.name} {record.levelname} logged {leaked}: {text[:300]}"
