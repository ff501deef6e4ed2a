"""serve(): a worker from the registry, on the embedded dev server when no Temporal address is configured."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.worker import Worker

import durable_dspy
from durable_dspy._connect import connect_config
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import make_lm
from tests.programs import basic


def test_connect_config_uses_envconfig_and_explicit_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    for var in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    assert connect_config() is None, "no address anywhere: the embedded server"
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal.example:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "prod")
    assert connect_config() == {"target_host": "temporal.example:7233", "namespace": "prod"}
    assert connect_config("other:1", namespace="dev") == {"target_host": "other:1", "namespace": "dev"}
    monkeypatch.setenv("TEMPORAL_API_KEY", "key")
    config = connect_config()
    assert config is not None and config["api_key"] == "key" and config["tls"] is True


async def test_serve_starts_embedded_server_runs_programs_and_stops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lm_server: ScriptedLMServer
) -> None:
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    db = tmp_path / "embedded.sqlite"
    stop = asyncio.Event()
    ready: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        durable_dspy.serve_async(
            task_queue="embedded",
            lm=make_lm(lm_server),
            embedded_db=db,
            embedded_port=0,
            stop=stop,
            on_ready=ready.set_result,
        )
    )
    worker = await asyncio.wait_for(ready, timeout=60)
    address = worker.client.service_client.config.target_host
    client = await durable_dspy.connect(address)
    prediction = await basic.RAG.run(client, question="embedded?", task_queue="embedded")
    assert prediction.answer
    stop.set()
    await asyncio.wait_for(serving, timeout=60)
    assert db.exists() and db.stat().st_size > 0, "the embedded server persisted to the SQLite file"
