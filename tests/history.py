"""Reading what a run recorded: activity types in order, and replaying a history against the current code."""

from __future__ import annotations

import json
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

import durable_dspy

LM_CALL = "durable_dspy.lm.call"
DESCRIBE = "durable_dspy.lm.describe"
FLUSH = "durable_dspy.flush"  # the no-op local activity and the signal of local mode's flush


def scheduled_activities(history: WorkflowHistory, *, flushes: bool = False) -> list[str]:
    """Activity types in history order: regular activities when scheduled, local ones when their result
    was recorded (a marker). The no-op flush activities of local mode only with ``flushes=True``."""
    names = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            data = event.marker_recorded_event_attributes.details["data"].payloads[0].data
            names.append(json.loads(data)["activity_type"])
    return names if flushes else [name for name in names if name != FLUSH]


def flush_signals(history: WorkflowHistory) -> int:
    """Flush signals in a history (local mode: one per local LM or tool call, sent while it runs)."""
    return sum(
        1
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and e.workflow_execution_signaled_event_attributes.signal_name == FLUSH
    )


def completed_activities(history: WorkflowHistory) -> int:
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)


async def replay(history: WorkflowHistory, registry: durable_dspy.Registry | None = None, **kwargs: Any) -> None:
    """Replay with the current code; raises on any non-determinism."""
    replayer = Replayer(workflows=[], plugins=[durable_dspy.DurableDSPyPlugin(registry=registry)], **kwargs)
    await replayer.replay_workflow(history)


def workflow_task_problems(history: WorkflowHistory, *, timeouts: bool = True) -> list[str]:
    """Workflow task failures (and timeouts, unless ``timeouts=False``) in a history (a healthy run has none)."""
    bad = {EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED}
    if timeouts:
        bad.add(EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT)
    return [EventType.Name(e.event_type) for e in history.events if e.event_type in bad]


def local_activity_markers(history: WorkflowHistory) -> int:
    """Local activity results recorded in a history (one marker per completed local activity)."""
    return sum(1 for e in history.events if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED)
