"""The durable programs and tools the benchmarks run (module level: workers import them by name)."""

from __future__ import annotations

import dspy

from durable_dspy import durable_program, durable_tool

TOOL_RESULT_BYTES = 240


@durable_tool
def lookup(query: str) -> str:
    """Look up facts about a query."""
    text = f"Facts about {query}: " + "the quick brown fox jumps over the lazy dog; " * 8
    return text[:TOOL_RESULT_BYTES]


@durable_program
class Sequential(dspy.Module):
    """``calls`` sequential LM calls, each prompt distinct."""

    def __init__(self):
        super().__init__()
        self.step = dspy.Predict("question, step -> answer")

    def forward(self, question: str, calls: int = 10):
        answer = ""
        for i in range(calls):
            answer = self.step(question=question, step=str(i)).answer
        return dspy.Prediction(answer=answer)


@durable_program(local_activities=True)
class SequentialLocal(Sequential):
    """``Sequential`` in the low-latency mode: LM calls are (flushed) local activities."""


@durable_program
class Agent(dspy.Module):
    """A ReAct agent with one durable tool; the scripted LM server decides how many steps it takes."""

    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[lookup], max_iters=40)

    def forward(self, question: str):
        return self.react(question=question)


@durable_program(local_activities=True)
class AgentLocal(Agent):
    """``Agent`` in the low-latency mode: local activities record results only, not prompts."""


@durable_program
class FanOut(dspy.Module):
    """One LM call per question: all at once with ``dspy.Parallel``, or one after another."""

    def __init__(self):
        super().__init__()
        self.predict = dspy.Predict("question -> answer")

    def forward(self, questions: list[str], parallel: bool = True):
        if parallel:
            results = dspy.Parallel(num_threads=8)([(self.predict, {"question": q}) for q in questions])
        else:
            results = [self.predict(question=q) for q in questions]
        return dspy.Prediction(answers=[r.answer if r is not None else None for r in results])
