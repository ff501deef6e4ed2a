"""A ``durable_dspy.serve_async`` worker in its own process, configured from the command line, for scale-out and
split-deployment tests: ``python -m tests.support.scale_worker --address ... --task-queue ... --identity w1``.

Prints ``READY`` once it polls and ``STOPPED`` after a graceful shutdown (SIGTERM or SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
from datetime import timedelta

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--lm-url", required=True)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--module", action="append", default=["tests.programs.basic"])
    parser.add_argument("--no-workflows", dest="workflows", action="store_false")
    parser.add_argument("--no-activities", dest="activities", action="store_false")
    parser.add_argument("--max-concurrent-activities", type=int, default=None)
    parser.add_argument("--health-file", default=None)
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args()

    import dspy

    import durable_dspy

    for module in args.module:
        importlib.import_module(module)
    lm = None
    if args.activities:
        lm = dspy.LM("openai/test-model", api_base=args.lm_url + "/v1", api_key="sk-test-SECRET", cache=False)
    options = {}
    if args.max_concurrent_activities is not None:
        options["max_concurrent_activities"] = args.max_concurrent_activities
    asyncio.run(
        durable_dspy.serve_async(
            task_queue=args.task_queue,
            lm=lm,
            address=args.address,
            workflows=args.workflows,
            activities=args.activities,
            health_file=args.health_file,
            graceful_shutdown_timeout=timedelta(seconds=args.grace),
            on_ready=lambda _worker: print("READY", flush=True),
            identity=args.identity,
            **options,
        )
    )
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
