"""Warm-up before polling: what it prepares, that it sends no LM request, and that it never stops a worker."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import dspy
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

import durable_dspy
from durable_dspy import DurableDSPyPlugin, Registry, _converter, _serve, _warmup, durable_program
from durable_dspy._protocol import DEFAULT_LM_KEY, DescribeRequest, LMCallRequest
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import make_lm

REGISTRY = Registry()
CONSTRUCTED: list[str] = []


@durable_program(registry=REGISTRY)
class Answer(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        CONSTRUCTED.append("Answer")
        self.answer = dspy.Predict("question, context: list[str] -> answer, confidence: float")

    def forward(self, question: str) -> dspy.Prediction:
        return self.answer(question=question, context=["warm"])


BROKEN_REGISTRY = Registry()


@durable_program(registry=BROKEN_REGISTRY, name="tests.test_warmup.Broken")
class Broken(dspy.Module):
    """Cannot be built: warm-up logs it and carries on (a run of it would fail on its own)."""

    def __init__(self, fail: bool = True) -> None:
        super().__init__()
        if fail:
            raise RuntimeError("cannot build")
        self.answer = dspy.Predict("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return self.answer(question=question)


def test_warm_up_prepares_lms_and_payloads_without_sending_a_request(lm_server: ScriptedLMServer) -> None:
    plugin = DurableDSPyPlugin(lm=make_lm(lm_server), registry=REGISTRY)
    CONSTRUCTED.clear()
    _converter._type_adapter.cache_clear()

    durable_dspy.warm_up(plugin)

    assert lm_server.requests == [], "warming sends no LM request"
    assert CONSTRUCTED == ["Answer"], "each program is built once"
    assert (f"{__name__}.Answer", DEFAULT_LM_KEY) in plugin.lm_activities._info, "capabilities resolved"
    misses = _converter._type_adapter.cache_info().misses
    for tp in (Any, DescribeRequest, LMCallRequest):
        _converter._type_adapter(tp)
    assert _converter._type_adapter.cache_info().misses == misses, "payload type adapters already built"


def test_warm_up_never_raises_and_logs_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    plugin = DurableDSPyPlugin(lm=None, registry=BROKEN_REGISTRY)  # no LM: the capability lookup fails too
    with caplog.at_level(logging.DEBUG, logger="durable_dspy.warmup"):
        durable_dspy.warm_up(plugin)
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert {r.levelno for r in failed} == {logging.DEBUG}
    assert any("construct tests.test_warmup.Broken" in r.getMessage() for r in failed)
    assert any("lm info tests.test_warmup.Broken default" in r.getMessage() for r in failed)


def test_warm_up_skips_the_sides_a_worker_does_not_run(lm_server: ScriptedLMServer) -> None:
    plugin = DurableDSPyPlugin(lm=make_lm(lm_server), registry=REGISTRY, activities=False)
    durable_dspy.warm_up(plugin)
    assert plugin.lm_activities._info == {}, "a workflow-only worker does not look up LMs"


async def _serve_one_run(
    client: Client,
    lm_server: ScriptedLMServer,
    monkeypatch: pytest.MonkeyPatch,
    events: list[str],
    **options: Any,
) -> None:
    """Serve REGISTRY until one run of Answer is done; ``events`` records warm-up, ready and the run."""
    real = _warmup.warm_up

    def warm_up(plugin: DurableDSPyPlugin) -> None:
        real(plugin)
        events.append(f"warmed, {len(lm_server.requests)} LM requests")

    monkeypatch.setattr(_serve, "warm_up_plugin", warm_up)
    stop = asyncio.Event()
    ready: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()

    def on_ready(worker: Worker) -> None:
        events.append("ready")
        ready.set_result(worker)

    task_queue = f"warmup-{id(events)}"
    serving = asyncio.create_task(
        durable_dspy.serve_async(
            task_queue=task_queue,
            lm=make_lm(lm_server),
            address=client.service_client.config.target_host,
            registry=REGISTRY,
            stop=stop,
            on_ready=on_ready,
            **options,
        )
    )
    try:
        worker = await asyncio.wait_for(ready, timeout=60)
        assert await _serve._server_sees_poller(worker), "ready means the server has seen the worker poll"
        prediction = await Answer.run(client, question="warm?", task_queue=task_queue)
        assert prediction.answer
        events.append("run done")
    finally:
        stop.set()
        await asyncio.wait_for(serving, timeout=60)


async def test_serve_warms_up_before_polling(
    client: Client, lm_server: ScriptedLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    await _serve_one_run(client, lm_server, monkeypatch, events)
    assert events == ["warmed, 0 LM requests", "ready", "run done"]
    assert len(lm_server.requests) == 1, "the run's one call is the only LM request"


async def test_serve_without_warm_up(
    client: Client, lm_server: ScriptedLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    await _serve_one_run(client, lm_server, monkeypatch, events, warm_up=False)
    assert events == ["ready", "run done"]


async def test_a_failing_warm_up_step_does_not_stop_the_worker(
    client: Client, lm_server: ScriptedLMServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(plugin: DurableDSPyPlugin) -> None:
        raise RuntimeError("payload warm-up broke")

    monkeypatch.setattr(_warmup, "_warm_payload_types", broken)
    events: list[str] = []
    with caplog.at_level(logging.DEBUG, logger="durable_dspy.warmup"):
        await _serve_one_run(client, lm_server, monkeypatch, events)
    assert events == ["warmed, 0 LM requests", "ready", "run done"]
    failures = [r for r in caplog.records if r.name == "durable_dspy.warmup" and "failed" in r.getMessage()]
    assert [(r.levelno, r.exc_info is not None) for r in failures] == [(logging.DEBUG, True)]
    assert "payload types" in failures[0].getMessage()
