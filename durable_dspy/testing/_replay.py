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
from .._registry import Registry
from .._versioning import FIX_HINT

_INNER_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of replaying one history. ``message`` says what differs and what to do."""

    workflow_id: str
    ok: bool
    message: str = ""


def _load(item: WorkflowHistory | str | Path) -> WorkflowHistory:
    if isinstance(item, WorkflowHistory):
        return item
    path = Path(item)
    data = json.loads(path.read_text())
    return WorkflowHistory.from_json(data.get("workflowId") or path.stem, data)


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
    replayer = Replayer(workflows=[], plugins=[DurableDSPyPlugin(registry=registry)])
    reports = []
    for item in histories:
        history = _load(item)
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        failure = result.replay_failure
        reports.append(
            ReplayReport(history.workflow_id, failure is None, explain(failure, history.workflow_id) if failure else "")
        )
    return reports
