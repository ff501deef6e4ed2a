"""API keys and base URLs stay on the worker: never in a workflow's inputs, history or logs."""

from __future__ import annotations

import logging

import pytest
from google.protobuf.json_format import MessageToJson
from temporalio.client import Client

from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import SECRET, running_worker
from tests.programs import basic


async def test_api_key_and_base_url_never_reach_history_or_logs(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_worker(client, task_queue, lm):
        handle = await basic.Agent.start(client, question="secret?", task_queue=task_queue)
        await handle.result()
    history = await handle.fetch_history()
    raw = history.to_json()
    # Payload data is base64 in the JSON form: decode every payload too.
    dumped = "\n".join(MessageToJson(event) for event in history.events)
    payloads = _payload_texts(history)
    assert "durable_dspy.lm.call" in raw and "test-model" in payloads  # the scan sees the real payloads
    for text in (dumped, raw, payloads):
        assert SECRET not in text
        assert lm_server.url not in text
        assert "api_base" not in text and "api_key" not in text
    assert lm_server.served >= 4
    assert caplog.records, "logging was captured"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert SECRET not in logged


def _payload_texts(history) -> str:  # type: ignore[no-untyped-def]
    """Every payload's data in the history, decoded from the base64 of its JSON form."""
    import base64
    import json

    texts: list[str] = []

    def walk(value) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, dict):
            if isinstance(value.get("data"), str) and "metadata" in value:
                texts.append(base64.b64decode(value["data"]).decode("utf-8", "replace"))
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(json.loads(history.to_json()))
    return "\n".join(texts)
