"""4. History bytes per ReAct step: a ``dspy.ReAct`` agent with a durable tool returning ~240 bytes, at 5, 10, 15 steps.

History size is the sum of its events' protobuf sizes (``ByteSize``), and ``len(history.to_json())`` for reference.
Bytes per step = (bytes at 15 - bytes at 5) / 10; target <= 4 KB. Linear and quadratic fits show whether the
history grows with the square of the steps (each LM request re-sends the whole trajectory).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory

from ._harness import Env, Row, Stat, fit, run_one, verdict

BENCH = "history"
TARGET = 4096
LM_CALL = "durable_dspy.lm.call"


def _marker_activity(event: Any) -> str:
    """The activity type of a local activity's marker ('' for other markers)."""
    details = event.marker_recorded_event_attributes.details
    if "data" not in details:
        return ""
    return str(json.loads(details["data"].payloads[0].data).get("activity_type", ""))


def sizes(history: WorkflowHistory) -> dict[str, Any]:
    """Total bytes of a history and where they go: LM requests, LM results, tool payloads, everything else.

    Regular activities: the request is in the scheduled event, the result in the completed one. Local
    activities (the default mode): only the result is recorded, in a marker; their flush signals count as other.
    """
    scheduled: dict[int, str] = {}
    parts = {"lm_request": 0, "lm_result": 0, "tool": 0, "other": 0}
    calls = {"lm": 0, "tool": 0}

    def part(name: str, lm_part: str) -> str:
        return lm_part if name == LM_CALL else "tool" if name.startswith("bench.") else "other"

    for event in history.events:
        size, key = event.ByteSize(), "other"
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            key = part(name, "lm_request")  # a call is counted where it is scheduled (regular) ...
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            name = _marker_activity(event)
            key = part(name, "lm_result")  # ... or recorded (local)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            done = event.activity_task_completed_event_attributes.scheduled_event_id
            key, name = part(scheduled.get(done, ""), "lm_result"), ""
        else:
            name = ""
        parts[key] += size
        if name == LM_CALL:
            calls["lm"] += 1
        elif name.startswith("bench."):
            calls["tool"] += 1
    tools, lm_calls = calls["tool"], calls["lm"]
    return {
        "proto": sum(parts.values()),
        "json": len(history.to_json()),
        "tools": tools,
        "lm_calls": lm_calls,
        **parts,
    }


async def run(env: Env) -> list[Row]:
    from .programs import Agent, AgentLocal

    steps = (2, 4, 6) if env.quick else (5, 10, 15)
    tq = env.task_queue("history")
    env.reset_lm()
    measured: dict[int, dict[str, Any]] = {}
    local: dict[int, dict[str, Any]] = {}
    try:
        async with env.durable_worker(tq):
            for program, into in ((Agent, measured), (AgentLocal, local)):
                for n in steps:
                    env.lm_server.react_steps = n
                    question = f"history {n} {uuid.uuid4().hex[:6]}"
                    handle = await program.start(env.client, question=question, task_queue=tq)  # type: ignore[attr-defined]
                    await handle.result()
                    into[n] = sizes(await handle.fetch_history())
                    if into[n]["tools"] != n:
                        raise RuntimeError(f"expected {n} tool calls, the history has {into[n]['tools']}")
    finally:
        env.lm_server.react_steps = 2
    lo, hi = steps[0], steps[-1]
    per_step = (measured[hi]["proto"] - measured[lo]["proto"]) / (hi - lo)
    per_step_json = (measured[hi]["json"] - measured[lo]["json"]) / (hi - lo)
    xs = [float(n) for n in steps]
    ys = [float(measured[n]["proto"]) for n in steps]
    (a1, b1), rss1 = fit(xs, ys, 1)
    (a2, b2, c2), _ = fit(xs, ys, 2)
    rms1 = (rss1 / len(xs)) ** 0.5
    rows = [
        Row(
            BENCH,
            f"history bytes, {n} steps",
            "bytes",
            Stat.exact(measured[n]["proto"]),
            note=(
                f"json {measured[n]['json']:,}; lm requests {measured[n]['lm_request']:,}, lm results "
                f"{measured[n]['lm_result']:,}, tools {measured[n]['tool']:,}, other {measured[n]['other']:,}; "
                f"{measured[n]['lm_calls']} LM calls"
            ),
        )
        for n in steps
    ]
    mid = steps[1]
    rows += [
        Row(
            BENCH,
            f"bytes/step, {lo}->{mid}",
            "bytes",
            Stat.exact((measured[mid]["proto"] - measured[lo]["proto"]) / (mid - lo)),
        ),
        Row(
            BENCH,
            f"bytes/step, {mid}->{hi}",
            "bytes",
            Stat.exact((measured[hi]["proto"] - measured[mid]["proto"]) / (hi - mid)),
        ),
        Row(
            BENCH,
            f"bytes/step, {lo}->{hi}",
            "bytes",
            Stat.exact(per_step),
            target=f"<= {TARGET}",
            verdict=verdict(per_step <= TARGET),
            note=f"json {per_step_json:,.0f} bytes/step",
        ),
        Row(
            BENCH,
            "quadratic term (bytes/step^2)",
            "bytes",
            Stat.exact(c2),
            note=(
                f"quadratic {a2:,.0f} + {b2:,.0f}n + {c2:,.1f}n^2; "
                f"linear {a1:,.0f} + {b1:,.0f}n misses by {rms1:,.0f} rms"
            ),
        ),
    ]
    local_per_step = (local[hi]["proto"] - local[lo]["proto"]) / (hi - lo)
    (_, _, local_c2), _ = fit(xs, [float(local[n]["proto"]) for n in steps], 2)
    rows += [
        Row(
            BENCH,
            f"local mode: history bytes, {n} steps",
            "bytes",
            Stat.exact(local[n]["proto"]),
            note=f"lm results {local[n]['lm_result']:,}, tools {local[n]['tool']:,}, other {local[n]['other']:,}",
        )
        for n in steps
    ]
    rows.append(
        Row(
            BENCH,
            f"local mode: bytes/step, {lo}->{hi}",
            "bytes",
            Stat.exact(local_per_step),
            target=f"<= {TARGET}",
            verdict=verdict(local_per_step <= TARGET),
            note=f"local_activities=True: results only, no prompts; quadratic term {local_c2:,.1f} bytes/step^2",
        )
    )
    return rows


def main() -> None:
    run_one("4. history bytes per ReAct step", run)


if __name__ == "__main__":
    main()
