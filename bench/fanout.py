"""7. Fan-out: ``dspy.Parallel`` over 8 items inside a durable run vs the same 8 LM calls one after another (50 ms).

A Parallel run counts only if all 8 answers came back and the history holds 8 LM-call activities; otherwise the row
says "not available" with the reason (a sync forward cannot yet run Parallel's threads in a workflow, or it fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from temporalio.api.enums.v1 import EventType

from ._harness import Env, Row, Stat, log, run_one, timed

BENCH = "fanout"
ITEMS = 8
LATENCY = 0.05
RUN_TIMEOUT = 30.0
LM_CALL = "durable_dspy.lm.call"


class Unavailable(Exception):
    pass


async def one_run(env: Env, tq: str, *, parallel: bool) -> float:
    from .programs import FanOut

    tag = uuid.uuid4().hex[:8]
    questions = [f"fanout {tag} item {i}" for i in range(ITEMS)]
    handle = await FanOut.start(env.client, questions=questions, parallel=parallel, task_queue=tq)
    result = asyncio.ensure_future(timed(handle.result()))
    watch = asyncio.ensure_future(_task_failure(handle))
    try:
        done, _ = await asyncio.wait({result, watch}, timeout=RUN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if result not in done:
            reason = watch.result() if watch in done else f"no result in {RUN_TIMEOUT:.0f} s"
            raise Unavailable(reason)
        seconds, prediction = result.result()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await handle.terminate("benchmark gave up on this run")
        if isinstance(exc, Unavailable):
            raise
        raise Unavailable(f"{type(exc).__name__}: {str(exc)[:160]}") from exc
    finally:
        result.cancel()
        watch.cancel()
    answered = sum(1 for answer in prediction.answers if answer)
    history = await handle.fetch_history()
    lm_calls = sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == LM_CALL
    )
    if answered != ITEMS or lm_calls != ITEMS:
        raise Unavailable(f"{answered}/{ITEMS} answers, {lm_calls} LM-call activities")
    return seconds * 1000


async def _task_failure(handle) -> str:  # type: ignore[no-untyped-def]
    """Returns the first workflow task failure's message (a run stuck retrying its task never ends by itself)."""
    while True:
        await asyncio.sleep(0.5)
        history = await handle.fetch_history()
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                message = event.workflow_task_failed_event_attributes.failure.message
                return f"workflow task failed: {message[:160]}"


async def run(env: Env) -> list[Row]:
    reps = env.reps(7, 1)
    warmup = 0 if env.quick else 1
    tq = env.task_queue("fanout")
    env.reset_lm(latency=LATENCY)
    samples: dict[str, list[float]] = {"parallel": [], "sequential": []}
    unavailable = ""
    async with env.durable_worker(tq):
        for rep in range(warmup + reps):
            for name in ("sequential", "parallel"):
                if name == "parallel" and unavailable:
                    continue
                try:
                    ms = await one_run(env, tq, parallel=name == "parallel")
                except Unavailable as exc:
                    if name == "sequential":
                        raise
                    unavailable = str(exc)
                    log(f"fanout: dspy.Parallel in a durable run is not available: {unavailable}")
                    continue
                if rep >= warmup:
                    samples[name].append(ms)
    env.reset_lm()
    sequential = Stat.of(samples["sequential"])
    rows = [Row(BENCH, f"sequential, {ITEMS} calls @50ms", "ms", sequential)]
    if unavailable:
        rows += [
            Row(BENCH, f"dspy.Parallel, {ITEMS} items @50ms", "ms", None, note=f"not available: {unavailable}"),
            Row(BENCH, "speed-up, Parallel vs sequential", "x", None, note="not available"),
        ]
    else:
        parallel = Stat.of(samples["parallel"])
        speedup = Stat.of([s / p for s, p in zip(samples["sequential"], samples["parallel"], strict=True)])
        rows += [
            Row(BENCH, f"dspy.Parallel, {ITEMS} items @50ms", "ms", parallel),
            Row(BENCH, "speed-up, Parallel vs sequential", "x", speedup),
        ]
    return rows


def main() -> None:
    run_one("7. fan-out with dspy.Parallel", run)


if __name__ == "__main__":
    main()
