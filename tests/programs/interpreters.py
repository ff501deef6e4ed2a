"""Durable programs for tests/test_interpreter.py (code-executing DSPy modules beyond the matrix's)."""

from __future__ import annotations

import dspy

from durable_dspy import durable_program
from tests.programs.matrix import lookup


@durable_program
class CodeActWithDurableTool(dspy.Module):
    """CodeAct pastes each tool's source into the interpreter: a decorated tool's source does not run there."""

    def __init__(self):
        super().__init__()
        self.act = dspy.CodeAct("question -> answer", tools=[lookup], max_iters=2)

    def forward(self, question: str):
        return self.act(question=question)


@durable_program
class RecursiveLM(dspy.Module):
    """dspy.RLM gives its interpreter host tools (llm_query, ...), which code in an activity cannot call back."""

    def __init__(self):
        super().__init__()
        self.rlm = dspy.RLM("question -> answer", max_iters=2)

    def forward(self, question: str):
        return self.rlm(question=question)
