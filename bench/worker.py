"""A benchmark worker in its own process: ``python -m bench.worker --mode durable|floor|plain ...``.

- ``durable``: ``durable_dspy.serve_async`` with the benchmark programs, as a user's worker would run; prints READY.
- ``floor``: a bare ``temporalio.worker.Worker`` with the floor workflow (no dspy imported); prints READY.
- ``plain``: no Temporal; after a warm-up run, runs ``--batches`` batches of ``--runs`` runs of the ``Sequential``
  program with plain DSPy and prints one JSON line per batch with its CPU time, to compare with a worker's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import threading
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

API_KEY = "sk-test"


def _lm(url: str):  # type: ignore[no-untyped-def]
    import dspy

    return dspy.LM("openai/test-model", api_base=url + "/v1", api_key=API_KEY, cache=False)


def _exit_with_parent() -> None:
    """Exit when the benchmark that spawned us dies, even by SIGKILL: a worker in its own session would outlive it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _ready(_worker: object = None) -> None:
    print("READY", flush=True)


def _share_type_adapters() -> None:
    """Experiment: one process-wide TypeAdapter cache instead of one per workflow run's payload converter."""
    import functools

    import pydantic
    from temporalio.contrib import pydantic as temporal_pydantic

    shared = functools.lru_cache(maxsize=1024)(pydantic.TypeAdapter)
    init = temporal_pydantic.PydanticJSONPlainPayloadConverter.__init__

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        init(self, *args, **kwargs)
        self._type_adapter = shared

    temporal_pydantic.PydanticJSONPlainPayloadConverter.__init__ = __init__  # type: ignore[method-assign]


async def _durable(args: argparse.Namespace) -> None:
    from datetime import timedelta

    import durable_dspy

    from . import programs  # noqa: F401  (registers the programs)

    options: dict[str, object] = {}
    if args.max_concurrent_activities:
        options["max_concurrent_activities"] = args.max_concurrent_activities
    # Experiments for profiling (bench/profile.py --experiments), not product settings.
    if "shared-adapters" in args.experiment:
        _share_type_adapters()
    if "unsandboxed" in args.experiment:
        from temporalio.worker import UnsandboxedWorkflowRunner

        options["workflow_runner"] = UnsandboxedWorkflowRunner()
    await durable_dspy.serve_async(
        task_queue=args.task_queue,
        lm=_lm(args.lm_url),
        address=args.address,
        on_ready=_ready,
        graceful_shutdown_timeout=timedelta(seconds=1),
        **options,
    )


async def _floor(args: argparse.Namespace) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from . import floor

    client = await Client.connect(args.address)
    options = {}
    if args.max_concurrent_activities:
        options["max_concurrent_activities"] = args.max_concurrent_activities
    async with Worker(
        client, task_queue=args.task_queue, workflows=[floor.Floor], activities=[floor.noop, floor.wait], **options
    ):
        _ready()
        await asyncio.Event().wait()


def _plain(args: argparse.Namespace) -> None:
    import dspy

    from .programs import Sequential

    lm = _lm(args.lm_url)
    program = Sequential()
    with dspy.context(lm=lm, track_usage=True):
        program(question="plain warm-up", calls=args.calls)
        for batch in range(args.batches):
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            for i in range(args.runs):
                program(question=f"plain {batch} {i} {time.time_ns()}", calls=args.calls)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            print(json.dumps({"cpu_s": cpu, "wall_s": wall, "runs": args.runs, "calls": args.calls}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("durable", "floor", "plain"), required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--lm-url", required=True)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batches", type=int, default=1)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--max-concurrent-activities", type=int, default=0)
    parser.add_argument("--experiment", action="append", default=[], choices=("shared-adapters", "unsandboxed"))
    args = parser.parse_args()
    _exit_with_parent()
    if args.mode == "plain":
        _plain(args)
        return
    asyncio.run(_durable(args) if args.mode == "durable" else _floor(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
