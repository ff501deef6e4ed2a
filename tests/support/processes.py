"""Start and kill worker processes for crash tests."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from durable_dspy import testing

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess(testing.WorkerProcess):
    """``python -m tests.support.worker_main`` in its own process group; ``kill()`` is a SIGKILL."""

    def __init__(
        self,
        *,
        address: str,
        task_queue: str,
        lm_url: str,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        args = [
            sys.executable, "-m", "tests.support.worker_main",
            "--address", address, "--task-queue", task_queue, "--lm-url", lm_url, *(extra or []),
        ]  # fmt: skip
        super().__init__(args, cwd=ROOT, env={"PYTHONPATH": str(ROOT), **(env or {})})


def wait_until(predicate, timeout: float, interval: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)
