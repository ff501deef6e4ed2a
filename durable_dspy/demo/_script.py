"""What the scripted LM answers in the demo: a sensible trajectory for the demo's question, offline."""

from __future__ import annotations

import re
from typing import Any

from durable_dspy.testing import ChatRequest, ScriptedLMServer

# (thought, tool, arguments) for each ReAct step of the demo question.
PLAN: list[tuple[str, str, dict[str, Any]]] = [
    ("I need the year the Eiffel Tower was completed.", "search", {"query": "Eiffel Tower completed"}),
    ("Now the year of the first crewed Moon landing.", "search", {"query": "first crewed Moon landing Apollo"}),
    (
        "The tower was completed in 1889 and Apollo 11 landed in 1969: subtract.",
        "calculate",
        {"expression": "1969 - 1889"},
    ),
    ("I have what I need.", "finish", {}),
]

_OBSERVATION = re.compile(r"\[\[ ## observation_\d+ ## \]\]\s*(.*?)\s*(?=\[\[ ## |\Z)", re.S)


def scripted_server(*, latency: float = 0.0) -> ScriptedLMServer:
    """A ``ScriptedLMServer`` that follows ``PLAN`` for ReAct prompts and answers from the last observation."""
    server = ScriptedLMServer(latency=latency)
    server.responder = lambda request: _reply(server, request)
    return server


def _reply(server: ScriptedLMServer, request: ChatRequest) -> Any:
    fields = request.output_fields
    if {"next_thought", "next_tool_name", "next_tool_args"} <= fields.keys():
        thought, tool, args = PLAN[min(request.step, len(PLAN) - 1)]
        if tool not in request.tools:
            return server.default_reply(request)
        return {"next_thought": thought, "next_tool_name": tool, "next_tool_args": args}
    if "answer" in fields:
        numbers = [obs for obs in _OBSERVATION.findall(request.user_text) if re.fullmatch(r"-?\d+(\.\d+)?", obs)]
        years = numbers[-1] if numbers else "80"
        values = {
            "reasoning": f"The Eiffel Tower was completed in 1889 and Apollo 11 landed in 1969; 1969 - 1889 = {years}.",
            "answer": f"{years} years",
        }
        return {name: values.get(name, name) for name in fields}
    return server.default_reply(request)
