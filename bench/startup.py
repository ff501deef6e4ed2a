"""6. Start-up: worker process spawn -> polling, first run on a cold worker vs a warm one, and import cost.

- spawn -> polling: from ``Popen`` of a worker subprocess (``durable_dspy.serve_async``) to its READY line (printed
  by ``on_ready`` once the worker polls); the bare floor worker for reference. Target <= 3 s.
- first run: a 3-call run on a worker that has just become ready, vs the median of the next runs. Target <= 1.5x.
- import: in a fresh interpreter, ``import durable_dspy`` after ``import dspy, temporalio``, from bytecode as an
  installed package. Target <= 50 ms. For reference, the same after ``temporalio.workflow`` (which defining
  any workflow needs), and after ``temporalio.client`` and ``temporalio.worker`` (which any Temporal worker or
  client needs): what durable_dspy adds beyond the SDK.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid

from ._harness import ROOT, Env, Row, Stat, log, run_one, timed, verdict

BENCH = "startup"
CALLS = 3
SPAWN_TARGET = 3.0
FIRST_RUN_TARGET = 1.5
IMPORT_TARGET_MS = 50.0

_IMPORT_PROBE = """
import json, time
t0 = time.perf_counter()
import {base}
t1 = time.perf_counter()
import durable_dspy
t2 = time.perf_counter()
print(json.dumps({{"base_ms": (t1 - t0) * 1000, "durable_dspy_ms": (t2 - t1) * 1000}}))
"""


def _probe_env(pycache: str) -> dict[str, str]:
    """Imports from bytecode, as an installed package's. With ``PYTHONDONTWRITEBYTECODE`` (set to keep a source
    tree clean) every probe would compile durable_dspy's sources again (about 20 ms); the bytecode goes to a
    temporary directory instead of the tree."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


async def import_ms(base: str, pycache: str) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _IMPORT_PROBE.format(base=base), cwd=ROOT, env=_probe_env(pycache),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"import probe failed:\n{err.decode()[-2000:]}")
    return float(json.loads(out.decode().strip().splitlines()[-1])["durable_dspy_ms"])


# (imported before durable_dspy, label, note); the first one is the target's.
IMPORT_BASES = (
    ("dspy, temporalio", "dspy, temporalio", ""),
    ("dspy, temporalio.workflow", "dspy, temporalio.workflow", "what it adds beyond what defining workflows needs"),
    ("dspy, temporalio.client, temporalio.worker", "dspy, temporalio.client/.worker", "beyond the Temporal SDK"),
)


async def import_rows(quick: bool) -> list[Row]:
    samples: list[list[float]] = [[] for _ in IMPORT_BASES]
    with tempfile.TemporaryDirectory(prefix="durable-dspy-pycache-") as pycache:
        await import_ms(IMPORT_BASES[0][0], pycache)  # writes the bytecode; not measured
        for _ in range(1 if quick else 5):  # interleaved: load changes hit every variant alike
            for i, (base, _label, _note) in enumerate(IMPORT_BASES):
                samples[i].append(await import_ms(base, pycache))
    rows = []
    for i, (_base, label, note) in enumerate(IMPORT_BASES):
        stat = Stat.of(samples[i])
        target = i == 0
        rows.append(
            Row(
                BENCH,
                f"import durable_dspy after {label}",
                "ms",
                stat,
                target=f"<= {IMPORT_TARGET_MS:.0f} ms" if target else "",
                verdict=verdict(stat.median <= IMPORT_TARGET_MS) if target else "",
                note=note,
            )
        )
    return rows


async def run(env: Env) -> list[Row]:
    from .programs import Sequential

    reps = env.reps(3, 1)
    warm_runs = 3
    env.reset_lm()
    spawn, floor_spawn, first, warm, ratio = [], [], [], [], []
    for rep in range(reps):
        log(f"startup: repetition {rep + 1}/{reps}")
        worker = await env.spawn("durable")
        spawn.append(worker.ready_seconds or 0.0)
        times = []
        for i in range(1 + warm_runs):
            seconds, _ = await timed(
                Sequential.run(
                    env.client,
                    question=f"startup {i} {uuid.uuid4().hex[:8]}",
                    calls=CALLS,
                    task_queue=worker.task_queue,
                )
            )
            times.append(seconds * 1000)
        warm_median = Stat.of(times[1:]).median
        first.append(times[0])
        warm.append(warm_median)
        ratio.append(times[0] / warm_median)
        if not (rep == reps - 1 and env.adopt(worker)):  # later benchmarks may reuse the last one, warm
            worker.kill()
        bare = await env.spawn("floor")
        floor_spawn.append(bare.ready_seconds or 0.0)
        if not (rep == reps - 1 and env.adopt(bare)):
            bare.kill()
    spawn_stat, ratio_stat = Stat.of(spawn), Stat.of(ratio)
    return [
        Row(
            BENCH,
            "durable worker spawn -> polling",
            "s",
            spawn_stat,
            target=f"<= {SPAWN_TARGET:.0f} s",
            verdict=verdict(spawn_stat.median <= SPAWN_TARGET),
        ),
        Row(BENCH, "floor worker spawn -> polling", "s", Stat.of(floor_spawn), note="bare Temporal worker"),
        Row(BENCH, "first run on a cold worker (3 calls)", "ms", Stat.of(first)),
        Row(BENCH, "warm run (3 calls)", "ms", Stat.of(warm), note=f"median of the next {warm_runs} runs"),
        Row(
            BENCH,
            "first run / warm run",
            "x",
            ratio_stat,
            target=f"<= {FIRST_RUN_TARGET}x",
            verdict=verdict(ratio_stat.median <= FIRST_RUN_TARGET),
        ),
        *await import_rows(env.quick),
    ]


def main() -> None:
    run_one("6. start-up", run)


if __name__ == "__main__":
    main()
