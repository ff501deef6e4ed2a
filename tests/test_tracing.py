"""OpenTelemetry: one GenAI span per LM call and per tool call, under Temporal's spans, no content by default,
and nothing added by replaying a history."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer, Worker

import durable_dspy
from durable_dspy.contrib.opentelemetry import CAPTURE_CONTENT_ENV, TracingPlugin, provider_and_model
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import make_lm
from tests.programs import basic

QUESTION = "Which river flows through the capital of Zanzibar-Nova?"
SEARCH = "tests.programs.basic.search_web"
FETCH = "tests.programs.basic.fetch_page"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@contextlib.asynccontextmanager
async def traced(
    client: Client, task_queue: str, lm_server: ScriptedLMServer, **tracing: object
) -> AsyncIterator[Client]:
    """A client and a worker that both carry the tracing plugin (as a user would set them up)."""
    config = client.config()
    config["plugins"] = [durable_dspy.DurableDSPyPlugin(lm=make_lm(lm_server)), TracingPlugin(**tracing)]  # type: ignore[arg-type]
    traced_client = Client(**config)
    async with Worker(traced_client, task_queue=task_queue):
        yield traced_client


async def run_agent(client: Client, task_queue: str, lm_server: ScriptedLMServer, **tracing: object) -> WorkflowHistory:
    async with traced(client, task_queue, lm_server, **tracing) as traced_client:
        handle = await basic.Agent.start(traced_client, question=QUESTION, task_queue=task_queue)
        assert (await handle.result()).answer
    return await handle.fetch_history()


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent(spans: tuple[ReadableSpan, ...], span: ReadableSpan) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    return next(s for s in spans if s.context.span_id == span.parent.span_id)


def all_text(spans: tuple[ReadableSpan, ...]) -> str:
    return json.dumps([{**dict(span.attributes or {}), "_": [e.name for e in span.events]} for span in spans])


async def test_lm_and_tool_spans_follow_genai_conventions_without_content(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, provider: TracerProvider, exporter
) -> None:
    history = await run_agent(client, task_queue, lm_server, tracer_provider=provider, include_content=False)
    spans = exporter.get_finished_spans()

    chats = by_name(spans, "chat test-model")
    assert len(chats) == 4, [s.name for s in spans]  # two ReAct steps, finish, extract
    for chat in chats:
        attrs = dict(chat.attributes or {})
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
        assert attrs["gen_ai.request.model"] == "test-model"
        assert attrs["gen_ai.response.model"]
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["durable_dspy.program"] == "tests.programs.basic.Agent"
        assert str(attrs["durable_dspy.predictor"]).startswith("Agent.react.")
        # Temporal's spans around it: StartActivity (workflow) -> RunActivity (worker) -> chat.
        run_activity = parent(spans, chat)
        assert run_activity.name == "RunActivity:durable_dspy.lm.call"
        assert parent(spans, run_activity).name == "StartActivity:durable_dspy.lm.call"

    tools = [s for s in spans if s.name.startswith("execute_tool ")]
    assert [s.name for s in tools] == [f"execute_tool {SEARCH}", f"execute_tool {FETCH}"]
    for tool in tools:
        attrs = dict(tool.attributes or {})
        assert attrs["gen_ai.operation.name"] == "execute_tool"
        assert attrs["gen_ai.tool.name"] == tool.name.removeprefix("execute_tool ")
        assert parent(spans, tool).name == f"RunActivity:{attrs['gen_ai.tool.name']}"

    # One trace, from the client's StartWorkflow span down to every LM and tool call.
    (start,) = by_name(spans, "StartWorkflow:tests.programs.basic.Agent")
    assert {span.context.trace_id for span in spans} == {start.context.trace_id}
    assert parent(spans, by_name(spans, "RunWorkflow:tests.programs.basic.Agent")[0]) is start

    text = all_text(spans)
    assert "Zanzibar" not in text, "no prompt, completion or tool argument without include_content"
    assert not any(key.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.tool.call.")) for key in text.split('"'))

    # Replaying the run (what a worker does after a restart or a cache eviction) adds no span.
    exporter.clear()
    replayer = Replayer(
        workflows=[], plugins=[durable_dspy.DurableDSPyPlugin(), TracingPlugin(tracer_provider=provider)]
    )
    await replayer.replay_workflow(history)
    assert exporter.get_finished_spans() == ()


async def test_include_content_records_prompts_completions_and_tool_arguments(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, provider: TracerProvider, exporter
) -> None:
    await run_agent(client, task_queue, lm_server, tracer_provider=provider, include_content=True)
    spans = exporter.get_finished_spans()
    first = by_name(spans, "chat test-model")[0]
    messages = json.loads(first.attributes["gen_ai.input.messages"])  # type: ignore[index, arg-type]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert QUESTION in messages[-1]["parts"][0]["content"]
    (output,) = json.loads(first.attributes["gen_ai.output.messages"])  # type: ignore[index, arg-type]
    assert output["role"] == "assistant" and output["parts"][0]["type"] == "text"
    (search,) = by_name(spans, f"execute_tool {SEARCH}")
    assert "query" in json.loads(search.attributes["gen_ai.tool.call.arguments"])  # type: ignore[index, arg-type]
    assert "Paris" in search.attributes["gen_ai.tool.call.result"]  # type: ignore[index, operator]


async def test_each_attempt_of_a_retried_lm_call_is_a_span_and_the_failed_one_names_its_error(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, provider: TracerProvider, exporter
) -> None:
    lm_server.inject("500", times=1)
    async with traced(client, task_queue, lm_server, tracer_provider=provider) as traced_client:
        assert (await basic.RAG.run(traced_client, question=QUESTION, task_queue=task_queue)).answer
    failed, retried = by_name(exporter.get_finished_spans(), "chat test-model")
    assert failed.attributes["durable_dspy.attempt"] == 1 and retried.attributes["durable_dspy.attempt"] == 2  # type: ignore[index]
    assert failed.status.status_code is StatusCode.ERROR and retried.status.status_code is StatusCode.UNSET
    assert failed.attributes["error.type"] == failed.status.description  # type: ignore[index]
    assert "gen_ai.usage.input_tokens" not in failed.attributes  # type: ignore[operator]
    assert "Zanzibar" not in all_text((failed, retried)) and not failed.events


def test_content_switch_follows_the_genai_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CAPTURE_CONTENT_ENV, raising=False)
    assert TracingPlugin().include_content is False
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    assert TracingPlugin().include_content is True
    assert TracingPlugin(include_content=False).include_content is False


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("openai/gpt-4o-mini", ("openai", "gpt-4o-mini")),
        ("anthropic/claude-sonnet-4-5", ("anthropic", "claude-sonnet-4-5")),
        ("bedrock/anthropic.claude-3", ("aws.bedrock", "anthropic.claude-3")),
        ("vertex_ai/gemini-2.5-pro", ("gcp.vertex_ai", "gemini-2.5-pro")),
        ("openrouter/meta/llama-3", ("openrouter", "meta/llama-3")),
        ("gpt-4o", (None, "gpt-4o")),
    ],
)
def test_provider_and_model_from_dspy_model_names(model: str, expected: tuple[str | None, str]) -> None:
    assert provider_and_model(model) == expected


async def test_serve_takes_the_tracing_plugin(
    client: Client, temporal_server, lm_server: ScriptedLMServer, task_queue: str, provider: TracerProvider, exporter
) -> None:
    stop = asyncio.Event()
    ready: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        durable_dspy.serve_async(
            task_queue=task_queue,
            lm=make_lm(lm_server),
            address=temporal_server.address,
            plugins=[TracingPlugin(tracer_provider=provider)],
            stop=stop,
            on_ready=ready.set_result,
        )
    )
    try:
        await asyncio.wait_for(asyncio.shield(ready), timeout=60)
        assert (await basic.RAG.run(client, question=QUESTION, task_queue=task_queue)).answer
    finally:
        stop.set()
        await asyncio.wait_for(serving, timeout=60)
    names = [span.name for span in exporter.get_finished_spans()]
    assert names.count("chat test-model") == 1 and f"execute_tool {SEARCH}" in names
