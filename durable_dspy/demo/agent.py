"""The demo's ReAct agent and its two durable tools: a search over a bundled corpus and a safe calculator.

Importing this module registers them; ``durable-dspy worker durable_dspy.demo`` serves them. Their Temporal
names are given explicitly (``durable_dspy.demo.*``): names are contracts with histories already written.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import dspy

from durable_dspy import durable_program, durable_tool

from .corpus import PASSAGES

QUESTION = "How many years before the first crewed Moon landing was the Eiffel Tower completed?"

# The tools are local and fast: a short timeout means a worker killed during one is noticed in seconds.
_TOOL_TIMEOUT = timedelta(seconds=10)

_WORD = re.compile(r"[a-z0-9]+")
# fmt: off
_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "how", "in", "is", "it", "its", "many", "of",
    "on", "or", "the", "to", "was", "were", "what", "when", "which", "who", "year", "years",
})
# fmt: on


def _terms(text: str) -> list[str]:
    return [word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS]


def _idf() -> dict[str, float]:
    documents = [set(_terms(title + " " + text)) for title, text in PASSAGES.items()]
    counts = Counter(term for doc in documents for term in doc)
    return {term: math.log(1 + len(documents) / n) for term, n in counts.items()}


_IDF = _idf()


@durable_tool(name="durable_dspy.demo.search", start_to_close_timeout=_TOOL_TIMEOUT)
def search(query: str) -> str:
    """Search a small encyclopedia; returns the two best-matching passages with their titles."""
    wanted = _terms(query)
    scored = []
    for title, text in PASSAGES.items():
        counts = Counter(_terms(title + " " + text))
        score = sum(_IDF.get(term, 0.0) * counts[term] for term in wanted)
        if score > 0:
            scored.append((score, title, text))
    scored.sort(key=lambda item: -item[0])
    if not scored:
        return f"No passage matches {query!r}."
    return "\n".join(f"[{title}] {text}" for _, title, text in scored[:2])


_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value  # type: ignore[return-value]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise ValueError("exponent or base too large")
        return _BINARY[type(node.op)](left, right)
    raise ValueError(f"{type(node).__name__} is not allowed")


@durable_tool(name="durable_dspy.demo.calculate", start_to_close_timeout=_TOOL_TIMEOUT)
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression with numbers, + - * / // % ** and parentheses, e.g. "1969 - 1889"."""
    try:
        if len(expression) > 200:
            raise ValueError("expression longer than 200 characters")
        value = _evaluate(ast.parse(expression.replace("^", "**"), mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError) as exc:
        # Returned, not raised: the agent reads the problem and can try again; retrying the same input cannot help.
        return f"Error: cannot evaluate {expression!r} ({exc}). Use numbers, + - * / // % ** and parentheses."
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


# LM calls heartbeat every second; a short heartbeat timeout lets a new worker retry a killed worker's call quickly.
@durable_program(name="durable_dspy.demo.ResearchAgent", heartbeat_timeout=timedelta(seconds=3))
class ResearchAgent(dspy.Module):
    """Answers questions by searching the bundled corpus and doing arithmetic, one durable step at a time."""

    def __init__(self, max_iters: int = 6) -> None:
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[search, calculate], max_iters=max_iters)

    def forward(self, question: str) -> dspy.Prediction:
        return self.react(question=question)
