"""Durable programs that fan out with dspy.Parallel / Module.batch / asyncio.gather (tests/test_parallel.py)."""

from __future__ import annotations

import asyncio

import dspy

from durable_dspy import durable_program


class Picky(dspy.Module):
    """Answers with one LM call, or refuses (before any LM call) a question containing "bad"."""

    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question):
        if "bad" in question:
            raise ValueError(f"refused {question!r}")
        return self.qa(question=question)


@durable_program
class FanOut(dspy.Module):
    def __init__(self):
        super().__init__()
        self.picky = Picky()

    def forward(self, questions: list[str], num_threads: int = 4, max_errors: int = 10, return_failed: bool = False):
        parallel = dspy.Parallel(
            num_threads=num_threads,
            max_errors=max_errors,
            return_failed_examples=return_failed,
            disable_progress_bar=True,
        )
        pairs = [(self.picky, {"question": q}) for q in questions]
        if not return_failed:
            results = parallel(pairs)
            return dspy.Prediction(answers=[r.answer if r is not None else None for r in results])
        results, failed, errors = parallel(pairs)
        return dspy.Prediction(
            answers=[r.answer if r is not None else None for r in results],
            failed=sorted(example["question"] for example in failed),
            errors=sorted(f"{type(e).__name__}: {e}" for e in errors),
        )


@durable_program
class NestedFanOut(dspy.Module):
    """A Parallel whose items are themselves batches: greenlets fanning out from greenlets."""

    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, groups: list[list[str]]):
        def answer_group(questions):
            examples = [dspy.Example(question=q).with_inputs("question") for q in questions]
            return [r.answer for r in self.qa.batch(examples, num_threads=2, disable_progress_bar=True)]

        parallel = dspy.Parallel(num_threads=len(groups), disable_progress_bar=True)
        return dspy.Prediction(answers=parallel([(answer_group, (group,)) for group in groups]))


@durable_program
class ParallelInAforward(dspy.Module):
    """Misuse: dspy.Parallel is sync, so aforward cannot block on it."""

    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    async def aforward(self, questions: list[str]):
        await asyncio.sleep(0)
        results = dspy.Parallel(disable_progress_bar=True)([(self.qa, {"question": q}) for q in questions])
        return dspy.Prediction(answers=[r.answer for r in results])
