"""2. Worker CPU per run: a 3-call durable program vs the floor (3 no-op activities) + the same program in plain DSPy.

Each worker is a subprocess; its CPU time (user + system, all threads, from /proc/PID/stat) is read before and after
a batch of concurrent runs. The plain DSPy figure comes from a subprocess that runs the program without Temporal
and reports its own ``getrusage``. Target: durable <= 1.15x (floor + plain), computed per repetition.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

from . import floor
from ._harness import ROOT, Env, Row, Stat, WorkerProcess, log, run_one, start_and_wait, verdict

BENCH = "cpu"
CALLS = 3
TARGET = 1.15


async def worker_cpu_per_run(
    env: Env, worker: WorkerProcess, runs: int, *, durable: bool, local: bool = False
) -> float:
    """CPU seconds the worker spent per run, over one batch of ``runs`` concurrent runs."""
    from .programs import Sequential, SequentialLocal

    tag = uuid.uuid4().hex[:8]
    program = SequentialLocal if local else Sequential
    if durable:
        starts = [
            lambda i=i: program.start(env.client, question=f"cpu {tag} {i}", calls=CALLS, task_queue=worker.task_queue)
            for i in range(runs)
        ]
    else:
        starts = [
            lambda i=i: env.floor_client.start_workflow(
                floor.Floor.run, CALLS, id=f"floor-cpu-{tag}-{i}", task_queue=worker.task_queue
            )
            for i in range(runs)
        ]
    before = worker.cpu_seconds()
    await start_and_wait(starts, timeout=300)
    return (worker.cpu_seconds() - before) / runs


async def plain_cpu_per_run(env: Env, runs: int, batches: int) -> list[float]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.worker", "--mode", "plain", "--address", "-", "--task-queue", "-",
        "--lm-url", env.lm_server.url, "--runs", str(runs), "--batches", str(batches), "--calls", str(CALLS),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"plain DSPy subprocess failed:\n{err.decode()[-2000:]}")
    return [json.loads(line)["cpu_s"] / runs for line in out.decode().splitlines() if line.startswith("{")]


async def run(env: Env) -> list[Row]:
    reps = env.reps(5, 1)
    runs = 3 if env.quick else 20
    env.reset_lm()
    # The plain DSPy subprocess reports its own CPU time, so it may run alongside the worker batches.
    plain_task = asyncio.ensure_future(plain_cpu_per_run(env, runs, reps))
    durable = await env.shared_worker("durable")
    bare = await env.shared_worker("floor")
    # The same worker with Temporal's UnsandboxedWorkflowRunner (workflow_runner= of serve()): what the sandbox costs.
    unsandboxed = await env.spawn("durable", extra=["--experiment", "unsandboxed"])
    # Warm the workers (first-run costs are measured by the start-up benchmark, not here).
    await worker_cpu_per_run(env, durable, 2, durable=True)
    await worker_cpu_per_run(env, durable, 2, durable=True, local=True)
    await worker_cpu_per_run(env, unsandboxed, 2, durable=True)
    await worker_cpu_per_run(env, bare, 2, durable=False)
    samples: dict[str, list[float]] = {"durable": [], "local": [], "unsandboxed": [], "floor": []}
    for rep in range(reps):
        log(f"cpu: repetition {rep + 1}/{reps}")
        samples["durable"].append(await worker_cpu_per_run(env, durable, runs, durable=True) * 1000)
        samples["local"].append(await worker_cpu_per_run(env, durable, runs, durable=True, local=True) * 1000)
        samples["unsandboxed"].append(await worker_cpu_per_run(env, unsandboxed, runs, durable=True) * 1000)
        samples["floor"].append(await worker_cpu_per_run(env, bare, runs, durable=False) * 1000)
    plain = [cpu * 1000 for cpu in await plain_task]

    def ratio_of(kind: str) -> Stat:
        return Stat.of([d / (f + p) for d, f, p in zip(samples[kind], samples["floor"], plain, strict=True)])

    ratio_stat = ratio_of("durable")
    return [
        Row(BENCH, "plain DSPy CPU/run (3 calls)", "ms", Stat.of(plain), note="no Temporal, own process"),
        Row(BENCH, "floor worker CPU/run (3 no-op activities)", "ms", Stat.of(samples["floor"])),
        Row(BENCH, "durable worker CPU/run (3 LM calls)", "ms", Stat.of(samples["durable"])),
        Row(
            BENCH,
            "durable / (floor + plain)",
            "x",
            ratio_stat,
            target=f"<= {TARGET}x",
            verdict=verdict(ratio_stat.median <= TARGET),
            note=f"batches of {runs} concurrent runs",
        ),
        Row(BENCH, "  local mode / (floor + plain)", "x", ratio_of("local"), note="local_activities=True"),
        Row(
            BENCH,
            "  unsandboxed runner / (floor + plain)",
            "x",
            ratio_of("unsandboxed"),
            note="serve(workflow_runner=UnsandboxedWorkflowRunner())",
        ),
    ]


def main() -> None:
    run_one("2. worker CPU per run", run)


if __name__ == "__main__":
    main()
