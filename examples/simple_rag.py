"""Retrieval-augmented QA: a durable retrieval tool feeds a ChainOfThought.

    python examples/simple_rag.py ["your question"]

The retrieval call and the LM call are Temporal activities: kill the process mid-run, run it again with the same
run id, and completed calls are not repeated. See _local.py for the LM and the Temporal server it uses.
"""

from __future__ import annotations

import asyncio
import sys

import dspy
from _local import example_lm, local_worker

from durable_dspy import durable_program, durable_tool

DOCUMENTS = [
    "Temporal records every step of a workflow in an event history, so a crashed run resumes where it stopped.",
    "DSPy programs are built from modules such as Predict, ChainOfThought and ReAct, and optimized by compilers.",
    "An activity is a function Temporal calls on a worker; its result is stored in the workflow's history.",
    "Workers poll a task queue; any worker on the queue can continue a run another worker started.",
]


@durable_tool
def retrieve(query: str, k: int = 2) -> list[str]:
    """The k documents sharing the most words with the query (a stand-in for a vector store)."""
    words = set(query.lower().split())
    return sorted(DOCUMENTS, key=lambda doc: -len(words & set(doc.lower().split())))[:k]


@durable_program
class SimpleRAG(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.ChainOfThought("context: list[str], question -> answer")

    def forward(self, question: str):
        return self.answer(context=retrieve(question), question=question)


async def main(question: str = "What happens to a run when its worker crashes?") -> dspy.Prediction:
    async with local_worker(example_lm()) as client:
        prediction = await SimpleRAG.run(client, question=question)
    print(f"Q: {question}\nA: {prediction.answer}\nusage: {prediction.get_lm_usage()}")
    return prediction


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
