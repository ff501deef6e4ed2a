"""A program changed under a running workflow is detected as such; compiled state is pinned per run."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import dspy
import pytest
from temporalio.client import Client

from durable_dspy._devserver import DevServer
from durable_dspy._state import state_hash
from durable_dspy.testing import check_histories
from durable_dspy.testing._lm_server import ScriptedLMServer
from durable_dspy.testing._replay import explain
from tests.conftest import running_worker
from tests.history import replay
from tests.programs import versions
from tests.support.processes import WorkerProcess


@pytest.mark.parametrize(
    ("v1", "message"),
    [
        (versions.StructureV1, r"started with predictors \[qa\(question -> answer\)\] and the current code has "
         r"\[qa\(question -> answer,confidence\)\]"),
        (versions.OrderV1, r"LM call #1 was made by 'OrderV1.draft' when the run started, but the current code "
         r"makes it from 'OrderV2.review'"),
    ],
)  # fmt: skip
async def test_changed_program_is_reported_as_such_on_replay(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm, v1: type, message: str
) -> None:
    async with running_worker(client, task_queue, lm, registry=versions.V1):
        handle = await v1.start(client, question="version?", task_queue=task_queue)  # type: ignore[attr-defined]
        await handle.result()
    history = await handle.fetch_history()
    await replay(history, registry=versions.V1)  # the code it ran with replays cleanly
    with pytest.raises(Exception, match=message) as info:
        await replay(history, registry=versions.V2)
    assert "Deploy the version the run started with" in str(info.value)


def _save_state(path: Path, instructions: str) -> Path:
    program = versions.Compiled()
    program.step.signature = program.step.signature.with_instructions(instructions)
    program.save(str(path))
    return path


async def test_compiled_state_is_pinned_per_run(
    client: Client, temporal_server: DevServer, lm_server: ScriptedLMServer, task_queue: str, tmp_path: Path
) -> None:
    v1 = _save_state(tmp_path / "v1.json", "Answer like version ONE.")
    v2 = _save_state(tmp_path / "v2.json", "Answer like version TWO.")
    assert state_hash(json.loads(v1.read_text())) != state_hash(json.loads(v2.read_text()))
    lm_server.latency = 0.3

    def worker(states: list[Path]) -> WorkerProcess:
        env = {"DURABLE_DSPY_TEST_STATES": os.pathsep.join(map(str, states))}
        extra = ["--module", "tests.programs.versions"]
        return WorkerProcess(
            address=temporal_server.address, task_queue=task_queue, lm_url=lm_server.url, extra=extra, env=env
        )

    first = worker([v1]).start()
    try:
        handle = await versions.Compiled.start(client, question="pinned", task_queue=task_queue)
        deadline = asyncio.get_running_loop().time() + 60
        while lm_server.served < 3:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
    finally:
        first.kill()
    with worker([v2]):
        old = await asyncio.wait_for(handle.result(), timeout=120)
        new = await asyncio.wait_for(
            versions.Compiled.run(client, question="fresh", calls=2, task_queue=task_queue), timeout=60
        )
    assert old.answer and new.answer
    prompts = {"pinned": [], "fresh": []}
    for request in lm_server.requests:
        text = json.dumps(request.body["messages"])
        prompts["pinned" if "pinned" in text else "fresh"].append(text)
    assert len(prompts["pinned"]) >= 6 and len(prompts["fresh"]) == 2
    assert all("version ONE" in text and "version TWO" not in text for text in prompts["pinned"])
    assert all("version TWO" in text for text in prompts["fresh"])


def test_state_hash_ignores_metadata() -> None:
    program = versions.Compiled()
    state = program.dump_state()
    assert state_hash({**state, "metadata": {"dependency_versions": {"dspy": "x"}}}) == state_hash(state)
    assert dspy.__version__


async def test_check_histories_reports_changes_clearly(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm, tmp_path: Path
) -> None:
    async with running_worker(client, task_queue, lm, registry=versions.V1):
        handle = await versions.OrderV1.start(client, question="saved", task_queue=task_queue)
        await handle.result()
    saved = tmp_path / "order.json"
    saved.write_text((await handle.fetch_history()).to_json())
    [ok] = await check_histories([saved], registry=versions.V1)
    assert ok.ok and ok.message == ""
    [changed] = await check_histories([saved], registry=versions.V2)
    assert not changed.ok
    assert "LM call #1 was made by 'OrderV1.draft'" in changed.message
    assert "Deploy the version the run started with" in changed.message


def test_explain_translates_temporal_nondeterminism() -> None:
    raw = (
        'Workflow activation completion failed: Failure { failure: Some(Failure { message: "[TMPRL1100] '
        "Nondeterminism error: Activity type of scheduled event 'a' does not match activity type of activity "
        'command \'b\'", source: "" }) }'
    )
    message = explain(raw, "wf-1")
    assert message.startswith("The program's code no longer matches the recorded run 'wf-1'")
    assert "Activity type of scheduled event 'a'" in message and "Deploy the version" in message
