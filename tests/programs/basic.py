"""Durable programs and tools used by the integration tests (module level: workers import them by name)."""

from __future__ import annotations

import os

import dspy

from durable_dspy import NonRetryableToolError, durable_program, durable_tool

TOOL_CALLS: list[str] = []


def _record(call: str) -> None:
    """Count tool executions in this process, and across worker processes through a log file."""
    TOOL_CALLS.append(call)
    path = os.environ.get("DURABLE_DSPY_TEST_TOOL_LOG")
    if path:
        with open(path, "a") as log:
            log.write(call + "\n")


@durable_tool
def search_web(query: str) -> str:
    """Search the web for a query."""
    _record(f"search_web:{query}")
    return f"Paris is the capital of France. ({query})"


@durable_tool
async def fetch_page(url: str) -> str:
    """Fetch a page by URL."""
    _record(f"fetch_page:{url}")
    return f"<html>{url}</html>"


@durable_tool
def lookup(city: str, limit: int = 2) -> list[str]:
    """Look up facts about a city."""
    _record(f"lookup:{city}")
    return [f"{city} fact {i}" for i in range(limit)]


@durable_tool
def unserializable(query: str) -> object:
    """Returns something that cannot be stored in history."""
    return object()


@durable_tool
def refuse(query: str) -> str:
    """Always fails, permanently."""
    raise NonRetryableToolError(f"cannot answer {query!r}")


@durable_program
class RAG(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.ChainOfThought("context, question -> answer")

    def forward(self, question: str):
        return self.answer(context=search_web(question), question=question)


@durable_program
class AsyncRAG(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.ChainOfThought("context, question -> answer")

    async def aforward(self, question: str):
        context = await search_web.acall(question)
        page = await fetch_page("https://example.com/" + question.replace(" ", "-"))
        return await self.answer.acall(context=context + page, question=question)


class Summarize(dspy.Module):
    def __init__(self):
        super().__init__()
        self.summarize = dspy.Predict("text -> summary")

    def forward(self, text: str):
        return self.summarize(text=text)


@durable_program
class Nested(dspy.Module):
    """A module nesting a module nesting a predictor, plus a predictor of its own."""

    def __init__(self):
        super().__init__()
        self.inner = Summarize()
        self.qa = dspy.Predict("summary, question -> answer")

    def forward(self, question: str, text: str = "Temporal makes code durable."):
        summary = self.inner(text=text).summary
        return self.qa(summary=summary, question=question)


@durable_program
class Agent(dspy.Module):
    """ReAct with a sync and an async durable tool, in a sync forward."""

    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[search_web, fetch_page], max_iters=5)

    def forward(self, question: str):
        return self.react(question=question)


@durable_program
class AsyncAgent(dspy.Module):
    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[lookup, fetch_page], max_iters=5)

    async def aforward(self, question: str):
        return await self.react.acall(question=question)


@durable_program
class TenCalls(dspy.Module):
    """Ten sequential LM calls, each prompt distinct, for crash tests."""

    def __init__(self):
        super().__init__()
        self.step = dspy.Predict("question, step -> answer")

    def forward(self, question: str, calls: int = 10):
        answer = ""
        for i in range(calls):
            answer = self.step(question=question, step=str(i)).answer
        return dspy.Prediction(answer=answer)


@durable_program
class Failing(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question: str):
        self.qa(question=question)
        raise ValueError(f"the program refused {question!r}")


@durable_program
class BadTool(dspy.Module):
    def forward(self, question: str):
        return dspy.Prediction(answer=str(unserializable(question)))


@durable_program
class RefusingTool(dspy.Module):
    def forward(self, question: str):
        return dspy.Prediction(answer=refuse(question))


class SubRAG(RAG):
    """A subclass of a durable program: durable too, with its own workflow, without decorating again."""

    def forward(self, question: str):
        return self.answer(context="sub:" + search_web(question), question=question)


@durable_program(local_activities=True)
class TenCallsLocal(TenCalls):
    """TenCalls in the low-latency mode: LM calls are local activities."""
