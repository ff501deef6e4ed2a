"""Durable programs and tools for fault tests: flaky and failing tools, slow calls, oversized payloads."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import timedelta

import dspy
from temporalio import activity
from temporalio.common import RetryPolicy

from durable_dspy import NonRetryableToolError, Registry, durable_program, durable_tool

# Their own registry, so workers of other tests do not load (and validate) these programs: pass
# registry=faults.registry to running_worker. Sleepy and its tool stay in the default one, for serve() workers.
registry = Registry()

FAST_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), backoff_coefficient=1.0, maximum_attempts=3)

# Per-process counters of tool executions (the in-process worker shares them with the test).
ATTEMPTS: dict[str, int] = {}
# Set once a slow tool has started, and once it has been cancelled / finished, for cancellation tests.
STARTED: dict[str, threading.Event] = {}
CANCELLED: dict[str, threading.Event] = {}
FINISHED: dict[str, threading.Event] = {}
BIG = 3 * 1024 * 1024


def _attempt(name: str) -> int:
    ATTEMPTS[name] = ATTEMPTS.get(name, 0) + 1
    path = os.environ.get("DURABLE_DSPY_TEST_TOOL_LOG")
    if path:
        with open(path, "a") as log:
            log.write(name + "\n")
    return ATTEMPTS[name]


def reset() -> None:
    ATTEMPTS.clear()
    for table in (STARTED, CANCELLED, FINISHED):
        table.clear()


def event(table: dict[str, threading.Event], key: str) -> threading.Event:
    return table.setdefault(key, threading.Event())


@durable_tool(registry=registry, retry_policy=FAST_RETRY)
def flaky_lookup(city: str) -> str:
    """Look up a city; fails on its first two attempts."""
    if _attempt(f"flaky_lookup:{city}") < 3:
        raise ConnectionError(f"lookup service unreachable for {city}")
    return f"{city} has 2 million inhabitants."


@durable_tool(registry=registry, retry_policy=FAST_RETRY)
def broken_lookup(city: str) -> str:
    """Look up a city (always fails: the service is down)."""
    _attempt(f"broken_lookup:{city}")
    raise RuntimeError(f"weather station for {city} is closed")


@durable_tool(registry=registry, retry_policy=FAST_RETRY)
def refusing_lookup(city: str) -> str:
    """Look up a city (refuses permanently)."""
    _attempt(f"refusing_lookup:{city}")
    raise NonRetryableToolError(f"no such city: {city}")


@durable_tool(registry=registry, start_to_close_timeout=timedelta(seconds=60))
def slow_sync_tool(key: str) -> str:
    """A sync tool that takes long; it stops when its activity is cancelled, or when the test sets FINISHED[key]."""
    _attempt(f"slow_sync_tool:{key}")
    event(STARTED, key).set()
    for i in range(600):
        activity.heartbeat(i)  # a sync tool may heartbeat from its thread (durable_dspy's wrapper does anyway)
        if activity.is_cancelled():
            event(CANCELLED, key).set()
            raise RuntimeError("cancelled")
        if event(FINISHED, key).wait(0.05):
            break
    return f"slow result {key}"


@durable_tool(registry=registry, start_to_close_timeout=timedelta(seconds=60))
async def slow_async_tool(key: str) -> str:
    """An async tool that takes long; cancellation reaches it as CancelledError."""
    _attempt(f"slow_async_tool:{key}")
    event(STARTED, key).set()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        event(CANCELLED, key).set()
        raise
    return f"slow result {key}"


@durable_tool
def sleepy_tool(seconds: float) -> str:
    """Sleeps, then answers (for graceful-shutdown tests in a worker process)."""
    _attempt("sleepy_tool")
    time.sleep(seconds)
    return f"slept {seconds}"


@durable_tool(registry=registry)
def huge_tool(query: str) -> str:
    """Returns more than Temporal's 2 MB payload limit."""
    _attempt(f"huge_tool:{query}")
    return "x" * BIG


@durable_tool(registry=registry)
def big_tool(query: str, size: int) -> str:
    """Returns ``size`` bytes of text."""
    return (query + " ") * (size // (len(query) + 1))


@durable_program(registry=registry)
class FlakyTool(dspy.Module):
    def forward(self, city: str):
        return dspy.Prediction(answer=flaky_lookup(city))


@durable_program(registry=registry)
class BrokenTool(dspy.Module):
    def forward(self, city: str):
        return dspy.Prediction(answer=broken_lookup(city))


@durable_program(registry=registry)
class OneCall(dspy.Module):
    """A single LM call, with the default LM options."""

    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question: str):
        return self.qa(question=question)


@durable_program(
    registry=registry,
    start_to_close_timeout=timedelta(seconds=2),
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3),
)
class ShortTimeout(OneCall):
    """A single LM call cut after 2 seconds and retried."""


@durable_program(
    registry=registry, retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=4)
)
class FastRetry(OneCall):
    """A single LM call with a user retry policy that lists no non-retryable types (they must still not retry)."""


class WeatherAgentBase(dspy.Module):
    tools: list = []

    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=self.tools, max_iters=4)

    def forward(self, question: str):
        return self.react(question=question)


@durable_program(registry=registry)
class BrokenToolAgent(WeatherAgentBase):
    """ReAct whose only tool always fails: the failure becomes an observation."""

    tools = [broken_lookup]


@durable_program(registry=registry)
class RefusingToolAgent(WeatherAgentBase):
    tools = [refusing_lookup]


@durable_program(registry=registry)
class AsyncBrokenToolAgent(dspy.Module):
    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[broken_lookup], max_iters=4)

    async def aforward(self, question: str):
        return await self.react.acall(question=question)


@durable_program(registry=registry)
class LongAgent(dspy.Module):
    """ReAct with two tools, for context-window tests (three steps, then finish)."""

    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[flaky_lookup, big_tool], max_iters=5)

    def forward(self, question: str):
        return self.react(question=question)


@durable_program(registry=registry)
class SlowSyncTool(dspy.Module):
    def forward(self, key: str):
        return dspy.Prediction(answer=slow_sync_tool(key))


@durable_program(registry=registry)
class SlowAsyncTool(dspy.Module):
    async def aforward(self, key: str):
        return dspy.Prediction(answer=await slow_async_tool.acall(key))


@durable_program(registry=registry)
class SlowToolAgent(dspy.Module):
    """ReAct calling a slow tool: cancelling the run mid-tool must cancel the run, not become an observation."""

    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[slow_sync_tool], max_iters=3)

    def forward(self, question: str):
        return self.react(question=question)


@durable_program
class Sleepy(dspy.Module):
    """An LM call, then a sleeping tool, then another LM call."""

    def __init__(self):
        super().__init__()
        self.first = dspy.Predict("question -> plan")
        self.second = dspy.Predict("question, plan, note -> answer")

    def forward(self, question: str, seconds: float = 2.0):
        plan = self.first(question=question).plan
        note = sleepy_tool(seconds)
        return self.second(question=question, plan=plan, note=note)


@durable_program(local_activities=True)
class SleepyLocal(Sleepy):
    """Sleepy in the low-latency mode: its LM and tool calls are local activities."""


@durable_program(registry=registry)
class HugeTool(dspy.Module):
    def forward(self, query: str):
        return dspy.Prediction(answer=huge_tool(query)[:10])


@durable_program(registry=registry)
class BigTool(dspy.Module):
    """Returns the size of a tool result (payload-budget tests: compression, external storage)."""

    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, query: str, size: int):
        text = big_tool(query, size)
        return dspy.Prediction(size=len(text), answer=self.qa(question=query).answer)


@durable_program(registry=registry)
class HugePrompt(dspy.Module):
    """Sends a prompt larger than Temporal's payload limit."""

    def __init__(self):
        super().__init__()
        self.summarize = dspy.Predict("text -> summary")

    def forward(self, size: int):
        return self.summarize(text="y" * size)
