"""Registries of durable programs and tools. Decorators add to the default one unless given another."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from temporalio import workflow

from ._errors import DefinitionError

if TYPE_CHECKING:
    from ._program import ProgramDefinition
    from ._tool import ToolDefinition


@dataclass(frozen=True)
class Origin:
    """Where a definition comes from, for error messages and to recognise a module imported again."""

    qualified: str
    obj: Any = field(compare=False, repr=False)

    @classmethod
    def of(cls, obj: Any, qualified: str) -> Origin:
        return cls(qualified, obj)

    def __str__(self) -> str:
        # Source lookup reads files: done only when a message needs it, never during a sandboxed re-import.
        try:
            file = inspect.getsourcefile(self.obj)
            line = inspect.getsourcelines(self.obj)[1]
        except (OSError, TypeError):
            return self.qualified
        return f"{self.qualified} ({file}:{line})"


class Registry:
    """Durable programs and tools by their Temporal name.

    Example:
        >>> registry = Registry()
        >>> @durable_tool(registry=registry)
        ... def add(a: int, b: int) -> int:
        ...     return a + b
        >>> [tool.name for tool in registry.tools()]
        ['mymodule.add']
    """

    def __init__(self) -> None:
        self._programs: dict[str, ProgramDefinition] = {}
        self._tools: dict[str, ToolDefinition] = {}

    def _add(self, table: dict[str, Any], name: str, definition: Any, kind: str) -> None:
        # The workflow sandbox re-imports user modules for every run; those re-runs of a decorator must not
        # register again (the process-wide registry already holds the real definition).
        if workflow.unsafe.in_sandbox():
            return
        existing = table.get(name)
        if existing is not None and existing.origin.qualified != definition.origin.qualified:
            raise DefinitionError(
                f"Two durable {kind}s are named {name!r}: {existing.origin} and {definition.origin}. "
                f"Give one of them a different name=..."
            )
        table[name] = definition

    def add_program(self, definition: ProgramDefinition) -> None:
        self._add(self._programs, definition.name, definition, "program")

    def add_tool(self, definition: ToolDefinition) -> None:
        self._add(self._tools, definition.name, definition, "tool")

    def remove_program(self, name: str) -> None:
        if not workflow.unsafe.in_sandbox():  # as in _add: a sandboxed re-import must not touch the registry
            self._programs.pop(name, None)

    def programs(self) -> list[ProgramDefinition]:
        return list(self._programs.values())

    def tools(self) -> list[ToolDefinition]:
        return list(self._tools.values())

    def program(self, name: str) -> ProgramDefinition:
        try:
            return self._programs[name]
        except KeyError:
            known = ", ".join(sorted(self._programs)) or "none"
            raise DefinitionError(
                f"No durable program named {name!r} in this registry (registered: {known}). "
                "Import the module that defines it before starting the worker."
            ) from None

    def clear(self) -> None:
        """Forget everything (for tests)."""
        self._programs.clear()
        self._tools.clear()


default_registry = Registry()
