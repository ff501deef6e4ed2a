"""Deployment: several worker processes share a task queue; workflow workers and LM workers run apart; SIGTERM
lets in-flight calls finish. Who did what is read from the runs' histories (Temporal records each worker's identity).
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.worker import Worker

import durable_dspy
from durable_dspy._devserver import DevServer
from durable_dspy.testing._lm_server import ChatRequest, Reply, ScriptedLMServer
from tests.conftest import running_worker
from tests.history import LM_CALL
from tests.programs import basic, split
from tests.support.processes import WorkerProcess


class ScaleWorker(WorkerProcess):
    """``python -m tests.support.scale_worker``: a serve_async worker with the given identity and options."""

    def __init__(self, server: DevServer, lm_server: ScriptedLMServer, task_queue: str, identity: str, *extra: str):
        super().__init__(address=server.address, task_queue=task_queue, lm_url=lm_server.url)
        self.identity = identity
        self.args = [
            sys.executable, "-m", "tests.support.scale_worker", "--address", server.address,
            "--task-queue", task_queue, "--lm-url", lm_server.url, "--identity", identity, *extra,
        ]  # fmt: skip

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait for the graceful exit."""
        self.terminate()
        return self.wait(timeout)


async def start_all(workers: list[ScaleWorker]) -> None:
    await asyncio.gather(*(asyncio.to_thread(worker.start, 120.0) for worker in workers))


@dataclass
class Work:
    """Per worker identity: runs taken (first workflow task), workflow tasks, activities by type and queue."""

    runs: collections.Counter[str] = field(default_factory=collections.Counter)
    workflow_tasks: collections.Counter[str] = field(default_factory=collections.Counter)
    activities: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    activity_queues: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)

    def add(self, history: WorkflowHistory) -> None:
        scheduled: dict[int, tuple[str, str]] = {}
        first = True
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                attrs = event.activity_task_scheduled_event_attributes
                scheduled[event.event_id] = (attrs.activity_type.name, attrs.task_queue.name)
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                attrs = event.activity_task_started_event_attributes
                kind, queue = scheduled[attrs.scheduled_event_id]
                self.activities[attrs.identity, kind] += 1
                self.activity_queues[attrs.identity, queue] += 1
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                identity = event.workflow_task_completed_event_attributes.identity
                self.workflow_tasks[identity] += 1
                if first:
                    self.runs[identity] += 1
                    first = False

    def activity_workers(self) -> set[str]:
        return {identity for identity, _ in self.activities}


async def work_of(handles: list[WorkflowHandle]) -> Work:
    work = Work()
    for history in await asyncio.gather(*(handle.fetch_history() for handle in handles)):
        work.add(history)
    return work


async def test_three_worker_processes_share_100_runs(
    client: Client, temporal_server: DevServer, lm_server: ScriptedLMServer, task_queue: str
) -> None:
    workers = [ScaleWorker(temporal_server, lm_server, task_queue, f"scale-{i}") for i in range(3)]
    try:
        await start_all(workers)
        handles = await asyncio.gather(
            *(basic.RAG.start(client, question=f"question {i}", task_queue=task_queue) for i in range(100))
        )
        results = await asyncio.wait_for(asyncio.gather(*(handle.result() for handle in handles)), timeout=120)
        assert all(result.answer for result in results)
        assert [worker.stop() for worker in workers] == [0, 0, 0]
    finally:
        for worker in workers:
            worker.kill()

    work = await work_of(handles)
    identities = {worker.identity for worker in workers}
    assert set(work.runs) == identities and sum(work.runs.values()) == 100, work.runs
    assert work.activity_workers() == identities, work.activities
    assert sum(work.activities.values()) == 200  # search_web and one LM call per run (describe is a local activity)
    assert lm_server.served == 100, "no LM call was made twice"
    print("runs per worker", dict(work.runs), "activities per worker", dict(work.activity_queues))


async def test_split_deployment_workflow_workers_and_lm_workers(
    client: Client,
    temporal_server: DevServer,
    lm_server: ScriptedLMServer,
    task_queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    concurrency = Concurrency(lm_server)
    monkeypatch.setattr(lm_server, "responder", concurrency.respond)
    programs = ("--module", "tests.programs.split")
    health = {name: tmp_path / f"{name}.ready" for name in ("flow-0", "flow-1", "lm-0")}
    flow = [
        ScaleWorker(
            temporal_server, lm_server, task_queue, name, *programs, "--no-activities", "--health-file", str(path)
        )
        for name, path in health.items()
        if name.startswith("flow")
    ]
    lm_worker = ScaleWorker(
        temporal_server, lm_server, split.LM_QUEUE, "lm-0", *programs,
        "--no-workflows", "--max-concurrent-activities", "3", "--health-file", str(health["lm-0"]),
    )  # fmt: skip
    workers = [*flow, lm_worker]
    try:
        await start_all(workers)
        assert all(path.exists() for path in health.values()), "each worker wrote its health file once polling"
        handles = await asyncio.gather(
            *(split.SplitQA.start(client, question=f"question {i}", task_queue=task_queue) for i in range(20))
        )
        results = await asyncio.wait_for(asyncio.gather(*(handle.result() for handle in handles)), timeout=120)
        assert all(result.verdict for result in results)
        assert [worker.stop() for worker in workers] == [0, 0, 0]
        assert all("STOPPED" in "".join(worker.output) for worker in workers)
        assert not any(path.exists() for path in health.values()), "health files are removed on shutdown"
    finally:
        for worker in workers:
            worker.kill()

    work = await work_of(handles)
    assert set(work.workflow_tasks) == {"flow-0", "flow-1"}, "workflow tasks ran only on the workflow workers"
    assert set(work.runs) == {"flow-0", "flow-1"}, "both workflow workers took runs"
    assert work.activity_workers() == {"lm-0"}, "LM calls ran only on the LM worker"
    assert set(work.activity_queues) == {("lm-0", split.LM_QUEUE)}
    assert work.activities["lm-0", LM_CALL] == 40
    assert 1 < concurrency.peak <= 3, "the LM worker's max_concurrent_activities bounds concurrent LM requests"


class Concurrency:
    """A responder that answers like the default one after a pause, recording the peak of concurrent requests."""

    def __init__(self, server: ScriptedLMServer, pause: float = 0.15) -> None:
        self._server = server
        self._pause = pause
        self._lock = threading.Lock()
        self._now = 0
        self.peak = 0

    def respond(self, request: ChatRequest) -> Reply:
        with self._lock:
            self._now += 1
            self.peak = max(self.peak, self._now)
        try:
            time.sleep(self._pause)
            return self._server.default_reply(request)
        finally:
            with self._lock:
                self._now -= 1


async def test_sigterm_lets_the_in_flight_lm_call_finish(
    client: Client,
    temporal_server: DevServer,
    lm_server: ScriptedLMServer,
    task_queue: str,
    lm,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    in_flight = threading.Event()

    def slow(request: ChatRequest) -> Reply:
        in_flight.set()
        time.sleep(2.0)
        return lm_server.default_reply(request)

    monkeypatch.setattr(lm_server, "responder", slow)
    worker = ScaleWorker(temporal_server, lm_server, task_queue, "graceful-0")
    try:
        await start_all([worker])
        handle = await basic.RAG.start(client, question="graceful?", task_queue=task_queue)
        assert await asyncio.to_thread(in_flight.wait, 60)
        stopping = time.monotonic()
        assert await asyncio.to_thread(worker.stop) == 0
        assert time.monotonic() - stopping > 1.0, "shutdown waited for the LM call"
    finally:
        worker.kill()
    work = await work_of([handle])
    assert work.activities["graceful-0", LM_CALL] == 1, "the LM call completed on the stopping worker"
    async with running_worker(client, task_queue, lm):
        assert (await handle.result()).answer
    assert lm_server.served == 1, "the LM call was not sent again"


async def test_serve_connects_with_a_profile_and_a_runtime_and_writes_its_health_file(
    temporal_server: DevServer, lm_server: ScriptedLMServer, task_queue: str, tmp_path: Path, monkeypatch
) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(f'[profile.staging]\naddress = "{temporal_server.address}"\nnamespace = "default"\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    for var in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(Exception, match="Profile 'production' not found"):
        await durable_dspy.serve_async(task_queue=task_queue, profile="production")
    with pytest.raises(ValueError, match="nothing to do"):
        await durable_dspy.serve_async(task_queue=task_queue, workflows=False, activities=False)

    stop = asyncio.Event()
    health = tmp_path / "ready" / "worker.json"
    seen: list[str] = []
    runtime = Runtime(telemetry=TelemetryConfig())  # e.g. with PrometheusConfig in production

    def ready(worker: Worker) -> None:
        seen.append(worker.client.service_client.config.target_host)
        assert worker.client.service_client.config.runtime is runtime
        assert json.loads(health.read_text())["task_queue"] == task_queue
        stop.set()

    await asyncio.wait_for(
        durable_dspy.serve_async(
            task_queue=task_queue, profile="staging", runtime=runtime, health_file=health, stop=stop, on_ready=ready
        ),
        timeout=60,
    )
    assert seen == [temporal_server.address] and not health.exists()
