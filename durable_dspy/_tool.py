"""``@durable_tool``: an ordinary function that becomes a Temporal activity inside durable runs."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import threading
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, overload

import pydantic
import pydantic_core
import wrapt
from temporalio import activity, workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from . import _bridge
from ._errors import DefinitionError, DurableDSPyError
from ._lm_activity import heartbeating
from ._names import qualified_name, validate_name
from ._options import DEFAULT_TOOL_OPTIONS, ActivityOptions, options_from_kwargs
from ._payloads import SDK_PAYLOADS_TOO_LARGE, check_result
from ._registry import Origin, Registry, default_registry
from ._schedule import call as _call_activity

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


class ToolFailedError(ActivityError, DurableDSPyError):
    """A durable tool failed for good (after its retries, or at once): what the calling code sees.

    Its message is the tool's own error, ``"<ExceptionType>: <message>"``, as a plain call would have shown
    it, so ``dspy.ReAct`` puts that text (not Temporal's wrapping) in the agent's observation. It is an
    ``ActivityError`` with the failed activity's ids; the original failure is ``.activity_error``.
    """

    def __init__(self, message: str, activity_error: ActivityError) -> None:
        super().__init__(
            message,
            scheduled_event_id=activity_error.scheduled_event_id,
            started_event_id=activity_error.started_event_id,
            identity=activity_error.identity,
            activity_type=activity_error.activity_type,
            activity_id=activity_error.activity_id,
            retry_state=activity_error.retry_state,
        )
        self.activity_error = activity_error


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    fn: Callable[..., Any]
    options: ActivityOptions
    origin: Origin
    activity: Callable[..., Any]

    # Cached: read on every call of the tool in a run.
    @functools.cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    @functools.cached_property
    def result_type(self) -> Any:
        return typing.get_type_hints(self.fn).get("return")


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


def _threadsafe_heartbeat(loop: asyncio.AbstractEventLoop) -> None:
    """Let a sync tool call ``activity.heartbeat()`` from its thread (the async activity's heartbeat is not)."""
    try:
        from temporalio.activity import _Context

        context = _Context.current()
        original = context.heartbeat
        if original is not None:

            def heartbeat(*details: Any) -> None:
                loop.call_soon_threadsafe(original, *details)

            _Context.set(dataclasses.replace(context, heartbeat=heartbeat))
    except (ImportError, AttributeError, TypeError, RuntimeError):  # SDK internals changed: heartbeats stay ours
        pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile: the result is dropped
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _in_thread(fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
    """Run a sync tool in a daemon thread of its own, in a copy of the activity's context.

    The activity stays async, so it can heartbeat and notice cancellation while the tool blocks. A cancelled
    attempt ends at once; the tool's thread runs on until the function returns (``activity.is_cancelled()``
    tells it to stop early), and its result is dropped. Daemon threads never hold up the worker's exit.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def target() -> None:
        result, error = None, None
        try:
            context.run(_threadsafe_heartbeat, loop)
            result = context.run(fn, *args, **kwargs)
        except BaseException as exc:
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: the worker stopped without us
            loop.call_soon_threadsafe(_settle, future, result, error)

    threading.Thread(target=target, name=f"durable-dspy-tool-{fn.__name__}", daemon=True).start()
    return future


def _make_activity(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """The tool's activity: always ``async def``, heartbeating while the tool runs (sync tools in a thread)."""
    sig = inspect.signature(fn)
    adapters = _adapters(fn)
    is_async = inspect.iscoroutinefunction(fn)

    async def run_tool(call: ToolCall) -> Any:
        try:
            args, kwargs = _call_from(sig, adapters, call)
        except (pydantic.ValidationError, TypeError, ValueError) as exc:
            raise ApplicationError(
                f"Durable tool {name!r} got arguments that do not match its signature {sig}: {exc}",
                type="ToolArgumentError",
                non_retryable=True,
            ) from None
        try:
            running = fn(*args, **kwargs) if is_async else _in_thread(fn, args, kwargs)
            result = await heartbeating(running)
        except NonRetryableToolError as exc:
            raise ApplicationError(str(exc), type="NonRetryableToolError", non_retryable=True) from exc
        _check_serializable(name, result)
        await check_result(
            result,
            what=f"The result of durable tool {name!r}",
            fix="Return less data (a summary, a page of results, or a reference such as a path or URL).",
        )
        return result

    run_tool.__doc__ = fn.__doc__
    return activity.defn(name=name)(run_tool)


class DurableTool(wrapt.FunctionWrapper):  # type: ignore[misc]
    """The object ``@durable_tool`` returns: the function itself to every caller and introspector.

    (No class annotations here: they would shadow the wrapped function's ``__annotations__``.)
    """

    def __copy__(self) -> DurableTool:
        return self  # a tool is a function: copies of a program share it

    def __deepcopy__(self, memo: dict[int, Any]) -> DurableTool:
        return self

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
    bound = definition.signature.bind(*args, **kwargs)
    return _run_activity(definition, ToolCall(arguments=dict(bound.arguments)))


async def _run_activity(definition: ToolDefinition, call: ToolCall) -> Any:
    try:
        result, _ = await _call_activity(
            "tool",
            definition.name,
            definition.name,
            call,
            result_type=definition.result_type,
            options=definition.options,
            what=f"The arguments of durable tool {definition.name!r}",
            fix="Pass a reference (a path, a URL, an id) instead of the data itself.",
        )
    except ActivityError as err:
        raise _tool_failed(definition, err) from None
    return result


def _tool_failed(definition: ToolDefinition, err: ActivityError) -> ToolFailedError:
    """The tool's own error as the caller should see it, without Temporal's wrapping."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type == SDK_PAYLOADS_TOO_LARGE:
        message = (
            f"PayloadTooLargeError: the result of durable tool {definition.name!r} is above Temporal's payload "
            "limit (2 MB). Return less data (a summary, a page of results, or a reference such as a path or URL)."
        )
    elif isinstance(cause, ApplicationError):
        message = f"{cause.type}: {cause.message}" if cause.type else cause.message
    elif isinstance(cause, TemporalTimeoutError):
        message = f"TimeoutError: durable tool {definition.name!r} timed out ({cause.message})"
    else:
        message = str(cause or err)
    return ToolFailedError(message, err)


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

    A raised exception is retried per ``retry_policy`` (5 attempts by default); raise ``NonRetryableToolError``
    to fail at once. The caller then gets ``ToolFailedError`` with the tool's own message (``dspy.ReAct`` shows
    it to the agent as the observation). While the tool runs its activity heartbeats, so a dead worker's call is
    retried after ``heartbeat_timeout`` (5 s); when the run is cancelled an async tool gets ``CancelledError``,
    and a sync tool, which runs in a thread of its own, can check ``temporalio.activity.is_cancelled()``.

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
        options=DEFAULT_TOOL_OPTIONS.merged(options_from_kwargs(options, what=f"@durable_tool {qualified}")),
        origin=Origin.of(fn, qualified),
        activity=_make_activity(tool_name, fn),
    )
    (registry if registry is not None else default_registry).add_tool(definition)
    wrapper = DurableTool(fn, _make_wrapper(definition))
    wrapper._self_definition = definition  # type: ignore[attr-defined]  # no class annotation: see DurableTool
    return wrapper


def tool_definition(obj: Any) -> ToolDefinition | None:
    """The definition behind a durable tool, or None for anything else."""
    return getattr(obj, "_self_definition", None) if isinstance(obj, DurableTool) else None
