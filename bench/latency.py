"""1. Per-LM-call time: 10 sequential LM calls, durable vs plain DSPy vs THE FLOOR (10 no-op activities).

Durability overhead per call = durable ms/call - plain ms/call; target: at most 1.05x the floor's ms per no-op
activity (a durable LM call cannot cost less than one activity round trip). Variants are interleaved within each
repetition, and the ratio is computed per repetition before taking the median.
"""

from __future__ import annotations

import time
import uuid

import dspy

from . import floor
from ._harness import Env, Row, Stat, phases, run_one, verdict

BENCH = "latency"
_HIST = "median per call, from history event times"
_TURN = "completion -> next scheduled: a workflow task"
CALLS = 10
TARGET = 1.05
LOCAL_TARGET = 0.5
LATENCIES = (0.0, 0.05)


async def run(env: Env) -> list[Row]:
    from .programs import Sequential, SequentialLocal

    reps = env.reps(9, 1)
    warmup = 0 if env.quick else 1
    calls = 3 if env.quick else CALLS
    # Worker subprocesses: in this process the scripted LM server's threads would compete with an in-process
    # worker for the GIL (the floor has no LM to serve), which is not what a deployed worker sees.
    tq = (await env.shared_worker("durable")).task_queue
    ftq = (await env.shared_worker("floor")).task_queue
    program = Sequential()
    lm = env.lm()
    rows: list[Row] = []

    async def durable(tag: str, program: type = Sequential) -> float:
        begin = time.perf_counter()
        handle = await program.start(env.client, question=tag, calls=calls, task_queue=tq)  # type: ignore[attr-defined]
        await handle.result()
        seconds = time.perf_counter() - begin
        if program is Sequential:  # the breakdown rows are the default mode's
            runs["durable"].append(phases(await handle.fetch_history()))
        return seconds

    async def local(tag: str) -> float:
        return await durable(tag, SequentialLocal)

    async def plain(tag: str) -> float:
        start = time.perf_counter()
        with dspy.context(lm=lm, track_usage=True):
            program(question=tag, calls=calls)
        return time.perf_counter() - start

    async def bare(tag: str) -> float:
        begin = time.perf_counter()
        handle = await env.floor_client.start_workflow(floor.Floor.run, calls, id=f"floor-{tag}", task_queue=ftq)
        await handle.result()
        seconds = time.perf_counter() - begin
        runs["floor"].append(phases(await handle.fetch_history()))
        return seconds

    variants = {"durable": durable, "local": local, "plain": plain, "floor": bare}
    for latency in LATENCIES:
        env.reset_lm(latency=latency)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        runs: dict[str, list[dict[str, float]]] = {"durable": [], "floor": []}
        for rep in range(warmup + reps):
            names = list(variants)
            turn = rep % len(names)
            names = names[turn:] + names[:turn]  # rotate the order: no variant always goes first
            for name in names:
                seconds = await variants[name](f"latency {latency} {rep} {uuid.uuid4().hex[:8]}")
                if rep >= warmup:
                    samples[name].append(seconds * 1000 / calls)
                elif name in runs:
                    runs[name].clear()  # the warm-up's history does not count
        overhead = [d - p for d, p in zip(samples["durable"], samples["plain"], strict=True)]
        ratio = [o / f for o, f in zip(overhead, samples["floor"], strict=True)]
        local_overhead = [d - p for d, p in zip(samples["local"], samples["plain"], strict=True)]
        local_ratio = Stat.of([o / f for o, f in zip(local_overhead, samples["floor"], strict=True)])
        at = f"@{latency * 1000:.0f}ms"
        ratio_stat = Stat.of(ratio)
        rows += [
            Row(BENCH, f"plain DSPy ms/call {at}", "ms", Stat.of(samples["plain"])),
            Row(BENCH, f"durable ms/call {at}", "ms", Stat.of(samples["durable"])),
            Row(BENCH, f"floor ms/no-op activity {at}", "ms", Stat.of(samples["floor"])),
            Row(BENCH, f"overhead ms/call {at}", "ms", Stat.of(overhead), note="durable - plain"),
            Row(
                BENCH,
                f"overhead / floor activity {at}",
                "x",
                ratio_stat,
                target=f"<= {TARGET}x",
                verdict=verdict(ratio_stat.median <= TARGET),
            ),
            Row(BENCH, f"local mode ms/call {at}", "ms", Stat.of(samples["local"]), note="local_activities=True"),
            Row(
                BENCH,
                f"local mode overhead / floor activity {at}",
                "x",
                local_ratio,
                target=f"<= {LOCAL_TARGET}x",
                verdict=verdict(local_ratio.median <= LOCAL_TARGET),
                note="flushed local activities (crash-safe)",
            ),
        ]

        def phase(kind: str, key: str) -> Stat:
            return Stat.of([run[key] for run in runs[kind]])  # noqa: B023  (used within the iteration)

        rows += [
            Row(BENCH, f"  durable: LM activity start->done {at}", "ms", phase("durable", "exec"), note=_HIST),
            Row(BENCH, f"  floor: no-op activity start->done {at}", "ms", phase("floor", "exec"), note=_HIST),
            Row(BENCH, f"  durable: turn between calls {at}", "ms", phase("durable", "turn"), note=_TURN),
            Row(BENCH, f"  floor: turn between activities {at}", "ms", phase("floor", "turn"), note=_TURN),
            Row(BENCH, f"  durable: describe activity + turn, per run {at}", "ms", phase("durable", "describe")),
            Row(BENCH, f"  durable: run start -> 1st activity {at}", "ms", phase("durable", "start")),
            Row(BENCH, f"  floor: run start -> 1st activity {at}", "ms", phase("floor", "start")),
        ]
    env.reset_lm()
    return rows


def main() -> None:
    run_one("1. per-LM-call time vs plain DSPy and the floor", run)


if __name__ == "__main__":
    main()
