"""Client side of a durable program: ``Program.start(client, **inputs)`` and ``Program.run(...)``."""

from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import dspy
import pydantic_core
from dspy.primitives.prediction import Completions
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from ._errors import InputError, NoWorkerError, ProgramFailedError
from ._protocol import RunResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from temporalio.api.taskqueue.v1 import PollerInfo

    from ._program import ProgramDefinition

DEFAULT_TASK_QUEUE = "durable-dspy"
WORKER_TIMEOUT = timedelta(seconds=30)  # how long result() waits for a worker to take a run before diagnosing


def default_task_queue() -> str:
    """``DURABLE_DSPY_TASK_QUEUE`` from the environment, else ``"durable-dspy"``."""
    return os.environ.get("DURABLE_DSPY_TASK_QUEUE", DEFAULT_TASK_QUEUE)


async def pollers(client: Client, task_queue: str, *, workflows: bool = True) -> Sequence[PollerInfo]:
    """The recent pollers of ``task_queue``'s workflow side (``workflows=False``: its activity side)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    kind = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if workflows else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
    request = DescribeTaskQueueRequest(
        namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
    )
    return (await client.workflow_service.describe_task_queue(request)).pollers


def to_prediction(result: RunResult) -> Any:
    """A workflow's result as the program would have returned it: a ``dspy.Prediction`` with its usage."""
    if result.kind != "prediction":
        return result.value
    prediction = dspy.Prediction(**result.value)
    prediction.set_lm_usage(result.lm_usage)
    if result.completions is not None:
        prediction._completions = Completions(result.completions)
    return prediction


def validate_inputs(definition: ProgramDefinition, inputs: dict[str, Any]) -> dict[str, Any]:
    """Check inputs against ``forward``'s signature before anything reaches the server; name every bad field."""
    params = definition.signature.parameters
    unknown = sorted(set(inputs) - set(params))
    missing = [name for name, p in params.items() if p.default is p.empty and name not in inputs]
    problems = []
    if unknown:
        problems.append(f"unknown input field(s) {unknown}")
    if missing:
        problems.append(f"missing input field(s) {missing}")
    for name, value in inputs.items():
        if name in params:
            try:
                pydantic_core.to_json(value)
            except Exception:
                problems.append(f"input field {name!r} is a {type(value).__name__}, which cannot be serialized")
    if problems:
        expected = ", ".join(_describe_param(p) for p in params.values()) or "no inputs"
        raise InputError(
            f"{definition.cls.__qualname__}.start(): {'; '.join(problems)}. "
            f"{definition.method}() takes: {expected}. No workflow was started."
        )
    return inputs


def _describe_param(param: inspect.Parameter) -> str:
    text = param.name
    if param.annotation is not param.empty:
        ann = param.annotation
        text += f": {ann if isinstance(ann, str) else getattr(ann, '__name__', repr(ann))}"
    if param.default is not param.empty:
        text += f" = {param.default!r}"
    return text


class DurableHandle:
    """A started durable run. ``await handle.result()`` gives a ``dspy.Prediction``; the rest is Temporal's handle.

    Example:
        >>> handle = await RAG.start(client, question="What is DSPy?", id="rag-1")
        >>> prediction = await handle.result()
    """

    def __init__(self, handle: WorkflowHandle[Any, RunResult], definition: ProgramDefinition) -> None:
        self.workflow = handle
        self.definition = definition

    @property
    def id(self) -> str:
        return self.workflow.id

    @property
    def run_id(self) -> str | None:
        return self.workflow.result_run_id

    async def result(self, *, worker_timeout: timedelta | None = WORKER_TIMEOUT) -> Any:
        """Wait for the run and return its ``dspy.Prediction``; a program error raises ``ProgramFailedError``.

        If no worker has taken the run after ``worker_timeout`` (None: wait forever), raises ``NoWorkerError``
        saying why (no worker polls the task queue, or the workers there lack the program). The run is kept.
        """
        waiting = asyncio.ensure_future(self._result())
        try:
            if worker_timeout is not None:
                done, _ = await asyncio.wait({waiting}, timeout=worker_timeout.total_seconds())
                if not done:
                    problem = await self.diagnose()
                    if problem is not None:
                        raise NoWorkerError(problem)
            return await waiting
        finally:
            if not waiting.done():  # we gave up (NoWorkerError) or were cancelled: stop waiting for the run too
                waiting.cancel()

    async def diagnose(self) -> str | None:
        """Why no worker has taken this run yet, or None if one has (or it cannot tell)."""
        from temporalio.api.enums.v1 import EventType

        queue = (await self.workflow.describe()).task_queue
        module = self.definition.cls.__module__
        async for event in self.workflow.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                return None
            failure = event.workflow_task_failed_event_attributes.failure
            if "is not registered" in failure.message:
                return (
                    f"The workers polling task queue {queue!r} do not have program {self.definition.name!r} "
                    f"({failure.message}). Import {module} in the worker process before serve()."
                )
        if await pollers(self.workflow._client, queue):
            return None  # a worker polls: busy, or about to take the run
        return (
            f"No worker polls task queue {queue!r}, so run {self.id!r} of {self.definition.name} has not started. "
            f"Start one in a process that imports {module}: durable_dspy.serve(task_queue={queue!r}) "
            f"(or `durable-dspy worker {module} -q {queue}`). The run is kept and starts when a worker polls."
        )

    async def _result(self) -> Any:
        try:
            result = await self.workflow.result()
        except WorkflowFailureError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type not in (None, "SerializationError"):
                raise ProgramFailedError(
                    f"{self.definition.name} run {self.id!r} failed: {cause.message}",
                    type=cause.type or "Exception",
                    workflow_id=self.id,
                ) from err
            raise
        return to_prediction(result)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.workflow, name)


async def start(definition: ProgramDefinition, client: Client, /, **kwargs: Any) -> DurableHandle:
    from ._program import START_OPTION_NAMES

    options = {key: kwargs.pop(key) for key in list(kwargs) if key in START_OPTION_NAMES}
    inputs = validate_inputs(definition, kwargs)
    workflow_id = options.pop("id", None) or f"{definition.name}-{uuid.uuid4()}"
    task_queue = options.pop("task_queue", None) or definition.task_queue or default_task_queue()
    handle = await client.start_workflow(
        definition.name,
        inputs,
        id=workflow_id,
        task_queue=task_queue,
        result_type=RunResult,
        **options,
    )
    return DurableHandle(handle, definition)
