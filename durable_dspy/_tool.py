"""``@durable_tool``: an ordinary function that becomes a Temporal activity inside durable runs."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, overload

import pydantic
import pydantic_core
import wrapt
from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

from . import _bridge, _progress
from ._errors import DefinitionError
from ._names import qualified_name, validate_name
from ._options import DEFAULT_TOOL_OPTIONS, ActivityOptions, options_from_kwargs
from ._registry import Origin, Registry, default_registry

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class ToolCall:
    """A tool call's arguments by parameter name, as bound to the function's signature."""

    arguments: dict[str, Any]


class NonRetryableToolError(Exception):
    """Raise from a durable tool to fail its activity at once instead of retrying.

    Example:
        >>> raise NonRetryableToolError("city not found: Atlantis")
    """


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    fn: Callable[..., Any]
    is_async: bool
    options: ActivityOptions
    origin: Origin
    activity: Callable[..., Any]

    def result_type(self) -> Any:
        hints = typing.get_type_hints(self.fn)
        return hints.get("return")


def _adapters(fn: Callable[..., Any]) -> dict[str, pydantic.TypeAdapter[Any]]:
    """Per-parameter validators that turn JSON back into the annotated types (a pydantic model, a list[int])."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return {}
    adapters: dict[str, pydantic.TypeAdapter[Any]] = {}
    for param in inspect.signature(fn).parameters.values():
        hint = hints.get(param.name)
        if hint is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        try:
            adapters[param.name] = pydantic.TypeAdapter(hint)
        except Exception:
            continue
    return adapters


def _call_from(
    sig: inspect.Signature, adapters: dict[str, pydantic.TypeAdapter[Any]], call: ToolCall
) -> tuple[list[Any], dict[str, Any]]:
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in sig.parameters.values():
        if param.name not in call.arguments:
            continue
        value = call.arguments[param.name]
        if param.name in adapters:
            value = adapters[param.name].validate_python(value)
        if param.kind == param.VAR_POSITIONAL:
            args.extend(value)
        elif param.kind == param.VAR_KEYWORD:
            kwargs.update(value)
        elif param.kind == param.KEYWORD_ONLY:
            kwargs[param.name] = value
        else:
            args.append(value)
    return args, kwargs


def _check_serializable(name: str, value: Any) -> Any:
    try:
        pydantic_core.to_json(value)
    except Exception as exc:
        raise ApplicationError(
            f"Durable tool {name!r} returned a {type(value).__name__}, which cannot be serialized into Temporal's "
            f"history ({exc}). Return JSON-compatible data (str, numbers, lists, dicts) or a pydantic model.",
            type="SerializationError",
            non_retryable=True,
        ) from None
    return value


def _reraise(name: str, exc: Exception) -> typing.NoReturn:
    if isinstance(exc, NonRetryableToolError):
        raise ApplicationError(str(exc), type="NonRetryableToolError", non_retryable=True) from exc
    raise exc


def _make_activity(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    sig = inspect.signature(fn)
    adapters = _adapters(fn)
    if inspect.iscoroutinefunction(fn):

        async def run_async(call: ToolCall) -> Any:
            args, kwargs = _call_from(sig, adapters, call)
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                _reraise(name, exc)
            return _check_serializable(name, result)

        return activity.defn(name=name)(run_async)

    def run_sync(call: ToolCall) -> Any:
        args, kwargs = _call_from(sig, adapters, call)
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            _reraise(name, exc)
        return _check_serializable(name, result)

    return activity.defn(name=name)(run_sync)


class DurableTool(wrapt.FunctionWrapper):  # type: ignore[misc]
    """The object ``@durable_tool`` returns: the function itself to every caller and introspector.

    (No class annotations here: they would shadow the wrapped function's ``__annotations__``.)
    """

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Await the tool from async code, sync or async tool alike, in a durable run or not.

        Example:
            >>> context = await search_web.acall("What is DSPy?")
        """
        definition = self._self_definition
        if workflow.in_workflow():
            return await _schedule(definition, args, kwargs)
        result = self.__wrapped__(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result


def _schedule(definition: ToolDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Awaitable[Any]:
    bound = inspect.signature(definition.fn).bind(*args, **kwargs)
    return _run_activity(definition, ToolCall(arguments=dict(bound.arguments)))


async def _run_activity(definition: ToolDefinition, call: ToolCall) -> Any:
    state = _progress.current()
    step = state.begin("tool", definition.name) if state else None
    try:
        result = await workflow.execute_activity(
            definition.name,
            call,
            result_type=definition.result_type(),
            summary=definition.name,
            **definition.options.as_kwargs(),
        )
    except BaseException:
        if state and step:
            state.end(step, failed=True)
        raise
    if state and step:
        state.end(step)
    return result


def _make_wrapper(definition: ToolDefinition) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not workflow.in_workflow():
            return wrapped(*args, **kwargs)
        if _bridge.in_bridge():
            # Sync code in a durable run (a sync forward): block on the activity, even for an async tool,
            # so a sync ReAct can use async tools.
            return _bridge.await_(_schedule(definition, args, kwargs))
        # Async code (aforward, dspy.Tool.acall): return an awaitable, as an async function would.
        return _schedule(definition, args, kwargs)

    return wrapper


@overload
def durable_tool(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def durable_tool(
    *,
    name: str | None = None,
    registry: Registry | None = None,
    start_to_close_timeout: Any = None,
    schedule_to_close_timeout: Any = None,
    schedule_to_start_timeout: Any = None,
    heartbeat_timeout: Any = None,
    retry_policy: Any = None,
    task_queue: str | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def durable_tool(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a durable tool: a Temporal activity inside durable runs, a plain call everywhere else.

    Options take Temporal's names (``start_to_close_timeout``, ``retry_policy``, ...). The activity is named
    ``"<module>.<qualname>"`` unless ``name=`` is given; that name is a contract with running workflows.

    Example:
        >>> @durable_tool(start_to_close_timeout=timedelta(seconds=30))
        ... def search_web(query: str) -> str:
        ...     return requests.get(URL, params={"q": query}).text
    """
    if fn is None:
        return functools.partial(_decorate_tool, **options)
    return _decorate_tool(fn, **options)


def _decorate_tool(fn: Any, *, name: str | None = None, registry: Registry | None = None, **options: Any) -> Any:
    if isinstance(fn, DurableTool):
        raise DefinitionError(
            f"{fn.__qualname__} is already a durable tool ({fn._self_definition.name!r}); decorate it only once."
        )
    if not inspect.isfunction(fn):
        raise DefinitionError(
            f"@durable_tool decorates plain functions (sync or async), not {type(fn).__name__}. "
            "For a method, wrap the call in a module-level function."
        )
    qualified = qualified_name(fn, kind="Durable tool", allow_local=name is not None)
    tool_name = validate_name(name, kind="Tool") if name is not None else qualified
    definition = ToolDefinition(
        name=tool_name,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        options=DEFAULT_TOOL_OPTIONS.merged(options_from_kwargs(options, what=f"@durable_tool {qualified}")),
        origin=Origin.of(fn, qualified),
        activity=_make_activity(tool_name, fn),
    )
    (registry if registry is not None else default_registry).add_tool(definition)
    wrapper = DurableTool(fn, _make_wrapper(definition))
    wrapper._self_definition = definition
    return wrapper


def tool_definition(obj: Any) -> ToolDefinition | None:
    """The definition behind a durable tool, or None for anything else."""
    return getattr(obj, "_self_definition", None) if isinstance(obj, DurableTool) else None
