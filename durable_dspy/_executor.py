"""A workflow task executor that keeps every activation of a run on the same thread.

Temporal runs each workflow activation on a thread of ``workflow_task_executor``; by default any thread. A run
paused inside a greenlet (a sync ``forward`` waiting for an activity) can only resume on the thread that
created the greenlet, so activations are routed to a fixed lane per run id, the eviction included (it unwinds
the paused greenlet there).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

DEFAULT_LANES = 16


def _run_id(args: tuple[Any, ...]) -> str | None:
    if not args:
        return None
    run_id = getattr(args[0], "run_id", None)
    return run_id if isinstance(run_id, str) and run_id else None


def _is_eviction(activation: Any) -> bool:
    # Temporal sends an eviction as an activation of its own, with the eviction as its last job.
    jobs = getattr(activation, "jobs", ())
    return bool(jobs) and jobs[-1].HasField("remove_from_cache")


class RunAffinityExecutor(concurrent.futures.ThreadPoolExecutor):
    """Pins each workflow run to one of ``lanes`` single-thread lanes, choosing the least loaded for a new run.

    Example:
        >>> Worker(client, task_queue="q", workflows=[...], workflow_task_executor=RunAffinityExecutor())
    """

    def __init__(self, lanes: int = DEFAULT_LANES, thread_name_prefix: str = "durable-dspy-wf") -> None:
        super().__init__(max_workers=1, thread_name_prefix=f"{thread_name_prefix}-other")
        self._lanes = [
            concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{thread_name_prefix}-{i}")
            for i in range(max(1, lanes))
        ]
        self._owner: dict[str, int] = {}
        self._load = [0] * len(self._lanes)
        self._lock = threading.Lock()

    def _lane(self, run_id: str) -> int:
        with self._lock:
            lane = self._owner.get(run_id)
            if lane is None:
                lane = min(range(len(self._lanes)), key=self._load.__getitem__)
                self._owner[run_id] = lane
                self._load[lane] += 1
            return lane

    def _release(self, run_id: str) -> None:
        with self._lock:
            lane = self._owner.pop(run_id, None)
            if lane is not None:
                self._load[lane] -= 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        run_id = _run_id(args)
        if run_id is None:
            return super().submit(fn, *args, **kwargs)
        future = self._lanes[self._lane(run_id)].submit(fn, *args, **kwargs)
        if _is_eviction(args[0]):
            future.add_done_callback(lambda _: self._release(run_id))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        for lane in self._lanes:
            lane.shutdown(wait=wait, cancel_futures=cancel_futures)
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
