"""``@durable_program``: a ``dspy.Module`` class that gets a generated Temporal workflow."""

from __future__ import annotations

import copy
import gc
import inspect
import logging
import sys
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import dspy
import pydantic

from . import _versioning
from ._errors import DefinitionError
from ._names import qualified_name, validate_name
from ._options import DEFAULT_LM_OPTIONS, ActivityOptions, options_from_kwargs
from ._registry import Origin, Registry, default_registry
from ._state import CompiledState, load_states

M = TypeVar("M", bound=type)

logger = logging.getLogger("durable_dspy.program")

DEFINITION_ATTR = "__durable_program__"

# Names start() takes for itself (Temporal's start options); a forward parameter may not use them.
START_OPTION_NAMES = frozenset(
    {
        "id",
        "task_queue",
        "execution_timeout",
        "run_timeout",
        "task_timeout",
        "id_reuse_policy",
        "id_conflict_policy",
        "retry_policy",
        "memo",
        "search_attributes",
        "start_delay",
        "priority",
        "static_summary",
        "static_details",
    }
)


@dataclass
class ProgramDefinition:
    """Everything generated for one durable program. ``name`` is its workflow type, a contract with histories."""

    name: str
    cls: type[dspy.Module]
    origin: Origin
    method: str  # "forward" (run on the greenlet bridge) or "aforward" (awaited natively)
    signature: inspect.Signature
    lm_options: ActivityOptions
    task_queue: str | None
    registry: Registry
    explicit: bool
    states: list[CompiledState] = field(default_factory=list)
    local_activities: bool = False
    workflow: type = field(init=False)
    _adapters: dict[str, pydantic.TypeAdapter[Any]] = field(init=False, repr=False)
    # A pristine instance each run deep-copies (see new_program); None until the first run, or for good when
    # copies could differ from a constructed instance.
    _template: dspy.Module | None = field(init=False, default=None, repr=False, compare=False)
    _template_fingerprint: tuple[str, str] = field(init=False, default=("", ""), repr=False, compare=False)
    _template_shared: tuple[Any, ...] = field(init=False, default=(), repr=False, compare=False)
    _construct_each_run: bool = field(init=False, default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            hints = typing.get_type_hints(getattr(self.cls, self.method))
        except Exception:
            hints = {}
        self._adapters = {}
        for param in self.signature.parameters.values():
            hint = hints.get(param.name)
            if hint is not None and hint is not typing.Any:
                try:
                    self._adapters[param.name] = pydantic.TypeAdapter(hint)
                except Exception:
                    continue

    def new_program(self) -> tuple[dspy.Module, tuple[str, str]]:
        """A fresh instance of the program for one run, and its fingerprint (``_versioning.fingerprint``).

        Constructing a DSPy program parses every predictor's signature (milliseconds for an agent); a deep copy
        of a pristine instance, made once per worker, is many times cheaper and gives the run the same program.
        A class whose copies could differ from a constructed instance (a copy or pickling hook, module
        callbacks, a function that captured objects, a copy that fails) or cost more than construction (a large
        corpus it only refers to) is constructed for every run instead.
        """
        template = self._template
        if template is not None:
            try:
                return _copy_program(template, self._template_shared), self._template_fingerprint
            except Exception:  # deep-copied fine once; never mind why not now: construct from here on
                logger.debug("copy of program %s failed; constructing it for each run", self.name, exc_info=True)
                self._template, self._construct_each_run = None, True
        elif not self._construct_each_run:
            first = self._make_template()
            if first is not None:
                return first, self._template_fingerprint
        program = self.cls()
        return program, _versioning.fingerprint(program)

    def _make_template(self) -> dspy.Module | None:
        """Construct the instance runs copy, if copies are faithful; returns a first copy, or None."""
        from temporalio import workflow

        # Imports in __init__ bind the worker's modules (as when warm-up builds it), not this run's sandbox's.
        with workflow.unsafe.imports_passed_through():
            started = time.perf_counter()  # only chooses between two equal results: no need to be replay-safe
            template = self.cls()
            constructed = time.perf_counter() - started
        modules = [module for _, module in template.named_sub_modules()]  # the template itself first
        shared = tuple(predictor.lm for _, predictor in template.named_predictors() if predictor.lm is not None)
        reason = next(filter(None, map(_uncopyable, modules)), None) or _captured(template, shared)
        if reason is None:
            try:
                started = time.perf_counter()
                first = _copy_program(template, shared)
                copied = time.perf_counter() - started
            except Exception as exc:
                reason = f"deepcopy failed: {type(exc).__name__}"
            else:
                fingerprint = _versioning.fingerprint(template)
                if _versioning.fingerprint(first) != fingerprint:
                    reason = "a copy has other predictors"
                elif copied > constructed:  # e.g. it holds a large corpus, where construction only refers to it
                    reason = f"a copy takes longer than construction ({copied * 1e3:.2f} ms)"
                else:
                    self._template_fingerprint, self._template_shared = fingerprint, shared
                    self._template = template  # last: a concurrent run reads the fields above once it sees it
                    return first
        logger.debug("program %s is constructed for each run: %s", self.name, reason)
        self._construct_each_run = True
        return None

    def known_state(self, state_hash: str) -> CompiledState | None:
        return next((state for state in self.states if state.hash == state_hash), None)

    def decode_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Turn workflow input JSON back into ``forward``'s annotated types (a ``dspy.History``, a pydantic model)."""
        return {
            key: (self._adapters[key].validate_python(val) if key in self._adapters else val)
            for key, val in inputs.items()
        }


# Hooks through which deepcopy may not produce an independent, equal object. dspy.Module's own pickling hooks
# only drop its call history and callbacks (an unused program has no history; callbacks are checked).
_COPY_HOOKS = ("__deepcopy__", "__copy__", "__reduce__", "__reduce_ex__", "__getstate__", "__setstate__")


def _uncopyable(module: dspy.Module) -> str | None:
    """Why deep copies of this (just constructed) module could differ from a new one, or None."""
    if getattr(module, "callbacks", None):
        return f"{type(module).__qualname__} has callbacks (a copy drops them)"
    for klass in type(module).__mro__:
        if klass is object or klass.__module__.split(".")[0] == "dspy":
            continue
        hooks = [hook for hook in _COPY_HOOKS if hook in vars(klass)]
        if hooks:
            return f"{klass.__qualname__} defines {', '.join(hooks)}"
    return None


# Objects a program's graph is checked through before it is used as a template; beyond that, it is not.
_CHECK_LIMIT = 20_000
_ATOMIC = (str, bytes, int, float, complex, bool, type(None), type, types.ModuleType, types.BuiltinFunctionType)


def _captured(template: dspy.Module, shared: tuple[Any, ...]) -> str | None:
    """Why a copy of the template could still reach the template itself, or None.

    deepcopy shares functions instead of copying them: a closure over ``self`` (a tool defined in ``__init__``)
    would keep calling into the template, not the run's copy. Bound methods are fine (copies rebind them).
    """
    seen = {id(obj) for obj in shared}
    stack: list[Any] = [template]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _ATOMIC):
            continue
        seen.add(id(obj))
        if len(seen) > _CHECK_LIMIT:
            return f"it holds more than {_CHECK_LIMIT} objects"
        if isinstance(obj, types.FunctionType):
            # Its globals are the module's, shared by constructed instances too; what it captured is its own.
            captured = [*_cells(obj), *(obj.__defaults__ or ()), *(obj.__kwdefaults__ or {}).values()]
            for val in captured:
                if isinstance(val, types.FunctionType):
                    stack.append(val)  # a decorator's wrapped function: check that one too
                elif not isinstance(val, _ATOMIC):
                    return f"{obj.__qualname__} captures a {type(val).__name__} (a copy would share it)"
            continue
        if hasattr(type(obj), "__deepcopy__") and not isinstance(obj, pydantic.BaseModel):
            continue  # copies itself as it sees fit (a durable tool: not at all, like a function)
        stack.extend(gc.get_referents(obj))
    return None


def _cells(function: types.FunctionType) -> list[Any]:
    values = []
    for cell in function.__closure__ or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # not filled yet
            continue
    return values


def _copy_program(template: dspy.Module, shared: tuple[Any, ...]) -> dspy.Module:
    # The predictors' own LMs are shared, not copied: each run replaces them with stand-ins before forward runs.
    return copy.deepcopy(template, {id(obj): obj for obj in shared})


def _user_method(cls: type) -> str:
    """``forward`` if the class (not dspy) defines it; else ``aforward``; else neither is usable."""
    for method in ("forward", "aforward"):
        for klass in cls.__mro__:
            if klass.__module__.startswith("dspy."):
                break
            if method in vars(klass):
                return method
    raise DefinitionError(
        f"Durable program {cls.__qualname__} defines neither forward() nor aforward(). "
        "Define the program's logic in `def forward(self, ...)` (or `async def aforward(self, ...)`)."
    )


def _input_signature(cls: type, method: str) -> inspect.Signature:
    sig = inspect.signature(getattr(cls, method))
    params = list(sig.parameters.values())[1:]  # drop self
    problems = []
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            problems.append(f"`{param}` (durable inputs are named fields; list each one)")
        elif param.name in START_OPTION_NAMES:
            problems.append(f"`{param.name}` (reserved for start() options; rename the input)")
    if problems:
        raise DefinitionError(
            f"{cls.__qualname__}.{method} has inputs a durable run cannot take: {'; '.join(problems)}."
        )
    return sig.replace(parameters=params)


def _check_constructible(cls: type) -> None:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # type: ignore[misc]
    required = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise DefinitionError(
            f"Durable program {cls.__qualname__}.__init__ requires {required}, but each run constructs the program "
            "with no arguments (on every worker, and again on replay). Give them defaults, or move them to forward() "
            "inputs."
        )


def _bind_workflow(definition: ProgramDefinition) -> None:
    from ._workflow import generate_workflow

    definition.workflow = generate_workflow(definition)
    # Temporal's sandbox imports the workflow class as `from <module> import <name>`, so it must be a module global.
    module = sys.modules.get(definition.cls.__module__)
    if module is not None:
        setattr(module, definition.workflow.__qualname__, definition.workflow)


def _define(
    cls: type,
    *,
    name: str | None,
    registry: Registry,
    lm_options: ActivityOptions,
    task_queue: str | None,
    explicit: bool,
    states: list[CompiledState] | None = None,
    local_activities: bool = False,
) -> ProgramDefinition:
    if not (isinstance(cls, type) and issubclass(cls, dspy.Module)):
        raise DefinitionError(f"@durable_program decorates dspy.Module subclasses, not {cls!r}.")
    qualified = qualified_name(cls, kind="Durable program")
    method = _user_method(cls)
    _check_constructible(cls)
    definition = ProgramDefinition(
        name=validate_name(name, kind="Program") if name is not None else qualified,
        cls=cls,
        origin=Origin.of(cls, qualified),
        method=method,
        signature=_input_signature(cls, method),
        lm_options=lm_options,
        task_queue=task_queue,
        registry=registry,
        explicit=explicit,
        states=states or [],
        local_activities=local_activities,
    )
    _bind_workflow(definition)
    previous = cls.__dict__.get(DEFINITION_ATTR)
    if previous is not None:
        registry.remove_program(previous.name)
    registry.add_program(definition)
    setattr(cls, DEFINITION_ATTR, definition)
    return definition


def _subclass_hook(base: type) -> classmethod[Any, ..., None]:
    """Makes every subclass of a durable program durable too, with its own workflow and the base's options."""
    original = base.__dict__.get("__init_subclass__")

    def __init_subclass__(sub: type, **kwargs: Any) -> None:
        if original is not None:
            original.__get__(None, sub)(**kwargs)
        else:
            super(base, sub).__init_subclass__(**kwargs)  # type: ignore[arg-type]
        parent = program_definition(base)
        assert parent is not None
        _define(
            sub,
            name=None,
            registry=parent.registry,
            lm_options=parent.lm_options,
            task_queue=parent.task_queue,
            explicit=False,
            local_activities=parent.local_activities,
        )

    return classmethod(__init_subclass__)


def program_definition(cls: Any) -> ProgramDefinition | None:
    """The definition generated for a durable program class (or instance), or None."""
    klass = cls if isinstance(cls, type) else type(cls)
    return klass.__dict__.get(DEFINITION_ATTR)


@overload
def durable_program(cls: M, /) -> M: ...


@overload
def durable_program(
    *,
    name: str | None = None,
    task_queue: str | None = None,
    lm_task_queue: str | None = None,
    registry: Registry | None = None,
    state: Any = None,
    local_activities: bool = False,
    start_to_close_timeout: Any = None,
    schedule_to_close_timeout: Any = None,
    schedule_to_start_timeout: Any = None,
    heartbeat_timeout: Any = None,
    retry_policy: Any = None,
) -> Callable[[M], M]: ...


def durable_program(cls: Any = None, /, **options: Any) -> Any:
    """Make a ``dspy.Module`` class durable: generate its Temporal workflow and register it for ``serve()``.

    The workflow is named ``"<module>.<qualname>"`` unless ``name=`` is given; the name is a contract with
    running workflows. Temporal-named options (``start_to_close_timeout``, ``retry_policy``, ...) apply to the
    program's LM calls. Subclasses are durable too, each with its own workflow. ``state=`` takes the JSON saved by
    ``program.save(path)`` after optimization (a path, or a list of paths, current first): each run is pinned to
    the state it started with. ``lm_task_queue=`` sends the LM calls to the workers polling that queue (a split
    deployment, see docs/deployment.md). ``local_activities=True`` is the low-latency mode: LM and tool
    calls run as Temporal local activities, each flushed to history before the run goes on (see
    docs/configuration.md for the trade-offs).

    Example:
        >>> @durable_program
        ... class RAG(dspy.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.answer = dspy.ChainOfThought("context, question -> answer")
        ...     def forward(self, question: str):
        ...         return self.answer(context=search_web(question), question=question)
        >>> prediction = await RAG.run(client, question="What is DSPy?")
    """
    if cls is None:
        return lambda klass: _decorate_program(klass, **options)
    return _decorate_program(cls, **options)


def _decorate_program(
    cls: Any,
    *,
    name: str | None = None,
    task_queue: str | None = None,
    lm_task_queue: str | None = None,
    registry: Registry | None = None,
    state: Any = None,
    local_activities: bool = False,
    **options: Any,
) -> Any:
    existing = program_definition(cls) if isinstance(cls, type) else None
    if existing is not None and existing.explicit:
        raise DefinitionError(f"{cls.__qualname__} is already a durable program ({existing.name!r}); decorate it once.")
    inherited = existing is None and isinstance(cls, type) and any(program_definition(b) for b in cls.__mro__[1:])
    lm_options = DEFAULT_LM_OPTIONS.merged(options_from_kwargs(options, what=f"@durable_program {cls!r}"))
    if lm_task_queue is not None and local_activities:
        raise DefinitionError(
            f"@durable_program {cls.__qualname__}: lm_task_queue={lm_task_queue!r} needs regular activities, but "
            "local_activities=True runs LM calls on the workflow's own worker. Choose one of them."
        )
    lm_options = lm_options.merged(ActivityOptions(task_queue=lm_task_queue))
    _define(
        cls,
        name=name,
        registry=registry if registry is not None else (existing.registry if existing else default_registry),
        lm_options=lm_options,
        task_queue=task_queue,
        explicit=True,
        states=load_states(state),
        local_activities=local_activities,
    )
    if existing is None and not inherited:
        cls.__init_subclass__ = _subclass_hook(cls)
    _attach_client_methods(cls)
    return cls


class ProgramClientMethods:
    """``Program.start`` / ``Program.run``: bound to whichever durable class they are read from.

    The client module (and ``temporalio.client``) is imported on first use, not when programs are decorated.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __get__(self, instance: Any, owner: type) -> Any:
        definition = program_definition(owner)
        if definition is None:
            raise AttributeError(self.kind)
        if self.kind == "start":

            async def start_run(client: Any, /, **kwargs: Any) -> Any:
                """Start a durable run; keyword arguments are forward()'s inputs plus Temporal start options."""
                from ._client import start

                return await start(definition, client, **kwargs)

            return start_run

        async def run(client: Any, /, **kwargs: Any) -> Any:
            """Start a durable run and wait for its ``dspy.Prediction``."""
            from ._client import start

            return await (await start(definition, client, **kwargs)).result()

        return run


def _attach_client_methods(cls: type) -> None:
    for attr in ("start", "run"):
        if attr in cls.__dict__ and not isinstance(cls.__dict__[attr], ProgramClientMethods):
            raise DefinitionError(
                f"{cls.__qualname__} defines `{attr}`, which @durable_program needs for its client API "
                f"({cls.__qualname__}.start(client, ...), .run(client, ...)). Rename that method."
            )
        setattr(cls, attr, ProgramClientMethods(attr))


__all__ = ["ProgramDefinition", "durable_program", "program_definition"]
