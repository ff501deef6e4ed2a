"""The scripted LM server against plain DSPy (no Temporal), over both DSPy engines."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported: this machine is offline

import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import dspy
import httpx
import pydantic
import pytest
from dspy.utils.exceptions import (
    ContextWindowExceededError,
    LMAuthError,
    LMError,
    LMInvalidRequestError,
    LMRateLimitError,
    LMServerError,
    LMUnsupportedModelError,
)

from durable_dspy.testing._lm_server import ChatRequest, Reply, ScriptedLMServer, request_key

ENGINES = ["auto", "litellm"]


@pytest.fixture(scope="module")
def server_module() -> Iterator[ScriptedLMServer]:
    with ScriptedLMServer() as server:
        yield server


@pytest.fixture
def server(server_module: ScriptedLMServer) -> ScriptedLMServer:
    server_module.reset()
    server_module.latency = 0.0
    server_module.responder = None
    return server_module


def make_lm(server: ScriptedLMServer, engine: str = "auto", **kwargs: Any) -> dspy.LM:
    return dspy.LM(
        "openai/test-model", api_base=server.url + "/v1", api_key="sk-test", cache=False, engine=engine, **kwargs
    )


def post(server: ScriptedLMServer, body: dict[str, Any] | None = None, timeout: float = 5.0) -> httpx.Response:
    body = body or {"model": "test-model", "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=timeout)


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str]
    kind: Literal["human", "robot"]


class Typed(dspy.Signature):
    """Describe the question in several typed ways."""

    question: str = dspy.InputField()
    count: int = dspy.OutputField()
    names: list[str] = dspy.OutputField()  # not `items`: that is a Prediction method
    person: Person = dspy.OutputField()
    ok: bool = dspy.OutputField()
    score: float = dspy.OutputField()
    choice: Literal["yes", "no", "maybe"] = dspy.OutputField()


def search(query: str) -> str:
    """Search the web."""
    return f"results for {query}"


def lookup(key: str) -> str:
    return f"value of {key}"


# -- DSPy programs against the server


@pytest.mark.parametrize("engine", ENGINES)
def test_predict_and_chain_of_thought(server: ScriptedLMServer, engine: str) -> None:
    lm = make_lm(server, engine)
    with dspy.context(lm=lm):
        pred = dspy.Predict("question -> answer")(question="What is 2+2?")
        cot = dspy.ChainOfThought("question -> answer")(question="What is 2+2?")
    assert pred.answer.startswith("answer ")
    assert cot.answer.startswith("answer ")
    assert cot.reasoning.startswith("Reasoning")
    assert server.served == 2
    assert lm.history[-1]["usage"]["total_tokens"] > 0


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("adapter", [dspy.ChatAdapter, dspy.JSONAdapter])
def test_typed_outputs(server: ScriptedLMServer, engine: str, adapter: type[dspy.ChatAdapter]) -> None:
    seen: list[ChatRequest] = []

    def spy(request: ChatRequest) -> Reply:
        seen.append(request)
        return server.default_reply(request)

    server.responder = spy
    with dspy.context(lm=make_lm(server, engine), adapter=adapter()):
        pred = dspy.Predict(Typed)(question="Who?")
    assert isinstance(pred.count, int)
    assert isinstance(pred.names, list) and all(isinstance(i, str) for i in pred.names)
    assert isinstance(pred.person, Person) and pred.person.kind in ("human", "robot")
    assert isinstance(pred.ok, bool)
    assert isinstance(pred.score, float)
    assert pred.choice in ("yes", "no", "maybe")
    (request,) = seen
    assert request.is_json is (adapter is dspy.JSONAdapter)
    assert request.output_fields == {
        "count": "int",
        "names": "list[str]",
        "person": "Person",
        "ok": "bool",
        "score": "float",
        "choice": "Literal['yes', 'no', 'maybe']",
    }
    assert request.user_text.startswith("[[ ## question ## ]]\nWho?")
    assert server.served == 1  # no adapter fallback: the first answer parsed


@pytest.mark.parametrize("engine", ENGINES)
def test_n_completions(server: ScriptedLMServer, engine: str) -> None:
    with dspy.context(lm=make_lm(server, engine)):
        pred = dspy.Predict("question -> answer", n=3)(question="Pick one")
    answers = pred.completions.answer
    assert len(answers) == 3
    if engine == "litellm":
        # LiteLLM sends one request with n=3; the server varies choices after the first.
        assert [r.body.get("n") for r in server.requests] == [3]
        assert len(set(answers)) == 3
    else:
        # DSPy's native engine sends n separate single-choice requests, so they are identical.
        assert len(server.requests) == 3 and all("n" not in r.body for r in server.requests)
        assert len(set(answers)) == 1
    assert answers[0] == dspy.Predict("question -> answer")(question="Pick one", lm=make_lm(server, engine)).answer


@pytest.mark.parametrize("engine", ENGINES)
def test_react_calls_tools_in_order_then_finish(server: ScriptedLMServer, engine: str) -> None:
    seen: list[ChatRequest] = []

    def spy(request: ChatRequest) -> Reply:
        seen.append(request)
        return server.default_reply(request)

    server.responder = spy
    with dspy.context(lm=make_lm(server, engine)):
        pred = dspy.ReAct("question -> answer", tools=[search, lookup])(question="Where?")
    traj = pred.trajectory
    assert [traj[f"tool_name_{i}"] for i in range(3)] == ["search", "lookup", "finish"]
    assert traj["tool_args_0"] == {"query": "q0"} and traj["tool_args_1"] == {"key": "q1"}
    assert traj["tool_args_2"] == {}
    assert traj["observation_0"] == "results for q0" and traj["observation_1"] == "value of q1"
    assert pred.answer.startswith("answer ")
    assert [r.step for r in seen[:3]] == [0, 1, 2]
    assert seen[0].tools == ["search", "lookup", "finish"]
    assert seen[0].tool_args["search"] == {"query": {"type": "string"}}
    assert seen[3].tools == [] and "reasoning" in seen[3].output_fields  # the extract step
    # Each distinct LM call (3 ReAct steps + extract) was served exactly once.
    assert server.served == 4
    assert sorted(server.served_by_key().values()) == [1, 1, 1, 1]


def test_react_steps_configurable() -> None:
    with ScriptedLMServer(react_steps=0) as server, dspy.context(lm=make_lm(server)):
        pred = dspy.ReAct("question -> answer", tools=[search])(question="Where?")
    assert pred.trajectory["tool_name_0"] == "finish"


@pytest.mark.parametrize("engine", ENGINES)
async def test_async_call(server: ScriptedLMServer, engine: str) -> None:
    with dspy.context(lm=make_lm(server, engine)):
        pred = await dspy.ChainOfThought("question -> answer").acall(question="async?")
    assert pred.answer.startswith("answer ")
    assert server.served == 1


def test_deterministic_across_runs_and_engines(server: ScriptedLMServer) -> None:
    def ask(engine: str, question: str) -> str:
        with dspy.context(lm=make_lm(server, engine)):
            return dspy.Predict("question -> answer")(question=question).answer

    first = ask("auto", "What is the capital of France?")
    assert ask("auto", "What is the capital of France?") == first
    assert ask("litellm", "What is the capital of France?") == first
    assert ask("auto", "What is the capital of Spain?") != first
    counts = server.served_by_key()
    assert sorted(counts.values()) == [1, 3]  # three sends of one call, one of another


def test_responder_dict_and_raw_string(server: ScriptedLMServer) -> None:
    def responder(request: ChatRequest) -> Reply:
        if "raw" in request.user_text:
            return "[[ ## answer ## ]]\nverbatim\n\n[[ ## completed ## ]]"
        return {"answer": f"custom {request.output_fields['answer']}"}

    server.responder = responder
    with dspy.context(lm=make_lm(server)):
        assert dspy.Predict("question -> answer")(question="x").answer == "custom str"
        assert dspy.Predict("question -> answer")(question="raw").answer == "verbatim"
    with dspy.context(lm=make_lm(server), adapter=dspy.JSONAdapter()):
        assert dspy.Predict("question -> answer")(question="x").answer == "custom str"


def test_responder_error_is_a_500(server: ScriptedLMServer) -> None:
    def broken(request: ChatRequest) -> Reply:
        raise KeyError("oops")

    server.responder = broken
    response = post(server)
    assert response.status_code == 500 and "oops" in response.json()["error"]["message"]
    assert server.served == 0


# -- the wire format


def test_completion_shape_and_recording(server: ScriptedLMServer) -> None:
    messages = [{"role": "user", "content": "hello"}]
    response = post(server, {"model": "test-model", "messages": messages, "n": 2})
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion" and data["model"] == "test-model" and data["id"]
    assert isinstance(data["created"], int)
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert all(c["message"]["role"] == "assistant" and c["finish_reason"] == "stop" for c in data["choices"])
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    (recorded,) = server.requests
    assert recorded.status == 200 and recorded.body["messages"] == messages and recorded.fault is None
    assert recorded.key == request_key(messages)
    assert server.served_by_key() == {request_key(messages): 1}
    assert httpx.get(server.url + "/v1/models").json()["data"][0]["id"] == "test-model"


def test_stream_is_refused(server: ScriptedLMServer) -> None:
    response = post(server, {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True})
    assert response.status_code == 400 and response.json()["error"]["param"] == "stream"


# -- faults

ERROR_STATUS = {
    "500": 500,
    "503": 503,
    "429": 429,
    "400": 400,
    "401": 401,
    "403": 403,
    "404": 404,
    "context_window": 400,
}

DSPY_ERROR: dict[str, type[LMError]] = {
    "500": LMServerError,
    "503": LMServerError,
    "429": LMRateLimitError,
    "400": LMInvalidRequestError,
    "401": LMAuthError,
    "403": LMAuthError,
    "404": LMUnsupportedModelError,
    "context_window": ContextWindowExceededError,
}


@pytest.mark.parametrize("kind", ERROR_STATUS)
def test_error_faults_on_the_wire(server: ScriptedLMServer, kind: str) -> None:
    server.inject(kind, retry_after=2 if kind == "429" else None)
    response = post(server)
    assert response.status_code == ERROR_STATUS[kind]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if kind == "429":
        assert response.headers["Retry-After"] == "2"
    if kind == "context_window":
        assert error["code"] == "context_length_exceeded"
    assert post(server).status_code == 200  # consumed
    assert [r.status for r in server.requests] == [ERROR_STATUS[kind], 200]
    assert server.requests[0].fault == kind
    assert server.served == 1


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", DSPY_ERROR)
def test_error_faults_raise_in_dspy(server: ScriptedLMServer, engine: str, kind: str) -> None:
    server.inject(kind)
    with pytest.raises(DSPY_ERROR[kind]) as info, dspy.context(lm=make_lm(server, engine, num_retries=0)):
        dspy.Predict("question -> answer")(question="fail?")
    assert info.value.status == ERROR_STATUS[kind]
    assert server.served == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_rate_limit_is_retried_after_hint(server: ScriptedLMServer, engine: str) -> None:
    server.inject("429", times=2, retry_after=0.05)
    with dspy.context(lm=make_lm(server, engine, num_retries=3)):
        assert dspy.Predict("question -> answer")(question="retry?").answer.startswith("answer ")
    assert [r.status for r in server.requests] == [429, 429, 200]
    assert list(server.served_by_key().values()) == [1]


def test_match_and_order(server: ScriptedLMServer) -> None:
    server.inject("500", match="Spain")
    server.inject("503", times=2)
    assert post(server).status_code == 503  # does not match "Spain": the 500 waits
    spain = {"model": "m", "messages": [{"role": "user", "content": "capital of Spain"}]}
    assert post(server, spain).status_code == 500
    assert post(server, spain).status_code == 503
    assert post(server, spain).status_code == 200
    with pytest.raises(ValueError):
        server.inject("418")


def test_slow_and_latency(server: ScriptedLMServer) -> None:
    server.inject("slow", delay=0.3)
    t0 = time.monotonic()
    assert post(server).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    assert server.requests[0].fault == "slow" and server.served == 1
    server.latency = 0.2
    t0 = time.monotonic()
    assert post(server).status_code == 200
    assert 0.2 <= time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("engine", ENGINES)
def test_hang_times_out_in_dspy(server: ScriptedLMServer, engine: str) -> None:
    server.inject("hang")
    with pytest.raises(LMError), dspy.context(lm=make_lm(server, engine, num_retries=0, timeout=0.5)):
        dspy.Predict("question -> answer")(question="hang?")
    assert [r.status for r in server.requests] == [None]
    assert server.served == 0


def test_hang_releases_on_client_close_and_does_not_block_stop() -> None:
    server = ScriptedLMServer().start()
    server.inject("hang", times=2)
    with pytest.raises(httpx.ReadTimeout):
        post(server, timeout=0.3)
    deadline = time.monotonic() + 2
    while server._connections and time.monotonic() < deadline:  # the handler notices the client left
        time.sleep(0.02)
    assert not server._connections
    errors: list[BaseException] = []

    def hanging_client() -> None:
        try:
            post(server, timeout=30)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=hanging_client)
    thread.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.0
    thread.join(5)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], httpx.TransportError)
