"""What every benchmark shares: one Temporal dev server, one scripted LM server, workers, statistics, the table.

Each benchmark module exposes ``async def run(env: Env) -> list[Row]`` and a ``main()`` that runs it alone;
``python -m bench`` runs them all against the same servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: never download litellm's cost map

import dspy
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.runtime import LogForwardingConfig, LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.worker import Worker

import durable_dspy
from durable_dspy import testing
from durable_dspy._devserver import DevServer
from durable_dspy.testing import ScriptedLMServer

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-test"


def _quiet_core_logs() -> None:
    """Temporal's core logs warnings (with whole stack traces) on stdout; keep the table clean: one line on stderr."""
    logger = logging.getLogger("bench.temporal_core")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[temporal core] %(message).240s"))
    logger.addHandler(handler)
    logger.propagate = False
    filter_ = TelemetryFilter(core_level="WARN", other_level="ERROR")
    logging_config = LoggingConfig(filter=filter_, forwarding=LogForwardingConfig(logger=logger))
    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=logging_config)), error_if_already_set=False)


_quiet_core_logs()
LM_CALL_ACTIVITY = "durable_dspy.lm.call"
DESCRIBE_ACTIVITY = "durable_dspy.lm.describe"


# -- statistics


@dataclass(frozen=True)
class Stat:
    """Median, min and max of a figure over its repetitions."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stat:
        values = [float(v) for v in samples]
        if not values:
            raise ValueError("no samples")
        return cls(statistics.median(values), min(values), max(values), len(values))

    @classmethod
    def exact(cls, value: float) -> Stat:
        return cls(float(value), float(value), float(value), 1)


@dataclass
class Row:
    """One line of the table. ``stat`` None means the figure is not available (``note`` says why)."""

    bench: str
    metric: str
    unit: str
    stat: Stat | None
    target: str = ""
    verdict: str = ""  # "PASS", "MISS" or ""
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"bench": self.bench, "metric": self.metric, "unit": self.unit}
        out.update(asdict(self.stat) if self.stat else {"median": None, "min": None, "max": None, "n": 0})
        out.update(target=self.target, verdict=self.verdict, note=self.note)
        return out


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_table(rows: Sequence[Row]) -> str:
    header = ("bench", "metric", "median", "min", "max", "n", "unit", "target", "verdict", "note")
    lines = []
    for row in rows:
        if row.stat is None:
            nums = ("n/a", "", "", "0")
        else:
            nums = (_fmt(row.stat.median), _fmt(row.stat.min), _fmt(row.stat.max), str(row.stat.n))
        lines.append((row.bench, row.metric, *nums, row.unit, row.target, row.verdict, row.note))
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) if lines else len(header[i]) for i in range(9)]
    right = {2, 3, 4, 5}

    def render(cells: Sequence[str]) -> str:
        parts = [
            (c.rjust(w) if i in right else c.ljust(w)) for i, (c, w) in enumerate(zip(cells[:9], widths, strict=True))
        ]
        return " | ".join(parts) + (f" | {cells[9]}" if cells[9] else "")

    out = [render(header), "-+-".join("-" * w for w in widths)]
    out += [render(line) for line in lines]
    return "\n".join(out)


def print_report(rows: Sequence[Row], *, title: str) -> None:
    print(f"\n== {title} ==", flush=True)
    print(format_table(rows), flush=True)
    print("\n# JSON lines", flush=True)
    for row in rows:
        print(json.dumps(row.as_json()), flush=True)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def timed(awaitable: Awaitable[Any]) -> tuple[float, Any]:
    """(seconds, result) of one awaitable."""
    start = time.perf_counter()
    result = await awaitable
    return time.perf_counter() - start, result


def fit(xs: Sequence[float], ys: Sequence[float], degree: int) -> tuple[list[float], float]:
    """Least-squares polynomial fit: coefficients (constant first) and the residual sum of squares."""
    n = degree + 1
    # Normal equations, solved by Gaussian elimination: a handful of points, no numpy needed.
    a = [[sum(x ** (i + j) for x in xs) for j in range(n)] for i in range(n)]
    b = [sum(y * x**i for x, y in zip(xs, ys, strict=True)) for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        b[col], b[pivot] = b[pivot], b[col]
        for r in range(n):
            if r != col and a[col][col]:
                f = a[r][col] / a[col][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col], strict=True)]
                b[r] -= f * b[col]
    coef = [b[i] / a[i][i] if a[i][i] else 0.0 for i in range(n)]
    rss = sum((y - sum(c * x**i for i, c in enumerate(coef))) ** 2 for x, y in zip(xs, ys, strict=True))
    return coef, rss


# -- reading histories


def phases(history: WorkflowHistory) -> dict[str, float]:
    """Where a run's wall time went, from its history's event times (ms).

    ``exec``: median time from an activity's start to its completion (the call itself plus reporting it);
    ``turn``: median time from an activity's completion to the next activity's scheduling (a workflow task:
    dispatch, the workflow code between the two calls, completion); ``describe``: the durable_dspy describe
    activity plus the turn after it (0 for a run without it); ``start``/``end``: run start to first scheduled
    activity, last completion to run end.
    """
    events = list(history.events)
    ms = [e.event_time.ToMilliseconds() for e in events]
    scheduled: dict[int, tuple[float, str]] = {}
    started: dict[int, float] = {}
    execs, turns, names = [], [], []
    first: float | None = None
    last_done: float | None = None
    describe = 0.0
    for event, at in zip(events, ms, strict=True):
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (at, name)
            first = at if first is None else first
            if last_done is not None:
                turns.append((at - last_done, names[-1]))
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started[event.activity_task_started_event_attributes.scheduled_event_id] = at
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = event.activity_task_completed_event_attributes.scheduled_event_id
            begin, name = scheduled[sid]
            names.append(name)
            execs.append((at - started.get(sid, begin), name))
            last_done = at
    for duration, name in execs + turns:
        if name == DESCRIBE_ACTIVITY:
            describe += duration
    call_execs = [d for d, n in execs if n != DESCRIBE_ACTIVITY]
    call_turns = [d for d, n in turns if n != DESCRIBE_ACTIVITY]
    return {
        "exec": statistics.median(call_execs) if call_execs else 0.0,
        "turn": statistics.median(call_turns) if call_turns else 0.0,
        "describe": describe,
        "start": (first - ms[0]) if first is not None else 0.0,
        "end": (ms[-1] - last_done) if last_done is not None else 0.0,
    }


# -- worker subprocesses


def _proc_stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


class WorkerProcess(testing.WorkerProcess):
    """``python -m bench.worker`` in its own process group; prints READY once it polls. ``kill()`` is a SIGKILL."""

    def __init__(self, mode: str, *, address: str, task_queue: str, lm_url: str, extra: Sequence[str] = ()) -> None:
        self.mode = mode
        self.task_queue = task_queue
        args = [
            sys.executable, "-m", "bench.worker", "--mode", mode,
            "--address", address, "--task-queue", task_queue, "--lm-url", lm_url, *extra,
        ]  # fmt: skip
        super().__init__(args, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})

    def start(self, timeout: float = 120.0) -> WorkerProcess:
        super().start(timeout)
        return self

    def cpu_seconds(self) -> float:
        """User + system CPU time of the worker process so far (all its threads)."""
        fields = _proc_stat(self.pid)
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss(self) -> int:
        return _proc_status(self.pid, "VmRSS")

    def peak_rss(self) -> int:
        return _proc_status(self.pid, "VmHWM")


# -- the shared environment


@dataclass
class Env:
    """The servers, clients and workers one benchmark run shares."""

    quick: bool
    server: DevServer
    lm_server: ScriptedLMServer
    client: Client  # with the durable_dspy plugin (pydantic payloads)
    floor_client: Client  # bare: Temporal's default converter, no plugin
    _shared: dict[str, WorkerProcess] = field(default_factory=dict)
    _spawned: list[WorkerProcess] = field(default_factory=list)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, *, quick: bool) -> AsyncIterator[Env]:
        with tempfile.TemporaryDirectory(prefix="durable-dspy-bench-") as tmp:
            server = DevServer(db_filename=Path(tmp) / "temporal.sqlite")
            await asyncio.to_thread(server.start)
            try:
                with ScriptedLMServer() as lm_server:
                    client = await durable_dspy.connect(server.address)
                    floor_client = await Client.connect(server.address)
                    env = cls(quick, server, lm_server, client, floor_client)
                    try:
                        yield env
                    finally:
                        env.close()
            finally:
                await asyncio.to_thread(server.stop)

    def reps(self, full: int, quick: int = 2) -> int:
        return quick if self.quick else full

    def lm(self) -> dspy.LM:
        return dspy.LM("openai/test-model", api_base=self.lm_server.url + "/v1", api_key=API_KEY, cache=False)

    def reset_lm(self, *, latency: float = 0.0) -> None:
        self.lm_server.reset()
        self.lm_server.latency = latency

    @staticmethod
    def task_queue(prefix: str) -> str:
        return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"

    @contextlib.asynccontextmanager
    async def durable_worker(self, task_queue: str, **options: Any) -> AsyncIterator[Worker]:
        """An in-process worker with the durable_dspy plugin, serving the benchmark programs."""
        from . import programs  # noqa: F401  (registers the programs)

        plugin = durable_dspy.DurableDSPyPlugin(lm=self.lm())
        config = self.client.config()
        config["plugins"] = [plugin]
        async with Worker(Client(**config), task_queue=task_queue, **options) as worker:
            yield worker

    async def spawn(self, mode: str, task_queue: str | None = None, extra: Sequence[str] = ()) -> WorkerProcess:
        """A fresh worker subprocess (``durable`` or ``floor``), started and polling."""
        proc = WorkerProcess(
            mode,
            address=self.server.address,
            task_queue=task_queue or self.task_queue(mode),
            lm_url=self.lm_server.url,
            extra=extra,
        )
        self._spawned.append(proc)
        return await asyncio.to_thread(proc.start)

    async def shared_worker(self, mode: str) -> WorkerProcess:
        """One long-lived worker subprocess per mode, shared by the benchmarks of a run."""
        proc = self._shared.get(mode)
        if proc is None or proc.proc is None or proc.proc.poll() is not None:
            proc = self._shared[mode] = await self.spawn(mode)
        return proc

    def adopt(self, proc: WorkerProcess) -> bool:
        """Keep a freshly measured worker as the shared one of its mode, if there is none yet."""
        if proc.mode in self._shared:
            return False
        self._shared[proc.mode] = proc
        return True

    def close(self) -> None:
        for proc in self._spawned:
            proc.kill()


async def start_and_wait(starts: Sequence[Callable[[], Awaitable[Any]]], *, timeout: float) -> list[Any]:
    """Start runs concurrently (each callable returns a handle), then wait for all their results."""
    handles = await asyncio.gather(*(start() for start in starts))
    return await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=timeout)


def exit_on_sigterm() -> None:
    """Turn SIGTERM (CI timeouts, ``timeout``) into SystemExit, so the servers and worker processes are stopped."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def parse_args(description: str, argv: Sequence[str] | None = None, **extra: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (for CI)")
    for name, kwargs in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    return parser.parse_args(argv)


def run_one(title: str, bench: Callable[[Env], Awaitable[list[Row]]], argv: Sequence[str] | None = None) -> None:
    """``main()`` of a single benchmark script."""
    args = parse_args(title, argv)
    exit_on_sigterm()

    async def go() -> list[Row]:
        async with Env.open(quick=args.quick) as env:
            return await bench(env)

    print_report(asyncio.run(go()), title=title)
