"""Where a worker's time goes: py-spy samples a worker subprocess while the benchmark keeps runs going.

Not part of the suite (needs ``pip install py-spy``, which is not a project dependency)::

    python -m bench.profile --mode durable --gil --seconds 20 --concurrency 8 --out /tmp/durable.txt
    python -m bench.profile --mode floor --gil --seconds 20
    python -m bench.profile --mode durable --gil --experiment unsandboxed   # a worker configuration variant
    python -m bench.profile --experiments      # worker CPU/run under configuration variants (no py-spy needed)

Prints the functions with the most samples, inclusive ("total") and exclusive ("self"), as a share of all samples
of non-idle threads, then writes the collapsed stacks to ``--out`` (flame-graph input).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import sys
import time
import uuid

from . import floor
from ._harness import Env, log

CALLS = 3
RATE = 250

# Where a sample's time goes: the first bucket whose ``where`` marker (None: any stack) and one of whose markers
# appear in the sample's stack. Workflow code runs under the sandbox's frames; everything else is the event loop.
_WORKFLOW = "workflow_sandbox"
BUCKETS = [
    ("run start: sandbox instance, user module re-import", None, ("_Instance.__init__", "create_instance")),
    ("workflow: payload (de)serialization", _WORKFLOW, ("_convert_payloads", "to_payloads", "PayloadVisitor")),
    ("workflow: the DSPy program (format, parse)", _WORKFLOW, ("(dspy/",)),
    # A paused-and-resumed greenlet's frames are not linked under the sandbox's: recognise the program by its calls.
    (
        "workflow: the DSPy program (format, parse)",
        None,
        ("Module.__call__", "Predict.__call__", "(durable_dspy/_lm.py"),
    ),
    ("workflow: durable_dspy run setup, bridge", _WORKFLOW, ("(durable_dspy/",)),
    ("workflow: Temporal activation machinery", _WORKFLOW, ("",)),
    (
        "LM activity: dspy request, HTTP, pricing",
        None,
        ("LMActivities.call", "(dspy/", "litellm", "httpx", "httpcore", "_price_result"),
    ),
    ("describe activity", None, ("LMActivities.describe",)),
    ("workflow activation outside the sandbox", None, ("_WorkflowWorker", "RunAffinityExecutor")),
    ("activity: Temporal machinery", None, ("_ActivityWorker",)),
    ("event loop, Temporal bridge, threads, other", None, ("",)),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """``func (path/to/pkg/mod.py:12)`` -> ``pkg/mod.py:func`` (lines dropped so one function is one entry)."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{m.group('func')}"


def buckets(collapsed: str, runs: int) -> str:
    """Milliseconds of sampled time per run, by bucket (see BUCKETS)."""
    totals: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        name = next(
            name
            for name, where, markers in BUCKETS
            if (where is None or where in stack) and any(m in stack for m in markers)
        )
        totals[name] += int(count)
    all_ms = sum(totals.values()) * 1000 / RATE / max(runs, 1)
    out = [f"{'ms/run':>8}  bucket (sampled time per run, {all_ms:.1f} ms in all)"]
    names = list(dict.fromkeys(name for name, _, _ in BUCKETS))
    out += [f"{n * 1000 / RATE / max(runs, 1):8.2f}  {name}" for name in names if (n := totals[name])]
    return "\n".join(out)


def summarize(collapsed: str, top: int) -> str:
    total_samples = 0
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total_samples += n
        frames = [_short(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        exclusive[frames[-1]] += n
    if not total_samples:
        return "no samples"
    out = [f"{total_samples} samples (non-idle threads)", "", "inclusive %  function"]
    out += [f"{100 * n / total_samples:10.1f}  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self %      function"]
    out += [f"{100 * n / total_samples:10.1f}  {f}" for f, n in exclusive.most_common(top)]
    return "\n".join(out)


async def drive(env: Env, mode: str, task_queue: str, concurrency: int, until: float) -> int:
    """Keep ``concurrency`` runs going until ``until``; returns how many completed."""
    from .programs import Sequential

    done = 0

    async def loop(slot: int) -> None:
        nonlocal done
        while time.monotonic() < until:
            tag = f"profile {slot} {uuid.uuid4().hex[:8]}"
            if mode == "durable":
                await Sequential.run(env.client, question=tag, calls=CALLS, task_queue=task_queue)
            else:
                await env.floor_client.execute_workflow(floor.Floor.run, CALLS, id=tag, task_queue=task_queue)
            done += 1

    await asyncio.gather(*(loop(i) for i in range(concurrency)))
    return done


async def profile(
    mode: str, seconds: float, concurrency: int, out: str, top: int, native: bool, gil: bool, experiments: list[str]
) -> None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    async with Env.open(quick=False) as env:
        worker = await env.spawn(mode, extra=[arg for name in experiments for arg in ("--experiment", name)])
        await drive(env, mode, worker.task_queue, 2, time.monotonic() + 2)  # warm-up
        cmd = [py_spy, "record", "--pid", str(worker.pid), "--duration", str(int(seconds)), "--rate", str(RATE)]
        cmd += ["--format", "raw", "--output", out, "--nonblocking"]
        cmd += (["--native"] if native else []) + (["--gil"] if gil else [])
        spy = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL)
        await asyncio.sleep(1.0)  # let py-spy attach
        cpu_before = worker.cpu_seconds()
        runs = await drive(env, mode, worker.task_queue, concurrency, time.monotonic() + seconds - 1.5)
        cpu = worker.cpu_seconds() - cpu_before
        await spy.wait()
        log(f"{mode}: {runs} runs, worker CPU {cpu * 1000 / max(runs, 1):.1f} ms/run")
    with open(out) as f:
        collapsed = f.read()
    print(summarize(collapsed, top))
    print()
    print(buckets(collapsed, runs))
    print(f"\ncollapsed stacks: {out}; {runs} runs of {CALLS} calls; worker CPU {cpu * 1000 / max(runs, 1):.1f} ms/run")


EXPERIMENTS = {
    "floor (bare Temporal)": ("floor", ()),
    "durable, as shipped": ("durable", ()),
    "durable + process-wide TypeAdapter cache": ("durable", ("--experiment", "shared-adapters")),
    "durable + unsandboxed workflow runner": ("durable", ("--experiment", "unsandboxed")),
    "durable + both": ("durable", ("--experiment", "shared-adapters", "--experiment", "unsandboxed")),
}


async def experiments(runs: int, reps: int) -> None:
    """Worker CPU per 3-call run for variants of the worker's configuration, interleaved, in one environment."""
    from .cpu import worker_cpu_per_run

    async with Env.open(quick=False) as env:
        workers = {name: await env.spawn(mode, extra=extra) for name, (mode, extra) in EXPERIMENTS.items()}
        for name, worker in workers.items():
            await worker_cpu_per_run(env, worker, 3, durable=EXPERIMENTS[name][0] == "durable")  # warm-up
        samples: dict[str, list[float]] = {name: [] for name in workers}
        for rep in range(reps):
            log(f"experiments: repetition {rep + 1}/{reps}")
            for name, worker in workers.items():
                cpu = await worker_cpu_per_run(env, worker, runs, durable=EXPERIMENTS[name][0] == "durable")
                samples[name].append(cpu * 1000)
    print(f"worker CPU per 3-call run, ms (median [min-max] of {reps} batches of {runs} concurrent runs)")
    for name, values in samples.items():
        values.sort()
        print(f"{values[len(values) // 2]:8.1f}  [{values[0]:.1f}-{values[-1]:.1f}]  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("durable", "floor"), default="durable")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", default="/tmp/durable-dspy-profile.txt")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--native", action="store_true", help="include native (Rust core, C) frames")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (Python CPU)")
    parser.add_argument(
        "--experiment",
        action="append",
        default=[],
        choices=("shared-adapters", "unsandboxed"),
        help="profile the worker in this configuration variant (see --experiments)",
    )
    parser.add_argument(
        "--experiments", action="store_true", help="instead: worker CPU/run under configuration variants (no py-spy)"
    )
    parser.add_argument("--runs", type=int, default=20, help="runs per batch (--experiments)")
    parser.add_argument("--reps", type=int, default=5, help="batches per variant (--experiments)")
    args = parser.parse_args()
    if args.experiments:
        asyncio.run(experiments(args.runs, args.reps))
        return
    asyncio.run(
        profile(args.mode, args.seconds, args.concurrency, args.out, args.top, args.native, args.gil, args.experiment)
    )


if __name__ == "__main__":
    main()
