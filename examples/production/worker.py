"""The production worker: python examples/production/worker.py

Connection settings come from Temporal's environment configuration: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TEMPORAL_TLS_* or a profile of Temporal's config file (TEMPORAL_PROFILE). The LM's key comes
from OPENAI_API_KEY and stays in this process. SIGTERM drains in-flight calls, then exits.

The same, without this file: durable-dspy worker triage --task-queue support --lm openai/gpt-4o-mini
"""

from __future__ import annotations

import sys
from datetime import timedelta

import dspy
import triage
from temporalio.envconfig import ClientConfig

import durable_dspy


def main() -> None:
    if not ClientConfig.load_client_connect_config().get("target_host"):
        # A production worker must not quietly start its own empty Temporal server.
        sys.exit("Set TEMPORAL_ADDRESS (or a Temporal config profile): which Temporal should this worker serve?")
    durable_dspy.serve(
        task_queue=triage.TASK_QUEUE,
        lm=dspy.LM("openai/gpt-4o-mini", temperature=0.0, max_tokens=1000),
        graceful_shutdown_timeout=timedelta(seconds=60),  # the orchestrator's grace period should be longer
        max_concurrent_activities=50,  # LM and tool calls in flight on this worker
        on_ready=lambda worker: print(f"worker ready on task queue {worker.task_queue!r}", flush=True),
    )


if __name__ == "__main__":
    main()
