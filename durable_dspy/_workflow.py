"""The generated workflow of a durable program, and the body every such workflow runs."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import dspy
import pydantic_core
from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

from . import _bridge, _callbacks, _parallel, _progress, _state, _versioning
from ._flush import FLUSH_SIGNAL
from ._interpreter import DurableInterpreter
from ._lm import DurableLM
from ._lm_activity import PREDICTOR_KEY_PREFIX
from ._names import LM_DESCRIBE_ACTIVITY, WORKFLOW_CLASS_SUFFIX
from ._progress import PROGRESS_QUERY, Progress, RunState
from ._protocol import DEFAULT_LM_KEY, DescribeRequest, DescribeResult, RunResult

if TYPE_CHECKING:
    from ._program import ProgramDefinition

DESCRIBE_TIMEOUT = timedelta(seconds=60)


class StateUnavailableError(_versioning.ProgramChangedError):
    """A resumed run's pinned compiled state is not available on this worker (fails the task; the run waits)."""


def _run_result(output: Any) -> RunResult:
    if isinstance(output, dspy.Prediction):
        fields = dict(output.items())
        for key, val in fields.items():
            _check_serializable(f"output field {key!r}", val)
        completions = output._completions
        kept = dict(completions.items()) if completions is not None and len(completions) > 1 else None
        if kept is not None:
            _check_serializable("completions", kept)
        return RunResult(kind="prediction", value=fields, lm_usage=output.get_lm_usage(), completions=kept)
    _check_serializable("return value", output)
    return RunResult(kind="value", value=output)


def _check_serializable(what: str, value: Any) -> None:
    try:
        pydantic_core.to_json(value)
    except Exception as exc:
        raise ApplicationError(
            f"The program's {what} is a {type(value).__name__}, which cannot be serialized as the workflow result "
            f"({exc}). Return JSON-compatible values or pydantic models.",
            type="SerializationError",
            non_retryable=True,
        ) from None


async def _prepare(
    definition: ProgramDefinition, program: dspy.Module, current: tuple[str, str], state: RunState
) -> dict[str, DurableLM]:
    """Once per run, recorded in history: pin the program's version (``current``, its fingerprint) and compiled
    state, and ask the worker about the LMs the run uses (model, request defaults, capabilities); build the
    stand-in LMs."""
    named = program.named_predictors()
    prefix = definition.cls.__name__
    callers = {id(predictor): f"{prefix}.{name}" for name, predictor in named}
    own = [(name, predictor) for name, predictor in named if predictor.lm is not None]
    keys = [DEFAULT_LM_KEY, *(PREDICTOR_KEY_PREFIX + name for name, _ in own)]
    request = DescribeRequest(
        program=definition.name,
        keys=keys,
        fingerprint=current[0],
        fingerprint_description=current[1],
        state_hash=definition.states[0].hash if definition.states else None,
    )
    lm_queue = definition.lm_options.task_queue
    described: DescribeResult
    if lm_queue is None:
        # A local activity: the worker running the workflow holds the LMs; no round trip through a task queue.
        described = await workflow.execute_local_activity(
            LM_DESCRIBE_ACTIVITY,
            request,
            result_type=DescribeResult,
            start_to_close_timeout=DESCRIBE_TIMEOUT,
            summary="describe LMs",
        )
    else:
        described = await workflow.execute_activity(
            LM_DESCRIBE_ACTIVITY,
            request,
            result_type=DescribeResult,
            start_to_close_timeout=DESCRIBE_TIMEOUT,
            task_queue=lm_queue,  # only the workers that hold the LMs can describe them
            summary="describe LMs",
        )
    _versioning.check_fingerprint(definition.name, described.fingerprint, described.fingerprint_description, current)
    if described.state_hash is not None:
        _load_pinned_state(definition, program, described)
    state.payload_limit = described.payload_limit  # recorded in history: the same on replay
    lms = {
        info.key: DurableLM(info, program=definition.name, options=definition.lm_options, callers=callers)
        for info in described.lms
    }
    for name, predictor in own:
        # The real LM object stays in memory only; calls go to the worker's copy of it, by key.
        predictor.lm = lms[PREDICTOR_KEY_PREFIX + name]
    return lms


def _load_pinned_state(definition: ProgramDefinition, program: dspy.Module, described: DescribeResult) -> None:
    state_hash = described.state_hash
    assert state_hash is not None
    data = described.state
    if data is None:
        known = definition.known_state(state_hash)
        data = known.data if known is not None else None
    if data is None:
        current = definition.states[0].hash if definition.states else "none"
        # Fails the workflow task, not the run: it waits for a worker that has the state it started with.
        raise StateUnavailableError(
            f"Run of {definition.name!r} is pinned to compiled state {state_hash}, which this worker does not have "
            f"(its current state is {current}). Start a worker whose @durable_program(state=[...]) includes the "
            "state this run started with."
        )
    program.load_state(_state.for_program(data))


async def run_program(definition: ProgramDefinition, inputs: dict[str, Any], state: RunState) -> RunResult:
    """Run one durable program: every LM call and durable tool call becomes an activity."""
    _progress.activate(state)
    try:
        result = await _run(definition, inputs, state)
    except BaseException:
        state.progress.status = "failed"
        raise
    state.progress.status = "completed"
    return result


async def _run(definition: ProgramDefinition, inputs: dict[str, Any], state: RunState) -> RunResult:
    program, fingerprint = definition.new_program()  # a fresh instance, by construction or by copy
    lms = await _prepare(definition, program, fingerprint, state)
    kwargs = definition.decode_inputs(inputs)
    try:
        ids = _callbacks.CallIds(workflow.info().run_id)
        _callbacks.wrap_program(program, ids)
        with dspy.context(
            lm=lms.get(DEFAULT_LM_KEY),
            track_usage=True,
            interpreter_factory=DurableInterpreter,  # ProgramOfThought / CodeAct: each code cell is an activity
            callbacks=_callbacks.replay_safe(dspy.settings.callbacks, ids),  # once per event, not per replay
            # Safe on the bridge: a plain async tool called from sync code is awaited on the workflow loop.
            allow_tool_async_sync_conversion=True,
        ):
            if definition.method == "aforward":
                output = await program.acall(**kwargs)
            else:
                output = await _bridge.run_sync(program, **kwargs)
    except (FailureError, workflow.NondeterminismError, _versioning.ProgramChangedError):
        raise
    except Exception as exc:
        if state.changed:
            raise state.changed from exc
        # The program's own error ends the run with its type and message; as a plain exception it would fail
        # the workflow task and be retried forever.
        raise ApplicationError(f"{type(exc).__name__}: {exc}", type=type(exc).__name__, non_retryable=True) from exc
    if state.changed:
        raise state.changed
    return _run_result(output)


_parallel.install()  # dspy.Parallel / Module.batch fan out on greenlets inside durable runs


def generate_workflow(definition: ProgramDefinition) -> type:
    """Build ``<Class>_DurableWorkflow``, a ``@workflow.defn`` class named after the program."""
    cls = definition.cls
    attr = cls.__qualname__.replace(".", "_") + WORKFLOW_CLASS_SUFFIX

    def __init__(self: Any) -> None:
        self._state = RunState(definition.name, local=definition.local_activities)

    async def run(self: Any, inputs: dict[str, Any]) -> RunResult:
        return await run_program(definition, inputs, self._state)

    def progress(self: Any) -> Progress:
        return self._state.progress  # type: ignore[no-any-return]

    def flushed(self: Any, token: str) -> None:
        self._state.flusher.received(token)

    # Temporal checks that handlers belong to the class they decorate, by module and qualname.
    for method in (__init__, run, progress, flushed):
        method.__module__ = cls.__module__
        method.__qualname__ = f"{attr}.{method.__name__}"
    namespace = {
        "__module__": cls.__module__,
        "__qualname__": attr,
        "__doc__": f"Durable workflow generated for {definition.origin.qualified}.",
        "__init__": __init__,
        "run": workflow.run(run),
        "progress": workflow.query(name=PROGRESS_QUERY)(progress),
        "flushed": workflow.signal(name=FLUSH_SIGNAL)(flushed),
    }
    generated = type(attr, (), namespace)
    return workflow.defn(name=definition.name)(generated)
