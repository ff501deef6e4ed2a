"""Worker-side LM activities: the real LMs live here, with their credentials, and nowhere else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dspy.clients.backend_selection import CLIENT_KEYS
from dspy.clients.base_lm import BaseLM
from dspy.clients.legacy_outputs import plain
from dspy.dsp.utils.settings import settings
from dspy.utils.exceptions import DSPyError, is_retryable_lm_error
from temporalio import activity
from temporalio.exceptions import ApplicationError

from . import _callbacks
from ._names import LM_CALL_ACTIVITY, LM_DESCRIBE_ACTIVITY
from ._payloads import check_result, worker_request_limit
from ._protocol import DEFAULT_LM_KEY, DescribeRequest, DescribeResult, LMCallRequest, LMCallResult, LMInfo

logger = logging.getLogger("durable_dspy.lm")

T = TypeVar("T")
HEARTBEAT_EVERY = 1.0  # seconds; Temporal throttles what it sends to 0.8 x heartbeat_timeout anyway
MAX_RETRY_AFTER = 600.0  # a provider's Retry-After beyond this is ignored (the retry policy's backoff applies)

PREDICTOR_KEY_PREFIX = "predictor:"

# Request parameters a run may see (and that DSPy modules read from ``lm.kwargs``: n, temperature, rollout_id,
# max_tokens, response_format). An allow-list, not a deny-list: anything else an LM was built with (api_base,
# headers, api_version, a provider-specific credential...) stays on the worker. The worker's LM still sends
# all of its own kwargs: the activity merges them back in.
REQUEST_PARAMETERS = frozenset(
    {
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "top_p",
        "top_k",
        "n",
        "num_generations",
        "stop",
        "seed",
        "response_format",
        "reasoning_effort",
        "verbosity",
        "rollout_id",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "tool_choice",
        "parallel_tool_calls",
        "modalities",
        "service_tier",
        "reasoning",
        "thinking",
    }
)
_SECRET_MARKERS = ("key", "token", "secret", "password", "credential", "auth", "header")
_PLAIN = (str, int, float, bool, list, dict, type(None))


def public_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The LM's request defaults a run may see: known request parameters with plain values, nothing else."""
    return {key: val for key, val in kwargs.items() if key in REQUEST_PARAMETERS and isinstance(val, _PLAIN)}


def _connection_setting(key: str) -> bool:
    """Connection settings and anything named like a credential (but never a known request parameter)."""
    if key in REQUEST_PARAMETERS:
        return False
    return key in CLIENT_KEYS or any(marker in key.lower() for marker in _SECRET_MARKERS)


def call_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A call's kwargs as read from history, minus anything that would redirect the worker's LM or its key.

    History is input like any other: a request must not point the worker's credentials at another host.
    """
    return {key: val for key, val in kwargs.items() if not _connection_setting(key)}


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


def _secrets(lm: BaseLM) -> list[str]:
    """Strings of the LM's connection settings that must not reach history through an error message."""
    found: list[str] = []
    for key, val in lm.kwargs.items():
        if not isinstance(val, str) or len(val) < 6:
            continue
        if _connection_setting(key):
            found.append(val)
            netloc = urlsplit(val).netloc if "://" in val else ""
            if netloc:
                found.append(netloc)
    return sorted(found, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


def _application_error(exc: Exception, lm: BaseLM | None = None) -> ApplicationError:
    """Classify an LM failure for Temporal: transient ones retry (honouring Retry-After), the rest fail now.

    Transient: rate limits, server errors, timeouts and transport failures (DSPy's own classification), and
    Python's timeout and connection errors from LMs that raise them unwrapped. Anything else (auth, bad request,
    context window, unknown model, an unexpected exception) fails the call at once with the provider's message.
    """
    retryable = is_retryable_lm_error(exc) or (
        not isinstance(exc, DSPyError) and isinstance(exc, TimeoutError | ConnectionError)
    )
    retry_after = getattr(exc, "retry_after", None)
    delay = None
    if retryable and isinstance(retry_after, int | float) and 0 < retry_after <= MAX_RETRY_AFTER:
        delay = timedelta(seconds=float(retry_after))
    details = {
        name: getattr(exc, name)
        for name in ("status", "provider_code", "retry_after")
        if isinstance(getattr(exc, name, None), str | int | float)
    }
    message = str(exc) or type(exc).__name__
    return ApplicationError(
        _scrub(message, _secrets(lm)) if lm is not None else message,
        *([details] if details else []),
        type=type(exc).__name__,
        non_retryable=not retryable,
        next_retry_delay=delay,
    )


async def heartbeating(awaitable: Awaitable[T], *, every: float | None = None) -> T:
    """Await ``awaitable`` in an activity, heartbeating meanwhile; cancelling the activity cancels it.

    Heartbeats tell Temporal the worker is alive (a dead worker's attempt is retried after heartbeat_timeout,
    not start_to_close_timeout) and carry cancellation back: a cancelled run's activity learns of it at the
    next heartbeat, and ``awaitable`` gets ``CancelledError``.
    """
    info = activity.info()
    if info.is_local:
        return await awaitable  # local activities do not heartbeat; the workflow task's timeout watches the worker
    if every is None:
        timeout = info.heartbeat_timeout
        every = min(HEARTBEAT_EVERY, timeout.total_seconds() / 3) if timeout else HEARTBEAT_EVERY
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            activity.heartbeat()
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise


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
        heartbeat_every: float | None = None,
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
            payload_limit=worker_request_limit(),
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
        kwargs = {**call_kwargs(request.kwargs), "cache": False}
        call_id = _callbacks.lm_start(lm, request.messages, kwargs)  # the worker LM's own callbacks
        try:
            call = prepare(lm, None, request.messages, kwargs, asynchronous=True)
            response = await heartbeating(aexecute(lm, call), every=self._heartbeat_every)
        except Exception as exc:
            _callbacks.lm_end(lm, call_id, None, exc)
            if isinstance(exc, ApplicationError):
                raise
            logger.debug("lm call %s %s failed: %s", request.program, request.caller, type(exc).__name__)
            # Not chained: the cause chain would carry the client library's stack traces and unscrubbed messages
            # into history (and past Temporal's failure size limit).
            raise _application_error(exc, lm) from None
        _callbacks.lm_end(lm, call_id, response.outputs, None)
        result = LMCallResult(
            outputs=plain(response.outputs),
            usage=plain(response.usage or {}),
            cost=response.cost,
            cost_details=plain(response.cost_details or {}),
            response_model=response.response_model,
            caller=request.caller,
        )
        await check_result(
            result,
            what=f"The answer of LM call {request.caller or lm.model!r} in program {request.program!r}",
            fix="Ask for less output (max_tokens, fewer completions n).",
        )
        return result
