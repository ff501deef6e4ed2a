"""The DSPy compatibility matrix: every supported DSPy feature as a durable program, compared with plain DSPy.

For every case: the durable output (fields, completions, usage) equals a plain DSPy run on the same scripted LM,
the run scheduled one LM activity per LM call of the plain run, the LM servers received the very same requests,
and the history replays. All cases share one worker. ``docs/dspy-compatibility.md`` is generated from
``tests/compat_table.py``, which names these cases; a test below keeps the two in step.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import dspy
import pydantic_core
import pytest
from dspy.primitives.local_interpreter import LocalInterpreter
from dspy.utils.callback import BaseCallback
from temporalio.client import Client

from durable_dspy.testing._lm_server import ScriptedLMServer
from tests import compat_table
from tests.conftest import ROOT, make_lm, running_worker
from tests.history import LM_CALL, replay, scheduled_activities, workflow_task_problems
from tests.programs import matrix

CODE_CELL = "durable_dspy.interpreter.execute"
TOOL = "tests.programs.matrix."

Q = "What is the capital of France?"
HISTORY = dspy.History(messages=[{"question": "Hi there", "answer": "Hello! Ask me anything."}])
PERSON = matrix.Person(name="Ada", age=36)


@dataclass(frozen=True)
class Case:
    program: type[dspy.Module]
    inputs: dict[str, Any] = field(default_factory=lambda: {"question": Q})
    tools: tuple[str, ...] = ()  # durable tool activities the run schedules, in order
    code_cells: int = 0  # interpreter activities the run schedules
    plain_settings: dict[str, Any] = field(default_factory=dict)  # extra dspy settings for the plain baseline


_CASES = [
    Case(matrix.PredictSync),
    Case(matrix.PredictAsync),
    Case(matrix.ChainOfThoughtSync),
    Case(matrix.ChainOfThoughtAsync),
    Case(matrix.NestedSync),
    Case(matrix.NestedAsync),
    Case(matrix.JSONAdapterSync),
    Case(matrix.JSONAdapterAsync),
    Case(matrix.ChatFallbackSync, {"question": f"{Q} {matrix.UNPARSEABLE}"}),
    Case(matrix.ChatFallbackAsync, {"question": f"{Q} {matrix.UNPARSEABLE}"}),
    Case(matrix.TypedSync, {"text": "Ada wrote the first program.", "subject": PERSON}),
    Case(matrix.TypedAsync, {"text": "Ada wrote the first program.", "subject": PERSON}),
    Case(matrix.CompletionsSync),
    Case(matrix.CompletionsAsync),
    Case(matrix.PerCallConfigSync),
    Case(matrix.PerCallConfigAsync),
    Case(matrix.HistorySync, {"question": Q, "history": HISTORY}),
    Case(matrix.HistoryAsync, {"question": Q, "history": HISTORY}),
    # Plain DSPy runs an async tool from a sync ReAct only with async-to-sync conversion; a durable tool just works.
    Case(
        matrix.ReActDurableToolsSync,
        tools=(TOOL + "lookup", TOOL + "population"),
        plain_settings={"allow_tool_async_sync_conversion": True},
    ),
    Case(matrix.ReActDurableToolsAsync, tools=(TOOL + "lookup", TOOL + "population")),
    Case(matrix.ReActPlainToolSync),
    Case(matrix.ReActPlainToolAsync),
    Case(matrix.ReActPlainAsyncToolSync, plain_settings={"allow_tool_async_sync_conversion": True}),
    Case(matrix.ReActPlainAsyncToolAsync),
    Case(
        matrix.ReActV2Sync,
        tools=(TOOL + "lookup", TOOL + "population"),
        plain_settings={"allow_tool_async_sync_conversion": True},
    ),
    Case(matrix.ReActV2Async, tools=(TOOL + "lookup", TOOL + "population")),
    Case(matrix.BestOfNSync),
    Case(matrix.RefineSync),
    Case(matrix.MultiChainComparisonSync),
    Case(matrix.SeveralLMsSync),
    Case(matrix.SeveralLMsAsync),
    Case(matrix.ParallelSync, {"questions": ["Paris?", "Rome?", "Oslo?", "Lima?", "Bern?"]}),
    Case(matrix.BatchSync, {"questions": ["Paris?", "Rome?", "Oslo?", "Lima?", "Bern?"]}),
    Case(matrix.GatherAsync, {"questions": ["Paris?", "Rome?", "Oslo?", "Lima?", "Bern?"]}),
    Case(matrix.EvaluateSync, {"questions": ["Paris?", "Rome?", "Oslo?"]}),
    Case(matrix.ProgramOfThoughtSync, code_cells=1),
    Case(matrix.CodeActSync, code_cells=2),  # the pasted tool source, then the generated code
]
CASES = {case.program.__name__: case for case in _CASES}


class CountLMCalls(BaseCallback):
    def __init__(self) -> None:
        self.calls = 0

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.calls += 1


@dataclass
class Env:
    client: Client
    task_queue: str
    lm: dspy.LM
    servers: tuple[ScriptedLMServer, ScriptedLMServer]

    def bodies(self) -> list[str]:
        """Every request the LM servers received so far, as canonical JSON."""
        return [json.dumps(r.body, sort_keys=True) for server in self.servers for r in server.requests]


@pytest.fixture(scope="module")
async def env(client: Client) -> AsyncIterator[Env]:
    """One worker for every case; a main scripted LM server and a second one for the judge predictor's own LM."""
    with ScriptedLMServer() as main, ScriptedLMServer() as judge:
        main.responder = lambda request: matrix.respond(main, request)
        previous = dict(matrix.JUDGE)
        matrix.JUDGE["api_base"] = judge.url + "/v1"
        lm = make_lm(main)
        task_queue = f"matrix-{uuid.uuid4().hex[:8]}"
        try:
            async with running_worker(client, task_queue, lm):
                yield Env(client, task_queue, lm, (main, judge))
        finally:
            matrix.JUDGE.update(previous)


def normalized(value: Any) -> Any:
    """JSON form: a durable result crosses Temporal as JSON, so pydantic outputs come back as dicts."""
    return pydantic_core.to_jsonable_python(value, fallback=str)


def completions(prediction: Any) -> Any:
    """n > 1 completions (a single completion is the prediction itself, and is not sent twice)."""
    found = getattr(prediction, "_completions", None)
    return None if found is None or len(found) < 2 else normalized(found._completions)


async def plain(case: Case, lm: dspy.LM, callback: Any = None) -> tuple[Any, int]:
    """The program run as plain DSPy (sync programs off the event loop, as a script would run them)."""
    counter = CountLMCalls()
    callbacks = [counter] if callback is None else [counter, callback]
    settings = {"lm": lm, "track_usage": True, "callbacks": callbacks, "interpreter_factory": LocalInterpreter}
    settings.update(case.plain_settings)
    program = case.program()
    if case.program.__name__.endswith("Async"):
        with dspy.context(**settings):
            output = await program.acall(**case.inputs)
    else:

        def run() -> Any:
            with dspy.context(**settings):
                return program(**case.inputs)

        output = await asyncio.to_thread(run)
    return output, counter.calls


class Recorder(BaseCallback):
    """Counts every callback event by handler name, and checks each end matches a start."""

    def __init__(self) -> None:
        self.events: collections.Counter[str] = collections.Counter()
        self.started: set[str] = set()
        self.unmatched: list[str] = []


def _recording(name: str) -> Any:
    def handler(self: Recorder, call_id: str, **kwargs: Any) -> None:
        self.events[name] += 1
        if name.endswith("_start"):
            self.started.add(call_id)
        elif call_id not in self.started:
            self.unmatched.append(name)

    return handler


for _name in [n for n in dir(BaseCallback) if n.startswith("on_")]:
    setattr(Recorder, _name, _recording(_name))


@contextlib.contextmanager
def worker_callbacks(callbacks: list[Any]) -> Iterator[None]:
    """``dspy.configure(callbacks=...)`` in a worker process (the test process hosts the worker)."""
    config = sys.modules["dspy.dsp.utils.settings"].main_thread_config
    previous = config["callbacks"]
    config["callbacks"] = callbacks
    try:
        yield
    finally:
        config["callbacks"] = previous


@pytest.mark.parametrize("name", list(CASES))
async def test_durable_run_matches_plain_dspy(env: Env, name: str) -> None:
    case = CASES[name]
    for server in env.servers:
        server.reset()
    expected, lm_calls = await plain(case, env.lm)
    plain_requests = env.bodies()

    for server in env.servers:
        server.reset()
    handle = await case.program.start(env.client, **case.inputs, task_queue=env.task_queue)
    prediction = await handle.result()
    durable_requests = env.bodies()

    assert normalized(dict(prediction.items())) == normalized(dict(expected.items()))
    assert completions(prediction) == completions(expected)
    assert prediction.get_lm_usage() == expected.get_lm_usage()
    # The provider saw the very same requests (messages, temperature, n, response_format, ...), in any order.
    assert sorted(durable_requests) == sorted(plain_requests)

    history = await handle.fetch_history()
    scheduled = scheduled_activities(history)
    assert scheduled.count(LM_CALL) == lm_calls
    assert tuple(a for a in scheduled if a.startswith(TOOL)) == case.tools
    assert scheduled.count(CODE_CELL) == case.code_cells
    assert workflow_task_problems(history) == []
    await replay(history)


async def test_own_lm_of_a_predictor_answers_on_the_worker(env: Env) -> None:
    """The judge's LM is the worker's own instance of the program's judge LM: a different server and model."""
    main, judge = env.servers
    main.reset()
    judge.reset()
    prediction = await matrix.SeveralLMsSync.run(env.client, question="Who judges?", task_queue=env.task_queue)
    assert (main.served, judge.served) == (1, 1)
    assert [r.body["model"] for r in judge.requests] == ["judge-model"]
    assert set(prediction.get_lm_usage()) == {"openai/test-model", "openai/judge-model"}


async def test_completions_survive_the_trip(env: Env) -> None:
    prediction = await matrix.CompletionsSync.run(env.client, question="Three answers?", task_queue=env.task_queue)
    assert len(prediction.completions) == 3
    assert prediction.answer == prediction.completions.answer[0]
    assert prediction.completions[2].answer == prediction.completions.answer[2]


def test_compatibility_doc_is_generated_from_the_matrix() -> None:
    named = [case for row in compat_table.ROWS for case in (row.sync, row.aio) if case]
    assert set(named) == set(CASES), "tests/compat_table.py and the matrix must name the same cases"
    for _, path, test in compat_table.CHECKS:
        assert f"def {test}(" in (ROOT / path).read_text(), f"compat_table names a missing test {path}::{test}"
    doc = (ROOT / compat_table.DOC).read_text()
    assert doc == compat_table.render(), "docs/dspy-compatibility.md is stale: run `python -m tests.compat_table`"


async def test_callbacks_fire_once_per_event_despite_replays(env: Env) -> None:
    """Worker callbacks fire in workflow code once per DSPy event (not again when the run is rebuilt from history),
    and the worker LM's own callbacks fire in the LM activity, once per real call."""
    main, _ = env.servers
    worker_lm = Recorder()
    lm = make_lm(main, callbacks=[worker_lm])
    for name in ("ReActDurableToolsSync", "ParallelSync", "ProgramOfThoughtSync"):
        case = CASES[name]
        expected = Recorder()
        _, lm_calls = await plain(case, env.lm, expected)
        durable = Recorder()
        worker_lm.events.clear()
        task_queue = f"callbacks-{uuid.uuid4().hex[:8]}"
        with worker_callbacks([durable]):
            # No workflow cache: every workflow task rebuilds the run from its history.
            async with running_worker(env.client, task_queue, lm, max_cached_workflows=0):
                handle = await case.program.start(env.client, **case.inputs, task_queue=task_queue)
                await handle.result()
            once = collections.Counter(durable.events)
            await replay(await handle.fetch_history())
        assert durable.events == once, f"{name}: callbacks fired again on replay"
        assert once == expected.events, name
        assert durable.unmatched == [], f"{name}: an end event without its start"
        assert worker_lm.events == {"on_lm_start": lm_calls, "on_lm_end": lm_calls}, name
