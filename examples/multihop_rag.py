"""Multi-hop retrieval: write a query, retrieve, take notes, repeat; then answer from the notes.

    python examples/multihop_rag.py ["your question"]

Each hop is two LM calls and one retrieval, all durable: a crash during hop 3 resumes at hop 3. See _local.py for
the LM and the Temporal server it uses.
"""

from __future__ import annotations

import asyncio
import sys

import dspy
from _local import example_lm, local_worker

from durable_dspy import durable_program, durable_tool

WIKI = {
    "Gustave Eiffel": "Gustave Eiffel was a French civil engineer whose company built the Eiffel Tower.",
    "Eiffel Tower": "The Eiffel Tower in Paris was completed in 1889 for the World's Fair.",
    "Statue of Liberty": "The Statue of Liberty's iron framework was designed by Gustave Eiffel's company.",
    "World's Fair 1889": "The 1889 Exposition Universelle in Paris marked the centennial of the French Revolution.",
    "Paris": "Paris is the capital of France, on the river Seine.",
}


@durable_tool
def search_wiki(query: str, k: int = 2) -> list[str]:
    """The k passages whose title or text shares the most words with the query."""
    words = set(query.lower().split())
    ranked = sorted(WIKI.items(), key=lambda item: -len(words & set(f"{item[0]} {item[1]}".lower().split())))
    return [f"{title}: {text}" for title, text in ranked[:k]]


@durable_program
class MultiHopRAG(dspy.Module):
    def __init__(self, hops: int = 2):
        super().__init__()
        self.hops = hops
        self.write_query = dspy.ChainOfThought("question, notes: list[str] -> query")
        self.take_notes = dspy.Predict("question, notes: list[str], passages: list[str] -> new_notes: list[str]")
        self.answer = dspy.ChainOfThought("question, notes: list[str] -> answer")

    def forward(self, question: str):
        notes: list[str] = []
        for _ in range(self.hops):
            query = self.write_query(question=question, notes=notes).query
            passages = search_wiki(query)
            notes += self.take_notes(question=question, notes=notes, passages=passages).new_notes
        return self.answer(question=question, notes=notes)


async def main(question: str = "What else did the company that built the Eiffel Tower design?") -> dspy.Prediction:
    async with local_worker(example_lm()) as client:
        prediction = await MultiHopRAG.run(client, question=question)
    print(f"Q: {question}\nA: {prediction.answer}\nusage: {prediction.get_lm_usage()}")
    return prediction


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
