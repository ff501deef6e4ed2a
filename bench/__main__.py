"""Run every benchmark against one Temporal dev server and one scripted LM server: ``python -m bench [--quick]``.

Prints the table (median, min, max over repetitions; PASS/MISS against each target), then one JSON object per row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable

from . import cpu, crash, fanout, history, latency, startup, throughput
from ._harness import Env, Row, exit_on_sigterm, format_table, log

# Table order (the numbering) and, separately, run order: start-up measures cold workers and hands the
# warm ones to the CPU and throughput benchmarks; latency runs first so the dev server is warm for everyone.
BENCHES: dict[str, tuple[str, Callable[[Env], Awaitable[list[Row]]]]] = {
    "latency": ("1. per-LM-call time", latency.run),
    "cpu": ("2. worker CPU per run", cpu.run),
    "throughput": ("3. throughput and memory", throughput.run),
    "history": ("4. history bytes per ReAct step", history.run),
    "crash": ("5. crash resume", crash.run),
    "startup": ("6. start-up", startup.run),
    "fanout": ("7. fan-out with dspy.Parallel", fanout.run),
}
RUN_ORDER = ("latency", "startup", "cpu", "throughput", "history", "crash", "fanout")


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, {model}; Python {platform.python_version()}; load average at start {load}"


async def run_all(names: list[str], quick: bool) -> list[Row]:
    rows: dict[str, list[Row]] = {}
    async with Env.open(quick=quick) as env:
        for name in RUN_ORDER:
            if name not in names:
                continue
            started = time.perf_counter()
            log(f"{BENCHES[name][0]} ...")
            try:
                rows[name] = await BENCHES[name][1](env)
            except Exception as exc:
                traceback.print_exc()
                rows[name] = [Row(name, "benchmark failed", "", None, note=f"{type(exc).__name__}: {exc}"[:200])]
            log(f"{BENCHES[name][0]}: {time.perf_counter() - started:.0f} s")
    return [row for name in BENCHES if name in rows for row in rows[name]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repetitions (for CI)")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--json-out", help="also write the JSON lines to this file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHES)}")
    exit_on_sigterm()
    started = time.perf_counter()
    header = f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {machine()}" + ("; --quick" if args.quick else "")
    rows = asyncio.run(run_all(names, args.quick))
    print(f"\n== durable_dspy benchmarks: {header} ==", flush=True)
    print(format_table(rows), flush=True)
    misses = [r for r in rows if r.verdict == "MISS"]
    passes = [r for r in rows if r.verdict == "PASS"]
    print(f"\n{len(passes)} PASS, {len(misses)} MISS; total {time.perf_counter() - started:.0f} s", flush=True)
    print("\n# JSON lines", flush=True)
    lines = [json.dumps(row.as_json()) for row in rows]
    print("\n".join(lines), flush=True)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write("\n".join(lines) + "\n")
    sys.exit(1 if any(r.metric == "benchmark failed" for r in rows) else 0)


if __name__ == "__main__":
    main()
