"""The one place where Temporal names are derived. Names are contracts: histories already written refer to them.

- A program's workflow type is ``"<module>.<qualname>"`` of its class, or the ``name=`` given.
- A tool's activity type is ``"<module>.<qualname>"`` of its function, or the ``name=`` given.
- The LM activities are shared by every program: ``durable_dspy.lm.call`` and ``durable_dspy.lm.describe``.
- The Python attribute that holds a program's generated workflow class is ``<Class>_DurableWorkflow``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ._errors import DefinitionError

LM_CALL_ACTIVITY = "durable_dspy.lm.call"
LM_DESCRIBE_ACTIVITY = "durable_dspy.lm.describe"
WORKFLOW_CLASS_SUFFIX = "_DurableWorkflow"


_main_module: str | None = None  # what __main__ resolved to; inside the sandbox sys.modules no longer tells


def module_name(obj: Any) -> str:
    """The importable module name of ``obj``, resolving ``__main__`` to the script's real module name.

    Running ``python -m app.rag`` and importing ``app.rag`` must give one name, or a worker started as a
    script could never serve runs started by a client that imports the module. Temporal's sandbox re-runs a
    script as ``__temporal_main__``: that resolves to the same name.
    """
    global _main_module
    name: str = obj.__module__
    if name == "__temporal_main__" and _main_module is not None:
        return _main_module
    if name != "__main__":
        return name
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        resolved = str(spec.name)
    else:
        file = getattr(main, "__file__", None)
        resolved = Path(file).stem if file else name
    _main_module = resolved
    return resolved


def qualified_name(obj: Any, *, kind: str, allow_local: bool = False) -> str:
    """``"<module>.<qualname>"`` for a top-level class or function; rejects what has no stable name.

    ``allow_local`` accepts a function defined inside another one (a tool given an explicit ``name=``: activities
    are found by name, never imported).
    """
    qualname: str = obj.__qualname__
    if "<lambda>" in qualname:
        raise DefinitionError(
            f"{kind} {qualname!r} is a lambda, which has no stable name for Temporal. "
            "Write it as a named function at module level."
        )
    if "<locals>" in qualname and not allow_local:
        raise DefinitionError(
            f"{kind} {qualname!r} is defined inside a function, so a Temporal worker cannot import it by name. "
            "Define it at module level" + (" (or give a tool an explicit name=...)." if kind.endswith("tool") else ".")
        )
    return f"{module_name(obj)}.{qualname}"


def validate_name(name: str, *, kind: str) -> str:
    """Check an explicit ``name=`` override."""
    if not isinstance(name, str) or not name.strip():
        raise DefinitionError(f"{kind} name must be a non-empty string, got {name!r}.")
    return name
