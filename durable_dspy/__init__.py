"""durable_dspy: DSPy programs made durable on Temporal, call by call.

Example:
    >>> @durable_program
    ... class RAG(dspy.Module): ...
    >>> durable_dspy.serve(task_queue="rag", lm=dspy.LM("openai/gpt-4o-mini"))
"""

__all__ = [
    "ActivityOptions",
    "DefinitionError",
    "DurableDSPyError",
    "DurableDSPyPlugin",
    "DurableHandle",
    "InputError",
    "NonRetryableToolError",
    "ProgramFailedError",
    "Progress",
    "Registry",
    "SerializationError",
    "Step",
    "WorkflowUsageError",
    "__version__",
    "connect",
    "default_registry",
    "durable_program",
    "durable_tool",
    "serve",
    "serve_async",
]

from importlib.metadata import PackageNotFoundError, version

from ._client import DurableHandle
from ._connect import connect
from ._errors import (
    DefinitionError,
    DurableDSPyError,
    InputError,
    ProgramFailedError,
    SerializationError,
    WorkflowUsageError,
)
from ._options import ActivityOptions
from ._plugin import DurableDSPyPlugin
from ._program import durable_program
from ._progress import Progress, Step
from ._registry import Registry, default_registry
from ._serve import serve, serve_async
from ._tool import NonRetryableToolError, durable_tool

try:
    __version__ = version("durable-dspy")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
