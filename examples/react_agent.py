"""A ReAct agent written async (aforward, async tools): every tool call and LM call is a durable step.

    python examples/react_agent.py ["your question"]

See _local.py for the LM and the Temporal server it uses.
"""

from __future__ import annotations

import asyncio
import sys

import dspy
from _local import example_lm, local_worker

from durable_dspy import durable_program, durable_tool

POPULATION = {"paris": 2_102_650, "berlin": 3_878_100, "madrid": 3_460_491, "rome": 2_755_309}


@durable_tool
async def population(city: str) -> str:
    """The population of a European capital."""
    count = POPULATION.get(city.strip().lower())
    return f"{city} has {count:,} inhabitants." if count else f"No population data for {city!r}."


@durable_tool
async def compare(a: float, b: float) -> str:
    """How a compares with b, as a ratio."""
    return f"{a} is {a / b:.2f} times {b}." if b else "Cannot compare with zero."


@durable_program
class CityAgent(dspy.Module):
    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[population, compare], max_iters=6)

    async def aforward(self, question: str):
        return await self.react.acall(question=question)


async def main(question: str = "How many times more people live in Berlin than in Paris?") -> dspy.Prediction:
    async with local_worker(example_lm()) as client:
        prediction = await CityAgent.run(client, question=question)
    steps = [name for key, name in prediction.trajectory.items() if key.startswith("tool_name_")]
    print(f"Q: {question}\nA: {prediction.answer}\ntools used: {steps}")
    return prediction


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
