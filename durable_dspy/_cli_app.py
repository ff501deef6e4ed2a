"""Loading APP for the ``durable-dspy`` command: import a module or file, find the durable programs it registers.

Import failures become :class:`AppError` with a hint: what APP may be, and the modules nearby that have programs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ._program import ProgramDefinition

__all__ = ["AppError", "load_app", "resolve_program"]

_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "site-packages", "__pycache__", ".tox", "build", "dist"}


class AppError(click.ClickException):
    """APP or APP:PROGRAM does not name something durable."""


_DECORATED = re.compile(r"^@durable_program\b", re.M)


def _candidates(root: Path, limit: int = 10) -> list[str]:
    """Importable module paths under ``root`` with a module-level @durable_program, for error messages."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = [] if depth >= 3 else sorted(d for d in dirnames if d.isidentifier() and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix != ".py" or not path.stem.isidentifier():
                continue
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if _DECORATED.search(path.read_text(encoding="utf-8")):
                    parts = path.relative_to(root).with_suffix("").parts
                    found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            if len(found) >= limit:
                return found
    return found


def _names(programs: list[ProgramDefinition]) -> str:
    return ", ".join(sorted(p.name for p in programs)) or "none"


def _belongs(program: ProgramDefinition, module: ModuleType) -> bool:
    """Whether APP defines the program (in itself or a submodule) or exposes it, for an APP imported before."""
    home = program.cls.__module__
    exposed = any(value is program.cls for value in vars(module).values())
    return exposed or home == module.__name__ or home.startswith(module.__name__ + ".")


def load_app(app: str) -> tuple[ModuleType, list[ProgramDefinition]]:
    """Import APP (a module path or a ``.py`` file), with the current directory importable as for ``python -m``.

    Returns the module and the durable programs it registers (itself or through its imports).
    """
    from ._registry import default_registry

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name = app
    if app.endswith(".py") or os.sep in app:
        path = Path(app).resolve()
        if not path.is_file():
            raise AppError(f"APP {app!r}: no such file.")
        sys.path.insert(0, str(path.parent))
        module_name = path.stem  # the name a client importing the same file gets, so workflow names match
    before = {p.name for p in default_registry.programs()}
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppError(f"Importing {app!r} failed:\n{traceback.format_exc()}") from exc
        here = _candidates(Path(cwd))
        hint = f" Modules here with durable programs: {', '.join(here)}." if here else " None found here."
        raise AppError(
            f"Cannot import APP {app!r}: {exc}. APP is a module path importable from the current directory "
            f"({cwd}), e.g. `myproject.agents` for myproject/agents.py, or a file path like agents.py.{hint}"
        ) from None
    except Exception as exc:
        raise AppError(f"Importing {app!r} failed:\n{traceback.format_exc()}") from exc
    programs = [p for p in default_registry.programs() if p.name not in before or _belongs(p, module)]
    if not programs:
        raise AppError(
            f"APP {app!r} registers no durable programs. Decorate a dspy.Module class in it with @durable_program "
            "(or import the module that does)."
        )
    return module, programs


def resolve_program(target: str) -> ProgramDefinition:
    """``APP:Program`` to its definition: ``Program`` is a class in APP or a registered workflow name."""
    from ._program import program_definition

    app, _, name = target.rpartition(":") if ":" in target else (target, "", "")
    module, programs = load_app(app)
    if not name:
        if len(programs) == 1:
            return programs[0]
        raise AppError(f"{app!r} registers several durable programs ({_names(programs)}); name one as APP:PROGRAM.")
    definition = program_definition(getattr(module, name, None))
    if definition is not None:
        return definition
    for program in programs:
        if name in (program.name, program.cls.__qualname__):
            return program
    choices = ", ".join(f"{app}:{p.cls.__qualname__}" for p in programs)
    raise AppError(f"No durable program {name!r} in {app!r}. Registered: {_names(programs)}. Use one of: {choices}.")
