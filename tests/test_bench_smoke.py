"""The benchmark scripts still work: every benchmark at tiny sizes, and the load script with a few runs.

No timing is asserted (figures on a shared CI machine mean little); only that each script completes and prints its
summary rows. The real numbers come from ``python -m bench`` (see bench/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

# Rows each benchmark must print (metric name prefixes), by benchmark.
SUMMARY_ROWS = {
    "latency": ["overhead / floor activity @0ms", "overhead / floor activity @50ms"],
    "cpu": ["plain DSPy CPU/run", "floor worker CPU/run", "durable worker CPU/run", "durable / (floor + plain)"],
    "throughput": ["durable / floor runs/s", "durable worker peak RSS", "durable RSS per in-flight run"],
    "history": ["history bytes, ", "bytes/step, ", "quadratic term"],
    "crash": ["kill -> done", "LM answers served", "distinct LM calls served"],
    "startup": [
        "durable worker spawn -> polling",
        "first run / warm run",
        "import durable_dspy after dspy, temporalio",
    ],
    "fanout": ["sequential, 8 calls", "dspy.Parallel, 8 items"],
}


def run_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>``; on timeout, SIGTERM it first so it stops its dev server and worker processes."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", *args]
    with subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            raise AssertionError(
                f"{' '.join(args)} did not finish in {timeout:.0f} s:\n{out[-2000:]}{err[-2000:]}"
            ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_every_benchmark_runs_and_prints_its_summary_rows() -> None:
    proc = run_script("bench", "--quick", timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    metrics: dict[str, list[str]] = {}
    for row in rows:
        metrics.setdefault(row["bench"], []).append(row["metric"])
    assert set(metrics) == set(SUMMARY_ROWS), metrics
    for bench, expected in SUMMARY_ROWS.items():
        for prefix in expected:
            assert any(m.startswith(prefix) for m in metrics[bench]), (bench, prefix, metrics[bench])
    for row in rows:
        if row["target"]:
            assert row["verdict"] in ("PASS", "MISS"), row
        if row["median"] is None:  # only a feature still missing may be reported as not available
            assert row["note"].startswith("not available"), row
    assert " PASS, " in proc.stdout and " MISS; total " in proc.stdout


def test_load_script_completes_every_run_despite_a_killed_worker() -> None:
    proc = run_script("bench.load", "--runs", "12", timeout=180)
    summary = [line for line in proc.stdout.splitlines() if line.startswith("load: ")]
    assert len(summary) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "completed=12 lost=0" in summary[0], summary[0]
    assert proc.returncode == 0, summary[0]
