"""A durable_dspy worker in its own process, for crash tests: ``python -m tests.support.worker_main ...``.

Prints ``READY`` on stdout once it polls. Its LM talks to the scripted LM server given by ``--lm-url``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--lm-url", required=True)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--api-key", default="sk-test-SECRET")
    parser.add_argument("--module", action="append", default=["tests.programs.basic"])
    parser.add_argument("--grace", type=float, default=30.0)
    args = parser.parse_args()

    import dspy

    import durable_dspy

    for module in args.module:
        importlib.import_module(module)
    lm = dspy.LM(
        "openai/test-model", api_base=args.lm_url + "/v1", api_key=args.api_key, cache=False, engine=args.engine
    )

    def ready(_worker: object) -> None:
        print("READY", flush=True)

    from datetime import timedelta

    asyncio.run(
        durable_dspy.serve_async(
            task_queue=args.task_queue,
            lm=lm,
            address=args.address,
            on_ready=ready,
            graceful_shutdown_timeout=timedelta(seconds=args.grace),
        )
    )
    print("STOPPED", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
