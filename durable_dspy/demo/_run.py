"""``durable-dspy demo``: run the agent, SIGKILL its worker mid-run, resume on a new worker, count what was saved."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from .._cli_progress import ProgressPrinter, query_progress
from .._cli_serve import SCRIPTED, SCRIPTED_MODEL
from .._devserver import DevServer
from .._names import LM_CALL_ACTIVITY
from .._program import program_definition
from .._progress import Progress
from .agent import QUESTION, ResearchAgent

TASK_QUEUE = "durable-dspy-demo"
KILL_AFTER_LM_CALLS = 2
SCRIPTED_LATENCY = 0.2  # seconds per scripted LM answer, so the steps can be followed
# The scripted LM holds the third call open until its caller goes away, so the kill lands mid-call every time.
IN_FLIGHT_AT_KILL = "[[ ## observation_1 ## ]]"
RUN_TIMEOUT = 300.0  # seconds for each half of the run: generous, for a machine that is busy with other things


def _check_deadline(deadline: float, what: str, workers: list[_WorkerProcess]) -> None:
    if time.monotonic() > deadline:
        logs = "\n".join(f"--- worker {w.number} ---\n{w.log_tail()}" for w in workers)
        raise DemoError(f"the run did not {what} within {RUN_TIMEOUT:g} s.\n{logs}")


class DemoError(Exception):
    """The demo could not run (a worker did not start, the run failed)."""


class _WorkerProcess:
    """``durable-dspy worker durable_dspy.demo`` in its own process group, so it can be SIGKILLed like a crash."""

    def __init__(self, number: int, address: str, model: str, env: dict[str, str], tmp: Path) -> None:
        self.number = number
        self.health = tmp / f"worker-{number}.ready"
        self.log = tmp / f"worker-{number}.log"
        self.args = [
            sys.executable, "-m", "durable_dspy._cli", "worker", "durable_dspy.demo", "--task-queue", TASK_QUEUE,
            "--address", address, "--lm", model, "--health-file", str(self.health), "--log-level", "warning",
        ]  # fmt: skip
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.identity = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> _WorkerProcess:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        return self

    async def ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.health.exists():
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise DemoError(f"worker {self.number} did not start:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        with contextlib.suppress(OSError, ValueError):
            self.identity = json.loads(self.health.read_text()).get("identity", "")

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except (AttributeError, ProcessLookupError):  # no process groups (Windows) or already gone
                self.proc.kill()

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye to Temporal, exactly like a crash."""
        self._signal(getattr(signal, "SIGKILL", signal.SIGTERM))
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class _Activity:
    kind: str
    attempt: int = 0
    identity: str = ""
    completed: bool = False


def _activities(history: WorkflowHistory) -> list[_Activity]:
    """Each scheduled activity with its last attempt, the worker that ran it and whether it completed."""
    scheduled: dict[int, _Activity] = {}
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = _Activity(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            scheduled[attrs.scheduled_event_id].attempt = attrs.attempt
            scheduled[attrs.scheduled_event_id].identity = attrs.identity
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled[event.activity_task_completed_event_attributes.scheduled_event_id].completed = True
    return list(scheduled.values())


def _call_reached(lm_server: Any) -> bool:
    """Whether the call to kill in is really in flight: scheduled is not enough, the request must be held open.

    Killed earlier, the worker would leave the held-open answer to the next worker's attempt, which would wait forever.
    """
    return lm_server is None or any(request.fault == "hang" for request in lm_server.requests)


def _counts(progress: Progress | None) -> tuple[int, int]:
    steps = progress.steps if progress else []
    lm = sum(1 for s in steps if s.kind == "lm" and s.status == "completed")
    tools = sum(1 for s in steps if s.kind == "tool" and s.status == "completed")
    return lm, tools


def _env_for(model: str, lm_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if lm_url is not None:
        # The worker's "openai/scripted" model goes to the local scripted server; a real key never leaves here.
        env.update(OPENAI_API_BASE=lm_url + "/v1", OPENAI_API_KEY="scripted-no-key")
        env.pop("OPENAI_BASE_URL", None)
    return env


def _check_key(model: str) -> None:
    provider = model.split("/", 1)[0].upper()
    if "/" in model and not os.environ.get(f"{provider}_API_KEY"):
        click.echo(f"warning: {provider}_API_KEY is not set; {model} calls will probably fail.", err=True)


async def run_demo(*, model: str = SCRIPTED, question: str | None = None, keep_running: bool = False) -> None:
    """The demo, printed as it goes. Offline with ``model="scripted"``."""
    from .. import connect
    from ._script import scripted_server

    echo = click.echo
    question = question or QUESTION
    with contextlib.suppress(NotImplementedError, RuntimeError):  # SIGTERM unwinds like Ctrl-C: nothing left behind
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    scripted = model == SCRIPTED
    lm_server = scripted_server(latency=SCRIPTED_LATENCY).start() if scripted else None
    if lm_server is not None:
        lm_server.inject("hang", match=IN_FLIGHT_AT_KILL)
    if not scripted:
        _check_key(model)
    env = _env_for(model, lm_server.url if lm_server else None)
    worker_model = SCRIPTED_MODEL if scripted else model
    echo("durable-dspy demo: a durable ReAct agent, its worker killed mid-run and resumed by another\n")
    if lm_server is not None:
        echo(f"  LM        scripted local LM at {lm_server.url} (durable_dspy.testing.ScriptedLMServer, offline:")
        echo("            its answers follow a script; use --lm openai/gpt-4o-mini for a real model)")
    else:
        echo(f"  LM        {model}")
    with tempfile.TemporaryDirectory(prefix="durable-dspy-demo-") as tmpdir:
        tmp = Path(tmpdir)
        server = DevServer(db_filename=tmp / "temporal.sqlite", ui=True)
        await asyncio.to_thread(server.start)
        workers: list[_WorkerProcess] = []
        result: asyncio.Future[Any] | None = None
        try:
            echo(f"  Temporal  embedded dev server at {server.address}, web UI {server.ui_url}")
            echo(f"  question  {question}\n")
            client = await connect(server.address)
            first = _WorkerProcess(1, server.address, worker_model, env, tmp).start()
            workers.append(first)
            await first.ready()
            echo(f"worker 1 (pid {first.pid}) is polling; starting the run")
            handle = await ResearchAgent.start(
                client, question=question, id=f"demo-{uuid.uuid4().hex[:8]}", task_queue=TASK_QUEUE
            )
            result = asyncio.ensure_future(handle.result())
            printer = ProgressPrinter()
            at_kill: Progress | None = None
            deadline = time.monotonic() + RUN_TIMEOUT
            while not result.done():
                progress = await query_progress(handle)
                if progress is not None:
                    printer.update(progress)
                    last = progress.steps[-1] if progress.steps else None
                    if (
                        _counts(progress)[0] >= KILL_AFTER_LM_CALLS
                        and last is not None
                        and last.kind == "lm"
                        and last.status == "running"
                        and _call_reached(lm_server)
                    ):
                        at_kill = progress
                        break
                _check_deadline(deadline, "reach its third LM call", workers)
                await asyncio.wait({result}, timeout=0.1)
            if at_kill is None:
                raise DemoError("the run finished before the worker could be killed")
            first.kill()
            served_before = lm_server.served_by_key() if lm_server else collections.Counter()
            lm_done, tools_done = _counts(at_kill)
            printer.note(
                f"  {printer.failed} killed worker 1 with SIGKILL during LM call {lm_done + 1}, after {lm_done} LM "
                f"calls and {tools_done} tool calls had completed"
            )
            second = _WorkerProcess(2, server.address, worker_model, env, tmp).start()
            workers.append(second)
            await second.ready()
            heartbeat = program_definition(ResearchAgent).lm_options.heartbeat_timeout  # type: ignore[union-attr]
            seconds = heartbeat.total_seconds() if heartbeat else 0
            printer.note(
                f"worker 2 (pid {second.pid}) is polling: it replays the run from Temporal's history; the call that "
                f"was in flight is retried once its heartbeat times out ({seconds:g} s)"
            )
            deadline = time.monotonic() + RUN_TIMEOUT
            while not result.done():
                progress = await query_progress(handle)
                if progress is not None:
                    printer.update(progress)
                _check_deadline(deadline, "finish on worker 2", workers)
                await asyncio.wait({result}, timeout=0.3)
            prediction = result.result()
            final = await query_progress(handle)
            if final is not None:
                printer.update(final)
            history = await handle.fetch_history()
            echo(f"\nanswer: {prediction.answer}\n")
            _report(first.identity, lm_done, tools_done, history, served_before, lm_server)
            await _replay(history)
            url = f"{server.ui_url}/namespaces/default/workflows/{handle.id}"
            if keep_running:
                echo(f"The run in Temporal's web UI: {url}\nThe server and web UI stay up until Ctrl-C.")
                await asyncio.Event().wait()
            else:
                echo("To browse the run in Temporal's web UI, run `durable-dspy demo --keep-running`.")
        finally:
            if result is not None:
                result.cancel()
                with contextlib.suppress(BaseException):
                    await result  # retrieved, so an interrupted demo leaves no "exception never retrieved" noise
            for worker in workers:
                worker.stop()
            await asyncio.to_thread(server.stop)
            if lm_server is not None:
                lm_server.stop()


def _report(
    first_identity: str,
    lm_done: int,
    tools_done: int,
    history: WorkflowHistory,
    served_before: collections.Counter[str],
    lm_server: Any,
) -> None:
    echo = click.echo
    activities = _activities(history)
    lm_calls = [a for a in activities if a.kind == LM_CALL_ACTIVITY]
    by_first = [a for a in activities if a.completed and a.identity == first_identity]
    lm_by_first = sum(1 for a in by_first if a.kind == LM_CALL_ACTIVITY)
    tools_by_first = sum(1 for a in by_first if a.kind.startswith("durable_dspy.demo."))
    retried = sum(1 for a in lm_calls if a.attempt > 1)
    echo(f"Resumed: worker 2 took LM calls 1-{lm_by_first} and {tools_by_first} tool calls from the history")
    echo(f"  and continued at LM call {lm_by_first + 1}; the run made {len(lm_calls)} LM calls in all.")
    if lm_server is not None:
        after = lm_server.served_by_key()
        saved = sum(1 for key, count in served_before.items() if after[key] == count)
        echo(
            f"Saved: {saved} LM calls answered before the kill were not sent again (scripted LM server: "
            f"{lm_server.served} answers for {len(after)} LM calls)."
        )
    else:
        echo(f"Saved: {lm_by_first} LM calls completed before the kill were not sent again (from the history).")
    if retried:
        echo(f"  {retried} call was in flight at the kill and was sent again: activities run at least once.")
    echo(f"Tools: {tools_done} tool calls completed before the kill did not run again.")


async def _replay(history: WorkflowHistory) -> None:
    from ..testing import check_histories

    [report] = await check_histories([history])
    if not report.ok:
        saved = Path(tempfile.gettempdir()) / f"{history.workflow_id}.json"
        saved.write_text(history.to_json())
        raise DemoError(
            f"the finished run's history does not replay against the current code: "
            f"{report.message}\nHistory saved to {saved}; check it again with "
            f"`durable-dspy replay durable_dspy.demo {saved}`."
        )
    click.echo("Replay: the finished run's history replays cleanly against the current code.")
