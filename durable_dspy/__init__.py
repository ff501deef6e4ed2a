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
    "DurableInterpreter",
    "InputError",
    "NoWorkerError",
    "NonRetryableToolError",
    "ProgramFailedError",
    "Progress",
    "Registry",
    "SerializationError",
    "Step",
    "ToolFailedError",
    "WorkflowUsageError",
    "__version__",
    "connect",
    "default_registry",
    "durable_program",
    "durable_tool",
    "serve",
    "serve_async",
    "warm_up",
]

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ._errors import (
    DefinitionError,
    DurableDSPyError,
    InputError,
    NoWorkerError,
    ProgramFailedError,
    SerializationError,
    WorkflowUsageError,
)
from ._options import ActivityOptions
from ._program import durable_program
from ._progress import Progress, Step
from ._registry import Registry, default_registry
from ._tool import NonRetryableToolError, ToolFailedError, durable_tool

if TYPE_CHECKING:
    from ._client import DurableHandle
    from ._connect import connect
    from ._interpreter import DurableInterpreter
    from ._plugin import DurableDSPyPlugin
    from ._serve import serve, serve_async
    from ._warmup import warm_up

# The client and worker side (temporalio.client, temporalio.worker: about 100 ms) load on first use, so that
# importing a module of durable programs stays cheap.
_LAZY = {
    "DurableHandle": "._client",
    "connect": "._connect",
    "DurableInterpreter": "._interpreter",
    "DurableDSPyPlugin": "._plugin",
    "serve": "._serve",
    "serve_async": "._serve",
    "warm_up": "._warmup",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'durable_dspy' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


try:
    __version__ = version("durable-dspy")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"
