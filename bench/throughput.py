"""3. Throughput and memory: 50 concurrent 3-call runs on one worker vs the floor; RSS per in-flight run at 200.

Runs/s = runs / (first start to last result), with the LM answering at once (0 ms), so both sides are bound by
the worker and the server. Memory comes from the worker subprocess (/proc/PID/status): peak RSS (VmHWM) after the
throughput batches, and (RSS with 200 runs in flight - RSS idle) / 200, with LM latency holding the runs open.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from . import floor
from ._harness import Env, Row, Stat, WorkerProcess, log, run_one, start_and_wait, verdict

BENCH = "throughput"
CALLS = 3
TARGET = 0.95
MB = 1024 * 1024


def _starts(env: Env, worker: WorkerProcess, runs: int, *, durable: bool, prefix: str, delay: float = 0.0) -> list:  # type: ignore[type-arg]
    """Callables that start one run each (the floor's activities wait ``delay`` s, as the LM server does)."""
    from .programs import Sequential

    tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
    if durable:
        return [
            lambda i=i: Sequential.start(env.client, question=f"{tag} {i}", calls=CALLS, task_queue=worker.task_queue)
            for i in range(runs)
        ]
    return [
        lambda i=i: env.floor_client.start_workflow(
            floor.Floor.run, args=[CALLS, delay], id=f"{tag}-{i}", task_queue=worker.task_queue
        )
        for i in range(runs)
    ]


async def runs_per_second(env: Env, worker: WorkerProcess, runs: int, *, durable: bool) -> float:
    starts = _starts(env, worker, runs, durable=durable, prefix="tput")
    begin = time.perf_counter()
    await start_and_wait(starts, timeout=600)
    return runs / (time.perf_counter() - begin)


async def rss_in_flight(
    env: Env, worker: WorkerProcess, runs: int, latency: float, *, durable: bool
) -> tuple[int, int]:
    """(idle RSS, highest RSS sampled while all ``runs`` were in flight and none had completed).

    Sampling stops at the first completion (or once a run could have made all its calls); the runs still going
    are then terminated rather than waited for.
    """
    env.reset_lm(latency=latency)
    idle = worker.rss()
    starts = _starts(env, worker, runs, durable=durable, prefix="rss", delay=latency)
    handles = await asyncio.gather(*(start() for start in starts))
    results = [asyncio.ensure_future(h.result()) for h in handles]
    highest = worker.rss()
    deadline = time.monotonic() + CALLS * latency + 5
    while not any(r.done() for r in results) and time.monotonic() < deadline:
        highest = max(highest, worker.rss())
        await asyncio.sleep(0.1)
    for result in results:
        result.cancel()
    await asyncio.gather(*(h.terminate("benchmark measured its memory") for h in handles), return_exceptions=True)
    await asyncio.gather(*results, return_exceptions=True)
    env.reset_lm()
    return idle, highest


async def run(env: Env) -> list[Row]:
    reps = env.reps(3, 1)
    runs = 4 if env.quick else 50
    in_flight = 6 if env.quick else 200
    env.reset_lm()
    durable = await env.shared_worker("durable")
    bare = await env.shared_worker("floor")
    await runs_per_second(env, durable, 4, durable=True)  # warm-up
    await runs_per_second(env, bare, 4, durable=False)
    samples: dict[str, list[float]] = {"durable": [], "floor": []}
    for rep in range(reps):
        log(f"throughput: repetition {rep + 1}/{reps}")
        order = ("durable", "floor") if rep % 2 == 0 else ("floor", "durable")
        for name in order:
            worker = durable if name == "durable" else bare
            samples[name].append(await runs_per_second(env, worker, runs, durable=name == "durable"))
    ratio = Stat.of([d / f for d, f in zip(samples["durable"], samples["floor"], strict=True)])
    peak, floor_peak = durable.peak_rss(), bare.peak_rss()
    latency = 0.3 if env.quick else 2.0
    log(f"throughput: {in_flight} runs in flight")
    idle, highest = await rss_in_flight(env, durable, in_flight, latency, durable=True)
    floor_idle, floor_highest = await rss_in_flight(env, bare, in_flight, latency, durable=False)
    per_run = (highest - idle) / in_flight
    floor_per_run = (floor_highest - floor_idle) / in_flight
    return [
        Row(BENCH, f"floor runs/s ({runs} concurrent, 3 no-op activities)", "runs/s", Stat.of(samples["floor"])),
        Row(BENCH, f"durable runs/s ({runs} concurrent, 3 LM calls @0ms)", "runs/s", Stat.of(samples["durable"])),
        Row(
            BENCH,
            "durable / floor runs/s",
            "x",
            ratio,
            target=f">= {TARGET}x",
            verdict=verdict(ratio.median >= TARGET),
        ),
        Row(BENCH, "floor worker peak RSS", "MB", Stat.exact(floor_peak / MB)),
        Row(BENCH, "durable worker peak RSS", "MB", Stat.exact(peak / MB), note=f"after the {runs}-run batches"),
        Row(
            BENCH,
            f"floor RSS per in-flight run ({in_flight} in flight)",
            "KB",
            Stat.exact(floor_per_run / 1024),
            note=f"idle {floor_idle / MB:.0f} MB -> {floor_highest / MB:.0f} MB",
        ),
        Row(
            BENCH,
            f"durable RSS per in-flight run ({in_flight} in flight)",
            "KB",
            Stat.exact(per_run / 1024),
            note=f"idle {idle / MB:.0f} MB -> {highest / MB:.0f} MB",
        ),
    ]


def main() -> None:
    run_one("3. throughput and memory", run)


if __name__ == "__main__":
    main()
