"""5. Crash resume: 10 sequential 300 ms LM calls; SIGKILL the worker after 5 are served; a new worker at once.

Reports the time from the kill to the run's result (target <= 15 s), the new worker's own start-up time within it,
and what the LM server saw: requests received, answers served, distinct calls (10 expected), calls served twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from ._harness import Env, Row, Stat, log, run_one, verdict

BENCH = "crash"
CALLS = 10
KILL_AFTER = 5
LATENCY = 0.3
TARGET = 15.0


async def once(env: Env) -> dict[str, float]:
    from .programs import Sequential

    env.reset_lm(latency=LATENCY)
    tq = env.task_queue("crash")
    first = await env.spawn("durable", tq)
    handle = await Sequential.start(env.client, question=f"crash {uuid.uuid4().hex[:8]}", calls=CALLS, task_queue=tq)
    deadline = time.monotonic() + 120
    while env.lm_server.served < KILL_AFTER:
        if time.monotonic() > deadline:
            raise TimeoutError("the first worker did not serve 5 calls in time")
        await asyncio.sleep(0.005)
    first.kill()
    killed = time.perf_counter()
    served_at_kill = env.lm_server.served
    second = asyncio.ensure_future(env.spawn("durable", tq))
    await asyncio.wait_for(handle.result(), timeout=300)
    done = time.perf_counter()
    replacement = await second
    replacement.kill()
    counts = env.lm_server.served_by_key()
    result = {
        "kill_to_done": done - killed,
        "respawn": replacement.ready_seconds or 0.0,
        "served_at_kill": served_at_kill,
        "requests": len(env.lm_server.requests),
        "served": env.lm_server.served,
        "distinct": len(counts),
        "twice": sum(1 for n in counts.values() if n > 1),
    }
    env.reset_lm()
    return result


async def run(env: Env) -> list[Row]:
    reps = env.reps(3, 1)
    results = []
    for rep in range(reps):
        log(f"crash: repetition {rep + 1}/{reps}")
        results.append(await once(env))
    kill_to_done = Stat.of([r["kill_to_done"] for r in results])

    def stat(key: str) -> Stat:
        return Stat.of([r[key] for r in results])

    return [
        Row(
            BENCH,
            "kill -> done (10 x 300 ms calls, kill after 5)",
            "s",
            kill_to_done,
            target=f"<= {TARGET:.0f} s",
            verdict=verdict(kill_to_done.median <= TARGET),
        ),
        Row(BENCH, "replacement worker spawn -> polling", "s", stat("respawn"), note="started at the kill"),
        Row(BENCH, "LM answers served before the kill", "calls", stat("served_at_kill")),
        Row(BENCH, "LM requests received", "requests", stat("requests"), note=f"{CALLS} calls in the program"),
        Row(BENCH, "LM answers served", "calls", stat("served")),
        Row(BENCH, "distinct LM calls served", "calls", stat("distinct"), note=f"expected {CALLS}"),
        Row(BENCH, "LM calls served twice", "calls", stat("twice"), note="the one in flight at the kill, at most"),
    ]


def main() -> None:
    run_one("5. crash resume", run)


if __name__ == "__main__":
    main()
