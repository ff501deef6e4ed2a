"""The workflow-side stand-in LM: DSPy formats and parses in the workflow; the call itself is an activity."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pydantic
from dspy.clients.backend_selection import CLIENT_KEYS
from dspy.clients.base_lm import BaseLM
from dspy.dsp.utils.settings import settings
from dspy.utils.callback import with_callbacks
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from . import _bridge, _progress, _schedule, _versioning
from ._names import LM_CALL_ACTIVITY
from ._protocol import LMCallRequest, LMCallResult, LMInfo

if TYPE_CHECKING:
    from ._options import ActivityOptions

# Keys that never leave the workflow: DSPy's cache switch is meaningless there (Temporal owns replay and retries),
# and connection settings belong to the worker's LM.
_DROPPED_KWARGS = frozenset({"cache", *CLIENT_KEYS})


def _plain_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {key: val for key, val in kwargs.items() if key not in _DROPPED_KWARGS}
    fmt = out.get("response_format")
    if isinstance(fmt, type) and issubclass(fmt, pydantic.BaseModel):
        # A class cannot cross the boundary; send the JSON schema DSPy itself would send.
        from dspy.clients.legacy_requests import _strict_json_schema

        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": fmt.__name__,
                "schema": _strict_json_schema(fmt.model_json_schema()),
                "strict": True,
            },
        }
    return out


def _dspy_error(err: ActivityError) -> BaseException | None:
    """The DSPy LM error a failed call maps to (ReAct shortens its trajectory on a context overflow), or None."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.type:
        from dspy.utils import exceptions

        cls = getattr(exceptions, cause.type, None)
        if isinstance(cls, type) and issubclass(cls, exceptions.LMError):
            details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
            extra = {k: v for k, v in details.items() if k in ("status", "provider_code", "retry_after")}
            return cls(message=cause.message, **extra)  # keyword: ContextWindowExceededError takes no positional
    return None


class DurableLM(BaseLM):
    """Stands in for a worker-side LM inside a durable run; each call becomes one ``durable_dspy.lm.call`` activity.

    It reports the real LM's model, kwargs and capabilities (resolved on the worker and recorded in the run's
    history), so adapters format exactly as they would with the real LM. Not constructed by users.
    """

    def __init__(self, info: LMInfo, *, program: str, options: ActivityOptions, callers: dict[int, str]) -> None:
        super().__init__(model=info.model, model_type=info.model_type, cache=False, num_retries=0)
        self.kwargs = dict(info.kwargs)
        self._info = info
        self._program = program
        self._options = options
        self._callers = callers

    @property
    def supports_function_calling(self) -> bool:
        return self._info.supports_function_calling

    @property
    def supports_reasoning(self) -> bool:
        return self._info.supports_reasoning

    @property
    def supports_response_schema(self) -> bool:
        return self._info.supports_response_schema

    @property
    def supported_params(self) -> set[str]:
        return set(self._info.supported_params)

    def dump_state(self) -> dict[str, Any]:
        return {"model": self.model, "model_type": self.model_type, **self.kwargs}

    @with_callbacks
    def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        # Build the request and record the result here, in the caller's context (dspy settings such as the
        # usage tracker are context-local); only the activity itself is awaited on the workflow loop.
        result = _bridge.await_(self._execute(self._request(prompt, messages, kwargs)))
        return self._record(prompt, messages, kwargs, result)

    @with_callbacks
    async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        result = await self._execute(self._request(prompt, messages, kwargs))
        return self._record(prompt, messages, kwargs, result)

    def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
        raise NotImplementedError("DurableLM is called through __call__/acall only.")

    def _request(self, prompt: Any, messages: Any, kwargs: dict[str, Any]) -> LMCallRequest:
        return LMCallRequest(
            program=self._program,
            lm_key=self._info.key,
            messages=messages if messages is not None else [{"role": "user", "content": prompt}],
            kwargs=_plain_kwargs({**self.kwargs, **kwargs}),
            caller=self._caller(),
        )

    def _caller(self) -> str:
        """The calling predictor's path in the program, e.g. ``RAG.answer.predict`` (innermost module first)."""
        for module in reversed(settings.caller_modules or ()):
            name = self._callers.get(id(module))
            if name:
                return name
        return ""

    async def _execute(self, request: LMCallRequest) -> LMCallResult:
        state = _progress.current()
        if state and state.changed:
            raise state.changed
        index = state.progress.lm_calls + 1 if state else 0

        def check(result: LMCallResult) -> None:
            if result.caller != request.caller and workflow.unsafe.is_replaying():
                try:
                    _versioning.check_call(self._program, index, result.caller, request.caller)
                except _versioning.ProgramChangedError as err:
                    if state:
                        state.changed = err
                    raise

        try:
            result, step = await _schedule.call(
                "lm",
                request.caller or self.model,
                LM_CALL_ACTIVITY,
                request,
                result_type=LMCallResult,
                options=self._options,
                what=f"The prompt of LM call {request.caller or self.model!r}",
                fix="Send less context (fewer or shorter documents, demos or history turns).",
                check=check,
            )
        except ActivityError as err:
            mapped = _dspy_error(err)
            if mapped is None:
                raise  # not `raise err from err`: that makes the error its own cause and loses the real one
            raise mapped from err
        if state and step:
            state.add_usage(step, self.model, result.usage, result.cost)
        return result  # type: ignore[no-any-return]

    def _record(self, prompt: Any, messages: Any, kwargs: dict[str, Any], result: LMCallResult) -> list[Any]:
        """Redo DSPy's per-call bookkeeping (usage tracker, history) from what the activity returned."""
        if settings.usage_tracker and result.usage:
            settings.usage_tracker.add_usage(self.model, dict(result.usage))
        if settings.disable_history:
            return result.outputs
        entry = {
            "prompt": prompt,
            "messages": messages,
            "kwargs": {key: val for key, val in kwargs.items() if not key.startswith("api_")},
            "response": None,
            "outputs": result.outputs,
            "usage": result.usage,
            "cost": result.cost,
            "timestamp": workflow.now().isoformat(),
            "uuid": str(workflow.uuid4()),
            "model": self.model,
            "response_model": result.response_model,
            "model_type": self.model_type,
        }
        if result.cost_details:
            entry["cost_details"] = result.cost_details
        self.update_history(entry)
        return result.outputs
