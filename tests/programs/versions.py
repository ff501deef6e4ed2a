"""Two versions of the same durable programs (same workflow names, different code), for versioning tests."""

from __future__ import annotations

import os

import dspy

from durable_dspy import Registry, durable_program

V1 = Registry()
V2 = Registry()


@durable_program(name="versioned-structure", registry=V1)
class StructureV1(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question: str):
        return self.qa(question=question)


@durable_program(name="versioned-structure", registry=V2)
class StructureV2(dspy.Module):
    """Changed: the predictor's signature gained a field."""

    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer, confidence")

    def forward(self, question: str):
        return self.qa(question=question)


@durable_program(name="versioned-order", registry=V1)
class OrderV1(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.review = dspy.Predict("question -> answer")

    def forward(self, question: str):
        self.draft(question=question)
        return self.review(question=question + "?")


@durable_program(name="versioned-order", registry=V2)
class OrderV2(dspy.Module):
    """Changed: same predictors, called in the other order (Temporal alone would not notice)."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.review = dspy.Predict("question -> answer")

    def forward(self, question: str):
        self.review(question=question)
        return self.draft(question=question + "?")


def _states() -> list[str] | None:
    value = os.environ.get("DURABLE_DSPY_TEST_STATES")
    return value.split(os.pathsep) if value else None


@durable_program(state=_states())
class Compiled(dspy.Module):
    """Its compiled state (instructions) comes from the files named in DURABLE_DSPY_TEST_STATES, current first."""

    def __init__(self):
        super().__init__()
        self.step = dspy.Predict("question, step -> answer")

    def forward(self, question: str, calls: int = 6):
        answer = ""
        for i in range(calls):
            answer = self.step(question=question, step=str(i)).answer
        return dspy.Prediction(answer=answer)
