"""Replay saved histories against the current code before deploying it.

Example:
    >>> reports = await check_histories(["histories/rag-1.json"])
    >>> [r for r in reports if not r.ok]
    []
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from .._plugin import DurableDSPyPlugin
from .._registry import Registry, default_registry
from .._versioning import FIX_HINT

_INNER_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of replaying one history. ``message`` says what differs and what to do."""

    workflow_id: str
    ok: bool
    message: str = ""
    source: str = ""  # the file it came from, or the workflow id


def _load(item: WorkflowHistory | str | Path) -> WorkflowHistory:
    if isinstance(item, WorkflowHistory):
        return item
    path = Path(item)
    data = json.loads(path.read_text(encoding="utf-8"))
    return WorkflowHistory.from_json(data.get("workflowId") or path.stem, data)


def _replayer(registry: Registry | None) -> Replayer:
    from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

    # Each outcome is reported; the SDK core's own warnings about a failed replay would only repeat it.
    quiet = Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=TelemetryFilter("ERROR", "ERROR"))))
    return Replayer(workflows=[], plugins=[DurableDSPyPlugin(registry=registry)], runtime=quiet)


def explain(failure: BaseException | str, workflow_id: str = "") -> str:
    """Turn a replay failure into a message that says what changed and what to do."""
    text = str(failure)
    inner = _INNER_MESSAGE.search(text)
    detail = inner.group(1).encode().decode("unicode_escape") if inner else text
    if "changed under this running workflow" in detail:
        return detail
    if "Nondeterminism" in detail or "nondeterminism" in detail.lower():
        return (
            f"The program's code no longer matches the recorded run {workflow_id!r}: it now issues different calls "
            f"than the history records ({detail}). {FIX_HINT}"
        )
    return detail


async def check_histories(
    histories: Iterable[WorkflowHistory | str | Path], *, registry: Registry | None = None
) -> list[ReplayReport]:
    """Replay each history (a ``WorkflowHistory`` or a JSON file from ``temporal workflow show -o json`` or
    ``history.to_json()``) with the programs of ``registry`` (the default registry when omitted)."""
    programs = registry if registry is not None else default_registry
    known = sorted(p.name for p in programs.programs())
    replayer = _replayer(registry)
    reports = []
    for item in histories:
        source = str(item) if not isinstance(item, WorkflowHistory) else item.workflow_id
        try:
            history = _load(item)
            kind = history.events[0].workflow_execution_started_event_attributes.workflow_type.name
        except Exception as exc:
            message = f"not a Temporal history in JSON ({type(exc).__name__}: {exc})"
            reports.append(ReplayReport("", False, message, source))
            continue
        if kind not in known:
            message = f"its program {kind!r} is not registered (registered: {', '.join(known) or 'none'})"
            reports.append(ReplayReport(history.workflow_id, False, message, source))
            continue
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        failure = result.replay_failure
        message = explain(failure, history.workflow_id) if failure else ""
        reports.append(ReplayReport(history.workflow_id, failure is None, message, source))
    return reports
