"""An agent with several kinds of tools: sync and async, typed arguments, per-tool timeouts and retries.

    python examples/multitool_agent.py ["your question"]

Tool options take Temporal's names. A tool that raises NonRetryableToolError fails at once instead of being
retried; the agent sees the error as an observation. See _local.py for the LM and the Temporal server it uses.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

import dspy
from _local import example_lm, local_worker
from temporalio.common import RetryPolicy

from durable_dspy import NonRetryableToolError, durable_program, durable_tool

WEATHER = {"paris": (18.0, "cloudy"), "lisbon": (24.5, "sunny"), "oslo": (9.0, "rain")}
RATES = {("EUR", "USD"): 1.08, ("USD", "EUR"): 0.93, ("EUR", "NOK"): 11.7}


@durable_tool(start_to_close_timeout=timedelta(seconds=10), retry_policy=RetryPolicy(maximum_attempts=3))
async def get_weather(city: str) -> str:
    """Current temperature (Celsius) and sky in a city."""
    found = WEATHER.get(city.strip().lower())
    if found is None:
        raise NonRetryableToolError(f"unknown city {city!r}; known: {', '.join(sorted(WEATHER))}")
    return f"{city}: {found[0]} °C, {found[1]}"


@durable_tool
def convert_currency(amount: float, source: str, target: str) -> str:
    """Convert an amount between EUR, USD and NOK."""
    rate = RATES.get((source.upper(), target.upper()))
    if rate is None:
        return f"No rate from {source} to {target}."
    return f"{amount} {source.upper()} = {amount * rate:.2f} {target.upper()}"


@durable_tool
def packing_list(temperature_c: float, raining: bool = False) -> list[str]:
    """What to pack for a given temperature."""
    items = ["passport", "charger"]
    items += ["coat", "scarf"] if temperature_c < 12 else ["sunglasses"] if temperature_c > 22 else ["light jacket"]
    return items + (["umbrella"] if raining else [])


@durable_program
class TravelAgent(dspy.Module):
    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[get_weather, convert_currency, packing_list], max_iters=8)

    def forward(self, question: str):
        return self.react(question=question)


async def main(
    question: str = "I am going to Oslo with 200 EUR. What is the weather, how much is that in NOK, what do I pack?",
) -> dspy.Prediction:
    async with local_worker(example_lm()) as client:
        prediction = await TravelAgent.run(client, question=question)
    tools = [name for key, name in prediction.trajectory.items() if key.startswith("tool_name_")]
    print(f"Q: {question}\nA: {prediction.answer}\ntools used: {tools}")
    return prediction


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
