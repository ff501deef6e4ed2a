"""Load test (issue 4): N runs against 2 worker processes; one is SIGKILLed half way and restarted at once.

Every run must complete; every LM call must be served, and only calls in flight at the kill may be served twice.
Prints one summary line and exits non-zero if a run was lost or a completed call was paid twice::

    python -m bench.load --runs 1000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
import uuid

from ._harness import Env, exit_on_sigterm, log

# A call answered this long before the kill had certainly been reported by its worker: serving it again would be a
# duplicate. Calls answered later were in flight (or their completion was) and may legitimately run twice.
IN_FLIGHT_WINDOW = 1.0


async def load(runs: int, calls: int, latency: float, workers: int, concurrency: int) -> bool:
    from .programs import Sequential

    async with Env.open(quick=False) as env:
        env.reset_lm(latency=latency)
        tq = env.task_queue("load")
        procs = list(await asyncio.gather(*(env.spawn("durable", tq) for _ in range(workers))))
        expected = runs * calls
        tag = uuid.uuid4().hex[:8]
        gate = asyncio.Semaphore(concurrency)
        kill: dict[str, float] = {}

        async def one(i: int) -> str:
            async with gate:
                handle = await Sequential.start(env.client, question=f"load {tag} {i}", calls=calls, task_queue=tq)
            prediction = await handle.result()
            return str(prediction.answer)

        async def killer() -> None:
            while env.lm_server.served < expected // 2:
                await asyncio.sleep(0.01)
            procs[0].kill()
            kill["time"] = time.time()
            kill["served"] = env.lm_server.served
            log(f"load: SIGKILLed worker pid {procs[0].pid} at {kill['served']}/{expected} LM calls; restarting it")
            procs[0] = await env.spawn("durable", tq)

        started = time.perf_counter()
        killing = asyncio.ensure_future(killer())
        results = await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(runs)), return_exceptions=True), timeout=max(600, runs)
        )
        wall = time.perf_counter() - started
        if not killing.done():  # too few calls to reach half way before the end (tiny runs)
            killing.cancel()
        failures = [r for r in results if isinstance(r, BaseException)]
        completed = sum(1 for r in results if isinstance(r, str) and r)

        first_served: dict[str, float] = {}
        for request in env.lm_server.requests:
            if request.status == 200:
                first_served.setdefault(request.key, request.time)
        counts = env.lm_server.served_by_key()
        twice = [key for key, n in counts.items() if n > 1]
        kill_time = kill.get("time")
        repeated = [
            key for key in twice if kill_time is None or first_served[key] < kill_time - IN_FLIGHT_WINDOW
        ]  # completed well before the kill, yet served again: a duplicate
        served = env.lm_server.served
        ok = completed == runs and len(counts) == expected and not repeated
        killed = f"{kill['served']}/{expected}" if kill else "never (too short)"
        print(
            f"load: runs={runs} completed={completed} lost={runs - completed} workers={workers} killed_at={killed} "
            f"lm_expected={expected} lm_distinct={len(counts)} lm_served={served} served_twice={len(twice)} "
            f"repeated_after_completion={len(repeated)} wall={wall:.1f}s runs/s={runs / wall:.1f} "
            f"-> {'OK' if ok else 'FAILED'}",
            flush=True,
        )
        for failure in failures[:5]:
            print(f"  lost run: {type(failure).__name__}: {failure}", file=sys.stderr)
        if not ok and counts:
            spread = collections.Counter(counts.values())
            print(f"  LM calls by times served: {dict(spread)}", file=sys.stderr)
        return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=3, help="LM calls per run")
    parser.add_argument("--latency", type=float, default=0.05, help="LM latency in seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100, help="workflow starts in flight at once")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    ok = asyncio.run(load(args.runs, args.calls, args.latency, args.workers, args.concurrency))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
