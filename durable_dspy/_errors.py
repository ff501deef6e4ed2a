"""Errors raised by durable_dspy. Every message says what, why and how to fix it."""

from __future__ import annotations

__all__ = [
    "DefinitionError",
    "DurableDSPyError",
    "InputError",
    "NoWorkerError",
    "ProgramFailedError",
    "SerializationError",
    "WorkflowUsageError",
]


class DurableDSPyError(Exception):
    """Base class of every error durable_dspy raises."""


class DefinitionError(DurableDSPyError, TypeError):
    """A program or tool cannot be made durable as written (raised at import time)."""


class InputError(DurableDSPyError, TypeError):
    """Inputs given to ``Program.start()`` do not match ``forward``'s signature. No workflow was created."""


class SerializationError(DurableDSPyError, TypeError):
    """A value crossing a workflow or activity boundary cannot be serialized."""


class WorkflowUsageError(DurableDSPyError, RuntimeError):
    """Code inside a durable run used DSPy in a way that cannot be made durable."""


class ProgramFailedError(DurableDSPyError):
    """A durable run failed because the program raised.

    Attributes:
        type: the original exception's class name, e.g. ``"ValueError"``.
        workflow_id: the run's workflow id.
    """

    def __init__(self, message: str, *, type: str, workflow_id: str) -> None:
        super().__init__(message)
        self.type = type
        self.workflow_id = workflow_id


class NoWorkerError(DurableDSPyError, TimeoutError):
    """No worker has taken a run: none polls its task queue, or those that do lack its program.

    The run is kept: it starts as soon as a suitable worker polls, and ``result()`` may be awaited again.
    """
