"""A workflow module that calls ``dspy.configure`` at import time, as many DSPy scripts do."""

from __future__ import annotations

import dspy

from durable_dspy import Registry, durable_program

dspy.configure(track_usage=True)

# Its own registry: workers of other tests never re-import this module in their sandbox.
registry = Registry()


@durable_program(registry=registry)
class Configured(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question: str):
        return self.qa(question=question)
