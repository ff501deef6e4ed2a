"""The ``durable-dspy`` command: help, errors that list what is registered, and each command end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner
from temporalio.client import Client

from durable_dspy._cli import cli
from durable_dspy._devserver import DevServer
from durable_dspy.demo import calculate, search
from durable_dspy.testing import ScriptedLMServer
from tests.conftest import ROOT
from tests.history import LM_CALL, scheduled_activities

CHANGED_AGENT = """
import dspy
from durable_dspy import durable_program

@durable_program(name="durable_dspy.demo.ResearchAgent")
class ResearchAgent(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.Predict("question -> answer")

    def forward(self, question: str):
        return self.answer(question=question)
"""
CLI = [sys.executable, "-m", "durable_dspy._cli"]
COMMANDS = ["demo", "dev", "worker", "run", "replay"]


def cli_env(lm_server: ScriptedLMServer | None = None) -> dict[str, str]:
    env = {key: val for key, val in os.environ.items() if not key.startswith(("TEMPORAL_", "OPENAI_"))}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PYTHONPATH"] = str(ROOT)
    if lm_server is not None:
        env.update(OPENAI_API_BASE=lm_server.url + "/v1", OPENAI_API_KEY="sk-test-cli")
    return env


async def run_cli(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, cwd=cwd, env=env or cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.terminate()  # lets `demo` stop the server and workers it started
        try:
            await asyncio.wait_for(proc.wait(), 60)
        finally:
            proc.kill()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def test_console_script_is_declared() -> None:
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "durable-dspy"]
    assert script.value == "durable_dspy._cli:main"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert f"durable-dspy {command}" in result.output


def test_top_level_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert f"durable-dspy {command}" in result.output


def test_unknown_module_lists_modules_with_programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "agents_here.py").write_text("import dspy\n\n@durable_program\nclass A(dspy.Module): ...\n")
    (tmp_path / "plain.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", "agents_hre:A", "-i", "question=x"])
    assert result.exit_code == 1
    assert "Cannot import APP 'agents_hre'" in result.output
    assert "Modules here with durable programs: agents_here." in result.output


def test_unknown_program_lists_the_registered_ones() -> None:
    result = CliRunner().invoke(cli, ["run", "durable_dspy.demo:Agent", "-i", "question=x"])
    assert result.exit_code == 1
    assert "No durable program 'Agent' in 'durable_dspy.demo'" in result.output
    assert "Registered: durable_dspy.demo.ResearchAgent" in result.output
    assert "durable_dspy.demo:ResearchAgent" in result.output


def test_module_without_programs_is_an_error() -> None:
    result = CliRunner().invoke(cli, ["replay", "json", __file__])
    assert result.exit_code == 1
    assert "registers no durable programs" in result.output


def test_bad_inputs_are_refused_before_connecting() -> None:
    result = CliRunner().invoke(cli, ["run", "durable_dspy.demo:ResearchAgent", "-i", "questoin=x"])
    assert result.exit_code == 2
    assert "unknown input field(s) ['questoin']" in result.output
    assert "missing input field(s) ['question']" in result.output


def test_worker_needs_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", os.devnull)
    result = CliRunner().invoke(cli, ["worker", "durable_dspy.demo"])
    assert result.exit_code == 1
    assert "No Temporal address" in result.output
    assert "durable-dspy dev" in result.output


@pytest.mark.parametrize(
    ("expression", "expected"),
    [("1969 - 1889", "80"), ("2 ** 10 / 4", "256"), ("-(3 + 4) * 2", "-14"), ("7 / 2", "3.5"), ("10 % 4", "2")],
)
def test_demo_calculator(expression: str, expected: str) -> None:
    assert calculate(expression) == expected


@pytest.mark.parametrize("expression", ["__import__('os')", "x + 1", "9 ** 9 ** 9", "1 / 0", "[1] * 3", "a" * 300])
def test_demo_calculator_refuses(expression: str) -> None:
    assert calculate(expression).startswith("Error: cannot evaluate")


def test_demo_search_ranks_the_right_passage_first() -> None:
    assert search("When was the Eiffel Tower completed?").startswith("[Eiffel Tower]")
    assert search("first crewed Moon landing").startswith("[Apollo 11]")
    assert search("zebra quantum").startswith("No passage matches")


async def test_worker_run_and_replay(
    client: Client, temporal_server: DevServer, lm_server: ScriptedLMServer, task_queue: str, tmp_path: Path
) -> None:
    """`worker` serves the demo agent (health file, SIGTERM); `run` follows a run; `replay` checks its history."""
    health = tmp_path / "worker.ready"
    address = temporal_server.address
    worker = subprocess.Popen(
        [*CLI, "worker", "durable_dspy.demo", "-q", task_queue, "--address", address, "--lm", "openai/test-model",
         "--health-file", str(health)],
        cwd=ROOT, env=cli_env(lm_server), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not health.exists():
            assert worker.poll() is None, worker.communicate()[0].decode()
            assert time.monotonic() < deadline, "the worker wrote no health file"
            await asyncio.sleep(0.05)
        assert json.loads(health.read_text())["task_queue"] == task_queue

        code, out, err = await run_cli(
            "run", "durable_dspy.demo:ResearchAgent", "--input", "question=When was the Eiffel Tower built?",
            "-q", task_queue, "--address", address, "--id", f"cli-{task_queue}",
        )  # fmt: skip
        assert code == 0, err
        result = json.loads(out)
        assert result["answer"]
        assert "trajectory" in result
        assert "lm   ResearchAgent.react.react" in err  # live progress, from the progress query
        assert "tool durable_dspy.demo.search" in err
        assert "durable_dspy.demo.ResearchAgent completed: 4 LM calls, 2 tool calls" in err

        code, out, err = await run_cli(
            "run", "durable_dspy.demo:ResearchAgent", "-i", "question=Hi", "-q", task_queue, "--address", address,
            "--no-wait",
        )  # fmt: skip
        assert code == 0, err
        started = json.loads(out)
        assert await client.get_workflow_handle(started["workflow_id"]).result()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
        log = worker.communicate(timeout=60)[0].decode()
    assert worker.returncode == 0, log
    assert "worker stopped" in log
    assert not health.exists(), "the health file is removed on exit"

    history = await client.get_workflow_handle(f"cli-{task_queue}").fetch_history()
    assert scheduled_activities(history).count(LM_CALL) == 4
    saved = tmp_path / "run.json"
    saved.write_text(history.to_json())
    code, out, err = await run_cli("replay", "durable_dspy.demo", str(saved))
    assert code == 0, out + err
    assert f"ok      {saved}" in out

    # The same workflow name, now with different code: replay must say so and fail.
    (tmp_path / "changed.py").write_text(CHANGED_AGENT)
    code, out, err = await run_cli("replay", "changed", str(saved), cwd=tmp_path)
    assert code == 1, out + err
    assert f"FAILED  {saved}" in out
    assert "Program 'durable_dspy.demo.ResearchAgent'" in out
    assert "docs/versioning.md" in out  # what to do about it


async def test_dev_serves_the_app_with_a_web_ui(tmp_path: Path, lm_server: ScriptedLMServer) -> None:
    proc = subprocess.Popen(
        [*CLI, "dev", "durable_dspy.demo", "--port", "0", "--ui-port", "0", "--db", str(tmp_path / "dev.sqlite")],
        cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        ui = None
        deadline = time.monotonic() + 300
        while ui is None and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                break
            lines.append(line)
            if line.strip().startswith("web UI"):
                ui = line.split()[-1]
        assert ui is not None, "".join(lines)
        status = await asyncio.to_thread(lambda: urllib.request.urlopen(ui, timeout=10).status)
        assert status == 200
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest = await asyncio.to_thread(proc.stdout.read)  # the same buffered reader: it may hold lines already
        proc.wait(60)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    assert "durable_dspy.demo.ResearchAgent(question)" in output
    assert "scripted local LM" in output, output
    assert "durable-dspy run durable_dspy.demo:ResearchAgent --input question=..." in output


async def test_demo_kills_a_worker_and_resumes_offline() -> None:
    code, out, err = await run_cli("demo", timeout=900)
    assert code == 0, out + err
    assert "scripted local LM" in out
    assert "durable_dspy.testing.ScriptedLMServer" in out
    assert "killed worker 1 with SIGKILL during LM call 3, after 2 LM calls and 2 tool calls had completed" in err
    assert "Resumed: worker 2 took LM calls 1-2 and 2 tool calls from the history" in out
    assert "Saved: 2 LM calls answered before the kill were not sent again" in out
    assert "answer: 80 years" in out
    assert "replays cleanly" in out
