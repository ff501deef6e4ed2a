"""OpenTelemetry tracing: Temporal's own spans, plus one GenAI span per LM call and per durable tool call.

The GenAI spans follow OpenTelemetry's GenAI semantic conventions and are made by an activity interceptor, so
they come from activities only. Activities never replay, and Temporal's ``TracingInterceptor`` makes no
workflow spans while a workflow replays: replaying a history, or resuming a run on another worker, adds no span.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic_core
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
from temporalio import activity
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError
from temporalio.plugin import SimplePlugin
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    WorkflowRunner,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ._protocol import LMCallRequest, LMCallResult
from ._tool import ToolCall

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI instrumentations' switch for recording prompts and completions; read when ``include_content`` is None."""

TRACER_NAME = "durable_dspy"

# LiteLLM's provider prefixes (``"<provider>/<model>"``, as in dspy.LM) -> gen_ai.provider.name's well-known values.
_PROVIDERS = {
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
}

# Request kwargs -> GenAI request attributes.
_REQUEST_ATTRIBUTES = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}


def provider_and_model(model: str) -> tuple[str | None, str]:
    """``"openai/gpt-4o-mini"`` -> ``("openai", "gpt-4o-mini")``; a model without a provider prefix keeps its name.

    Example:
        >>> provider_and_model("bedrock/anthropic.claude-3")
        ('aws.bedrock', 'anthropic.claude-3')
    """
    prefix, sep, rest = model.partition("/")
    if not sep or not rest:
        return None, model
    return _PROVIDERS.get(prefix, prefix), rest


def _json(value: Any) -> str:
    return pydantic_core.to_json(value, fallback=str).decode()


def _parts(content: Any) -> list[dict[str, Any]]:
    """A chat message's content as GenAI message parts (text kept; other media named by type only)."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append({"type": "text", "content": part.get("text", "")})
        elif isinstance(part, dict):
            parts.append({"type": str(part.get("type", "unknown"))})
    return parts


def _input_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        parts = _parts(message.get("content"))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
        if message.get("role") == "tool":
            parts = [
                {"type": "tool_call_response", "id": message.get("tool_call_id"), "response": message.get("content")}
            ]
        out.append({"role": message.get("role", "user"), "parts": parts})
    return out


def _output_messages(outputs: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for output in outputs:
        parts: list[dict[str, Any]] = []
        if isinstance(output, str):
            parts.append({"type": "text", "content": output})
        elif isinstance(output, Mapping):
            if output.get("reasoning_content"):
                parts.append({"type": "reasoning", "content": output["reasoning_content"]})
            if output.get("text") is not None:
                parts.append({"type": "text", "content": output["text"]})
            for call in output.get("tool_calls") or ():
                function = (call.get("function") if isinstance(call, Mapping) else None) or {}
                parts.append(
                    {"type": "tool_call", "name": function.get("name"), "arguments": function.get("arguments")}
                )
        else:
            parts.append({"type": "text", "content": str(output)})
        out.append({"role": "assistant", "parts": parts})
    return out


def _usage_attributes(usage: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI-style (prompt/completion) or Anthropic-style (input/output) usage -> gen_ai.usage.*."""

    def count(*keys: str) -> int | None:
        for key in keys:
            val = usage.get(key)
            if isinstance(val, int) and not isinstance(val, bool):
                return val
        return None

    def detail(section: str, key: str) -> int | None:
        val = (usage.get(section) or {}).get(key) if isinstance(usage.get(section), Mapping) else None
        return val if isinstance(val, int) and not isinstance(val, bool) else None

    found = {
        "gen_ai.usage.input_tokens": count("prompt_tokens", "input_tokens"),
        "gen_ai.usage.output_tokens": count("completion_tokens", "output_tokens"),
        "gen_ai.usage.cache_read.input_tokens": detail("prompt_tokens_details", "cached_tokens"),
        "gen_ai.usage.reasoning.output_tokens": detail("completion_tokens_details", "reasoning_tokens"),
    }
    return {key: val for key, val in found.items() if val is not None}


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ApplicationError) and exc.type:
        return exc.type
    return type(exc).__name__


class _GenAISpans(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, root: GenAIInterceptor) -> None:
        super().__init__(next)
        self._root = root

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        arg = input.args[0] if len(input.args) == 1 else None
        if isinstance(arg, LMCallRequest):
            return await self._lm_call(input, arg)
        if isinstance(arg, ToolCall):
            return await self._tool_call(input, arg)
        return await super().execute_activity(input)

    async def _lm_call(self, input: ExecuteActivityInput, request: LMCallRequest) -> Any:
        model = _worker_model(input, request)
        provider, model_name = provider_and_model(model) if model else (None, None)
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat"}
        if provider:
            attributes["gen_ai.provider.name"] = provider
            attributes["gen_ai.system"] = provider  # the pre-1.37 name, still read by many backends
        if model_name:
            attributes["gen_ai.request.model"] = model_name
        for key, name in _REQUEST_ATTRIBUTES.items():
            val = request.kwargs.get(key)
            if isinstance(val, int | float) and not isinstance(val, bool):
                attributes[name] = val
        n = request.kwargs.get("n")
        if isinstance(n, int) and n != 1:
            attributes["gen_ai.request.choice.count"] = n
        attributes.update(self._durable_attributes(predictor=request.caller))
        if self._root.include_content:
            attributes["gen_ai.input.messages"] = _json(_input_messages(request.messages))
        name = f"chat {model_name}" if model_name else "chat"
        with self._root.tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                result = await super().execute_activity(input)
            except BaseException as exc:
                self._failed(span, exc)
                raise
            if isinstance(result, LMCallResult):
                if result.response_model:
                    span.set_attribute("gen_ai.response.model", provider_and_model(result.response_model)[1])
                span.set_attributes(_usage_attributes(result.usage))
                if self._root.include_content:
                    span.set_attribute("gen_ai.output.messages", _json(_output_messages(result.outputs)))
            return result

    async def _tool_call(self, input: ExecuteActivityInput, call: ToolCall) -> Any:
        tool = activity.info().activity_type
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.type": "function",
            **self._durable_attributes(),
        }
        if self._root.include_content:
            attributes["gen_ai.tool.call.arguments"] = _json(call.arguments)
        with self._root.tracer.start_as_current_span(
            f"execute_tool {tool}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await super().execute_activity(input)
            except BaseException as exc:
                self._failed(span, exc)
                raise
            if self._root.include_content:
                span.set_attribute("gen_ai.tool.call.result", _json(result))
            return result

    @staticmethod
    def _durable_attributes(**names: str) -> dict[str, Any]:
        info = activity.info()
        attributes: dict[str, Any] = {"durable_dspy.attempt": info.attempt}
        if info.workflow_type:  # the program's name
            attributes["durable_dspy.program"] = info.workflow_type
        for key, val in names.items():
            if val:
                attributes[f"durable_dspy.{key}"] = val
        return attributes

    def _failed(self, span: trace.Span, exc: BaseException) -> None:
        error = _error_type(exc)
        span.set_attribute("error.type", error)
        # The message may quote a tool's arguments or the prompt: record it only when content is recorded.
        if self._root.include_content:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{error}: {exc}"))
        else:
            span.set_status(Status(StatusCode.ERROR, error))


def _worker_model(input: ExecuteActivityInput, request: LMCallRequest) -> str | None:
    """The model of the worker-side LM that serves this call (the request names the LM only by key)."""
    lm_activities = getattr(input.fn, "__self__", None)
    resolve = getattr(lm_activities, "resolve", None)
    if resolve is None:
        return None
    try:
        return str(resolve(request.program, request.lm_key).model)
    except Exception:
        return None  # the activity itself reports the configuration error


class GenAIInterceptor(Interceptor):
    """A worker interceptor that wraps each LM and durable tool activity in a GenAI span.

    Use it directly when the worker already has Temporal's tracing; otherwise add :class:`TracingPlugin`.
    """

    def __init__(self, *, tracer: Tracer, include_content: bool) -> None:
        self.tracer = tracer
        self.include_content = include_content

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _GenAISpans(next, self)


def _content_from_env() -> bool:
    return os.environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class TracingPlugin(SimplePlugin):
    """OpenTelemetry traces for durable runs: Temporal's spans and GenAI spans for LM and tool calls.

    Add it to the client that starts runs (so a run's spans join the caller's trace) and to the workers. Spans
    carry model names, token counts, tool names and Temporal ids; prompts, completions and tool arguments only
    with ``include_content=True``.

    Args:
        include_content: record prompts and completions (``gen_ai.input.messages``, ``gen_ai.output.messages``)
            and tool arguments and results. Default: the ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``
            environment variable, else off.
        tracer_provider: where spans go (the global provider when omitted).
        temporal_spans: add Temporal's ``TracingInterceptor`` (client, workflow and activity spans, and trace
            context carried from the caller through the run). Turn it off when the client and worker already
            have Temporal's tracing.
        always_create_workflow_spans: passed to ``TracingInterceptor``: create workflow spans even for runs
            started without a trace (from the CLI or a schedule).

    Example:
        >>> from durable_dspy.contrib.opentelemetry import TracingPlugin
        >>> durable_dspy.serve(task_queue="rag", lm=lm, plugins=[TracingPlugin()])
        >>> client = await durable_dspy.connect(plugins=[TracingPlugin()])
    """

    def __init__(
        self,
        *,
        include_content: bool | None = None,
        tracer_provider: TracerProvider | None = None,
        temporal_spans: bool = True,
        always_create_workflow_spans: bool = False,
    ) -> None:
        from . import __version__

        tracer = trace.get_tracer(TRACER_NAME, __version__, tracer_provider=tracer_provider)
        self.include_content = _content_from_env() if include_content is None else include_content
        interceptors: list[Any] = []
        if temporal_spans:
            temporal_tracer = trace.get_tracer("temporalio", tracer_provider=tracer_provider)
            interceptors.append(
                TracingInterceptor(temporal_tracer, always_create_workflow_spans=always_create_workflow_spans)
            )
        # After Temporal's interceptor, so each GenAI span is a child of its RunActivity span.
        interceptors.append(GenAIInterceptor(tracer=tracer, include_content=self.include_content))
        super().__init__("durable_dspy.tracing", interceptors=interceptors, workflow_runner=_passthrough)


def _passthrough(runner: WorkflowRunner | None) -> WorkflowRunner:
    """Keep OpenTelemetry's modules out of the workflow sandbox (one context implementation for both sides)."""
    if runner is None:  # the worker's default, made here so the order of plugins does not matter
        return SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("opentelemetry")
        )
    if isinstance(runner, SandboxedWorkflowRunner):
        return dataclasses.replace(runner, restrictions=runner.restrictions.with_passthrough_modules("opentelemetry"))
    return runner
