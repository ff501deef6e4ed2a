"""Programs in the low-latency mode (``local_activities=True``): LM and tool calls as flushed local activities."""

from __future__ import annotations

from datetime import timedelta

import dspy
from temporalio.common import RetryPolicy

from durable_dspy import Registry, durable_program, durable_tool

registry = Registry()  # pass registry=local.registry to running_worker

CALLS: list[str] = []  # tool executions in this process (the in-process worker shares it with the test)


@durable_tool(registry=registry)
def city_facts(city: str) -> str:
    """Facts about a city."""
    CALLS.append(city)
    return f"{city} is a city with a river."


@durable_program(registry=registry, local_activities=True)
class OneCallLocal(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question: str):
        return self.qa(question=question)


@durable_program(
    registry=registry,
    local_activities=True,
    retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=4),
)
class FastRetryLocal(OneCallLocal):
    """A user retry policy that lists no non-retryable types (refusals must still not retry)."""


@durable_program(registry=registry, local_activities=True)
class AgentLocal(dspy.Module):
    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[city_facts], max_iters=5)

    def forward(self, question: str):
        return self.react(question=question)


@durable_program(registry=registry, local_activities=True)
class FanOutLocal(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, questions: list[str]):
        results = dspy.Parallel(num_threads=4)([(self.qa, {"question": q}) for q in questions])
        return dspy.Prediction(answers=[r.answer for r in results])
