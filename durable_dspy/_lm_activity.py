"""Worker-side LM activities: the real LMs live here, with their credentials, and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from dspy.clients.backend_selection import CLIENT_KEYS
from dspy.clients.base_lm import BaseLM
from dspy.clients.legacy_outputs import plain
from dspy.dsp.utils.settings import settings
from dspy.utils.exceptions import is_retryable_lm_error
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ._names import LM_CALL_ACTIVITY, LM_DESCRIBE_ACTIVITY
from ._protocol import DEFAULT_LM_KEY, DescribeRequest, DescribeResult, LMCallRequest, LMCallResult, LMInfo

logger = logging.getLogger("durable_dspy.lm")

PREDICTOR_KEY_PREFIX = "predictor:"
_SECRET_MARKERS = ("key", "token", "secret", "password", "credential", "auth")


def public_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """An LM's request defaults minus connection settings and anything that looks like a credential."""
    return {
        key: val
        for key, val in kwargs.items()
        if key not in CLIENT_KEYS
        and not any(marker in key.lower() for marker in _SECRET_MARKERS)
        and (val is None or isinstance(val, str | int | float | bool | list | dict))
    }


def _describe(key: str, lm: BaseLM) -> LMInfo:
    return LMInfo(
        key=key,
        model=lm.model,
        model_type=lm.model_type,
        kwargs=public_kwargs(lm.kwargs),
        supports_function_calling=bool(lm.supports_function_calling),
        supports_reasoning=bool(lm.supports_reasoning),
        supports_response_schema=bool(lm.supports_response_schema),
        supported_params=sorted(lm.supported_params),
    )


def _application_error(exc: Exception) -> ApplicationError:
    """Classify an LM failure for Temporal: transient ones retry (honouring Retry-After), the rest fail now."""
    retry_after = getattr(exc, "retry_after", None)
    delay = None
    if isinstance(retry_after, int | float) and retry_after > 0:
        from datetime import timedelta

        delay = timedelta(seconds=float(retry_after))
    return ApplicationError(
        str(exc),
        type=type(exc).__name__,
        non_retryable=not is_retryable_lm_error(exc),
        next_retry_delay=delay,
    )


class LMActivities:
    """The ``durable_dspy.lm.*`` activities of one worker.

    ``lm`` is the worker's default LM (``dspy.settings.lm`` when omitted); a predictor that carries its own LM in
    the program's ``__init__`` is served by the worker's own instance of that program, so credentials never
    travel. ``programs`` maps a workflow name to a factory of the program.
    """

    def __init__(
        self,
        *,
        lm: BaseLM | None,
        programs: Callable[[str], Any],
        heartbeat_every: float = 1.0,
    ) -> None:
        self._lm = lm
        self._programs = programs
        self._instances: dict[str, Any] = {}
        self._no_retry: dict[tuple[str, str], BaseLM] = {}
        self._info: dict[tuple[str, str], LMInfo] = {}
        self._heartbeat_every = heartbeat_every

    def _instance(self, program: str) -> Any:
        if program not in self._instances:
            self._instances[program] = self._programs(program)()
        return self._instances[program]

    def resolve(self, program: str, key: str) -> BaseLM:
        """The real LM behind ``key`` for ``program``, with provider-side retries off (Temporal retries)."""
        cache_key = (program, key)
        lm = self._no_retry.get(cache_key)
        if lm is not None:
            return lm
        if key == DEFAULT_LM_KEY:
            base = self._lm or settings.lm
            if base is None:
                raise ApplicationError(
                    "No LM is configured on this worker. Pass lm=dspy.LM(...) to durable_dspy.serve() "
                    "(or to DurableDSPyPlugin).",
                    type="LMConfigurationError",
                    non_retryable=True,
                )
        elif key.startswith(PREDICTOR_KEY_PREFIX):
            path = key.removeprefix(PREDICTOR_KEY_PREFIX)
            predictors = dict(self._instance(program).named_predictors())
            base = getattr(predictors.get(path), "lm", None)
            if base is None:
                raise ApplicationError(
                    f"Program {program!r} has no predictor {path!r} with its own LM on this worker. "
                    "The worker runs a different version of the program than the one that started the run.",
                    type="LMConfigurationError",
                    non_retryable=True,
                )
        else:
            raise ApplicationError(f"Unknown LM key {key!r}.", type="LMConfigurationError", non_retryable=True)
        lm = base.copy(num_retries=0) if getattr(base, "num_retries", 0) else base
        self._no_retry[cache_key] = lm
        return lm

    def info(self, program: str, key: str) -> LMInfo:
        cache_key = (program, key)
        if cache_key not in self._info:
            self._info[cache_key] = _describe(key, self.resolve(program, key))
        return self._info[cache_key]

    @activity.defn(name=LM_DESCRIBE_ACTIVITY)
    async def describe(self, request: DescribeRequest) -> DescribeResult:
        """Report model, kwargs and capabilities of the LMs a run will use (computed once per worker)."""
        # Capability lookups may read model metadata from disk or the network: keep them off the event loop.
        infos = [await asyncio.to_thread(self.info, request.program, key) for key in request.keys]
        return DescribeResult(
            lms=infos,
            fingerprint=request.fingerprint,
            fingerprint_description=request.fingerprint_description,
            state_hash=request.state_hash,
            state=self._pinned_state(request.program, request.state_hash),
        )

    def _pinned_state(self, program: str, state_hash: str | None) -> dict[str, Any] | None:
        """The compiled state a new run starts with, recorded in its history when it fits the budget."""
        if state_hash is None:
            return None
        from ._program import program_definition

        definition = program_definition(self._programs(program))
        for state in definition.states if definition else ():
            if state.hash == state_hash and state.fits_history:
                return state.data
        return None

    @activity.defn(name=LM_CALL_ACTIVITY)
    async def call(self, request: LMCallRequest) -> LMCallResult:
        """Send one LM request with the worker's LM; heartbeat while waiting so a lost worker is noticed fast."""
        from dspy.clients.execution import aexecute, prepare

        lm = self.resolve(request.program, request.lm_key)
        logger.debug("lm call %s %s", request.program, request.caller)
        call = prepare(lm, None, request.messages, {**request.kwargs, "cache": False}, asynchronous=True)
        task = asyncio.ensure_future(aexecute(lm, call))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._heartbeat_every)
                if done:
                    break
                activity.heartbeat()
            result = task.result()
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise
        except ApplicationError:
            raise
        except Exception as exc:
            raise _application_error(exc) from exc
        return LMCallResult(
            outputs=plain(result.outputs),
            usage=plain(result.usage or {}),
            cost=result.cost,
            cost_details=plain(result.cost_details or {}),
            response_model=result.response_model,
            caller=request.caller,
        )
