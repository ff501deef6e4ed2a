"""A program for the split-deployment test: its LM calls go to their own task queue, served by LM-only workers."""

from __future__ import annotations

import dspy

from durable_dspy import durable_program

LM_QUEUE = "split-deployment-lm"


@durable_program(lm_task_queue=LM_QUEUE)
class SplitQA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.check = dspy.Predict("question, answer -> verdict")

    def forward(self, question: str):
        answer = self.draft(question=question).answer
        return self.check(question=question, answer=answer)
