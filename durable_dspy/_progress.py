"""A run's progress, kept in the workflow and read with the ``durable_dspy.progress`` query.

Example:
    >>> progress = await handle.query("durable_dspy.progress", result_type=Progress)
    >>> [(s.kind, s.name, s.status) for s in progress.steps]
    [('lm', 'RAG.answer.predict', 'completed')]
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from temporalio import workflow

from ._flush import Flusher

PROGRESS_QUERY = "durable_dspy.progress"


@dataclass
class Step:
    """One LM call or tool call of a run."""

    kind: str  # "lm" or "tool"
    name: str  # the predictor's path in the program (e.g. "RAG.answer.predict") or the tool's name
    status: str = "running"  # "running", "completed" or "failed"
    started_at: str = ""
    duration_ms: float | None = None
    tokens: int | None = None


@dataclass
class Progress:
    """Steps so far and usage totals. Times come from workflow time, so they are the same on replay."""

    program: str
    status: str = "running"  # "running", "completed" or "failed"
    steps: list[Step] = field(default_factory=list)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)
    total_tokens: int = 0
    cost: float | None = None

    @property
    def lm_calls(self) -> int:
        return sum(1 for step in self.steps if step.kind == "lm")

    @property
    def tool_calls(self) -> int:
        return sum(1 for step in self.steps if step.kind == "tool")


class RunState:
    """Progress bookkeeping for one workflow run."""

    def __init__(self, program: str, *, local: bool = False) -> None:
        self.progress = Progress(program=program)
        self.local = local  # the low-latency mode: LM and tool calls as (flushed) local activities
        self.flusher = Flusher()
        self.changed: BaseException | None = None  # a ProgramChangedError seen during replay
        self.payload_limit: int | None = None  # from the worker's describe answer (see _payloads.request_limit)

    def begin(self, kind: str, name: str) -> Step:
        step = Step(kind=kind, name=name, started_at=workflow.now().isoformat())
        self.progress.steps.append(step)
        return step

    def end(self, step: Step, *, failed: bool = False) -> None:
        step.status = "failed" if failed else "completed"
        started = datetime.fromisoformat(step.started_at)
        step.duration_ms = (workflow.now() - started).total_seconds() * 1000

    def add_usage(self, step: Step, model: str, usage: dict[str, Any], cost: float | None) -> None:
        tokens = usage.get("total_tokens")
        if isinstance(tokens, int):
            step.tokens = tokens
            self.progress.total_tokens += tokens
        totals = self.progress.usage.setdefault(model, {})
        for key, val in usage.items():
            if isinstance(val, int | float) and not isinstance(val, bool):
                totals[key] = totals.get(key, 0) + val
        if cost is not None:
            self.progress.cost = (self.progress.cost or 0.0) + cost


_current: contextvars.ContextVar[RunState | None] = contextvars.ContextVar("durable_dspy_run_state", default=None)


def current() -> RunState | None:
    """The state of the durable run the caller is in, if any."""
    return _current.get()


def activate(state: RunState) -> contextvars.Token[RunState | None]:
    return _current.set(state)
