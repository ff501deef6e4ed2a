"""Live progress for the ``durable-dspy`` command: each step of a run as it finishes, from the progress query."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from typing import Any

import click

from ._progress import PROGRESS_QUERY, Progress, Step

__all__ = ["ProgressPrinter", "query_progress"]


def _symbols() -> tuple[str, str, str]:
    encoding = getattr(sys.stderr, "encoding", None) or "ascii"
    try:
        "✓✗…".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "+", "x", "..."
    return "✓", "✗", "…"


class ProgressPrinter:
    """Prints each finished step of a run once, and on a terminal a live line for the step under way."""

    def __init__(self, indent: str = "  ") -> None:
        self.indent = indent
        self.done: set[int] = set()
        self.live = sys.stderr.isatty()
        self._status = False
        self.ok, self.failed, self.running = _symbols()

    def _write(self, text: str, *, newline: bool = True) -> None:
        if self._status:
            click.echo("\r\x1b[K", nl=False, err=True)
            self._status = False
        click.echo(text, nl=newline, err=True)

    def line(self, step: Step, mark: str) -> str:
        tokens = f"{step.tokens} tokens" if step.tokens else ""
        seconds = f"{step.duration_ms / 1000:.2f} s" if step.duration_ms is not None else ""
        return f"{self.indent}{mark} {step.kind:<4} {step.name:<42} {tokens:>11} {seconds:>8}".rstrip()

    def update(self, progress: Progress) -> None:
        for index, step in enumerate(progress.steps):
            if index in self.done or step.status == "running":
                continue
            self.done.add(index)
            self._write(self.line(step, self.ok if step.status == "completed" else self.failed))
        running = [s for s in progress.steps if s.status == "running"]
        if self.live and running:
            self._write(
                f"{self.line(running[-1], self.running)}  ({progress.total_tokens} tokens so far)", newline=False
            )
            self._status = True

    def note(self, text: str) -> None:
        self._write(text)

    def summary(self, progress: Progress) -> str:
        cost = f", ${progress.cost:.4f}" if progress.cost else ""
        return (
            f"{progress.program} {progress.status}: {progress.lm_calls} LM calls, {progress.tool_calls} tool calls, "
            f"{progress.total_tokens} tokens{cost}"
        )


async def query_progress(handle: Any, timeout: float = 2.0) -> Progress | None:
    """The run's progress, or None when no worker answers in time (none running, or one restarting)."""
    try:
        return await asyncio.wait_for(
            handle.query(PROGRESS_QUERY, result_type=Progress, rpc_timeout=timedelta(seconds=timeout)), timeout + 1
        )
    except Exception:
        return None
