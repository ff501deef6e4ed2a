"""Faults at the LM and in tools: what is retried (with backoff, honouring Retry-After), what fails at once with the
provider's message, what a hang or a cancellation does, and what a ReAct agent sees when a durable tool fails."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import dspy
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHistory
from temporalio.common import RetryPolicy

from durable_dspy import ProgramFailedError
from durable_dspy._devserver import DevServer
from durable_dspy._lm_activity import _application_error, call_kwargs, public_kwargs
from durable_dspy._options import DEFAULT_LM_OPTIONS, NON_RETRYABLE_LM_ERRORS, ActivityOptions
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import ROOT, make_lm, running_worker
from tests.history import LM_CALL
from tests.programs import faults


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    faults.reset()


def started_events(history: WorkflowHistory, activity_type: str) -> list[Any]:
    """The ActivityTaskStarted events of one activity type (Temporal records the last attempt's start only)."""
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    }
    return [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]


def failed_events(history: WorkflowHistory) -> list[Any]:
    return [
        e.activity_task_failed_event_attributes.failure
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
    ]


def chain(exc: BaseException | None) -> str:
    """Every message along an exception's cause chain."""
    messages = []
    while exc is not None:
        messages.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__
    return "\n".join(messages)


async def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def statuses(server: ScriptedLMServer, marker: str) -> list[int | None]:
    """Statuses of the requests whose prompt contains ``marker`` (a late answer to an earlier test is ignored)."""
    return [r.status for r in server.requests if marker in json.dumps(r.body.get("messages"))]


def open_connections(server: ScriptedLMServer) -> set[Any]:
    with server._lock:  # the scripted server tracks its client connections to close them on stop()
        return set(server._connections)


# -- LM errors classified by HTTP status

REFUSALS = [
    ("400", "LMInvalidRequestError", "Invalid value for 'messages'"),
    ("401", "LMAuthError", "Incorrect API key provided"),
    ("403", "LMAuthError", "You are not allowed to sample from this model"),
    ("404", "LMUnsupportedModelError", "does not exist or you do not have access to it"),
    pytest.param("context_window", "ContextWindowExceededError", "maximum context length"),
]


@pytest.mark.parametrize("program", [faults.OneCall, faults.FastRetry], ids=["default-policy", "user-policy"])
@pytest.mark.parametrize(("kind", "error_type", "message"), REFUSALS)
async def test_provider_refusals_fail_at_once_with_the_providers_message(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm, program, kind, error_type, message
) -> None:
    """Never retried, whether the retry policy is ours (which lists the types) or the user's (which does not)."""
    lm_server.inject(kind, times=5)
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await program.start(client, question=f"refuse {kind}", task_queue=task_queue)
        with pytest.raises(ProgramFailedError) as info:
            await handle.result()
    assert info.value.type == error_type
    assert message in str(info.value)
    assert len(statuses(lm_server, f"refuse {kind}")) == 1, "one request: not retried by Temporal nor in the activity"
    history = await handle.fetch_history()
    [started] = started_events(history, LM_CALL)
    assert started.attempt == 1
    [failure] = failed_events(history)
    assert failure.application_failure_info.type == error_type
    assert failure.application_failure_info.non_retryable
    assert message in failure.message


@pytest.mark.parametrize(
    ("kind", "error_type"), [("500", "LMServerError"), ("503", "LMServerError"), ("429", "LMRateLimitError")]
)
async def test_transient_errors_are_retried_with_backoff(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, kind, error_type
) -> None:
    # The worker's LM asks for 3 retries of its own: they must be off inside the activity (Temporal retries).
    lm = make_lm(lm_server, num_retries=3)
    lm_server.inject(kind, times=2)
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.FastRetry.start(client, question=f"transient {kind}", task_queue=task_queue)
        prediction = await handle.result()
    assert prediction.answer
    assert statuses(lm_server, f"transient {kind}") == [int(kind), int(kind), 200]
    history = await handle.fetch_history()
    [started] = started_events(history, LM_CALL)
    assert started.attempt == 3, "each activity attempt sent exactly one request"
    assert started.last_failure.application_failure_info.type == error_type


async def test_retry_after_becomes_the_next_retry_delay(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    """The policy's backoff is 100 ms; the provider's Retry-After (2 s) wins."""
    lm_server.inject("429", retry_after=2)
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.FastRetry.start(client, question="retry after", task_queue=task_queue)
        await wait_until(lambda: len(lm_server.requests) >= 1)
        pending = None
        for _ in range(200):
            description = await handle.describe()
            pending = next(iter(description.raw_description.pending_activities), None)
            if pending is not None and pending.attempt == 2:
                break
            await asyncio.sleep(0.02)
        assert pending is not None and pending.attempt == 2
        failure = pending.last_failure.application_failure_info
        assert failure.type == "LMRateLimitError"
        assert failure.next_retry_delay.ToTimedelta().total_seconds() == 2
        wait = pending.next_attempt_schedule_time.ToDatetime() - pending.last_attempt_complete_time.ToDatetime()
        assert wait.total_seconds() == pytest.approx(2, abs=0.01)
        await handle.result()
    assert statuses(lm_server, "retry after") == [429, 200]


async def test_lm_timeout_is_retried(client: Client, lm_server: ScriptedLMServer, task_queue: str) -> None:
    """The worker LM's own request timeout (0.5 s) cuts a slow answer; the next attempt succeeds."""
    lm_server.inject("slow", delay=2)
    async with running_worker(client, task_queue, make_lm(lm_server, timeout=0.5), registry=faults.registry):
        handle = await faults.FastRetry.start(client, question="slow answer", task_queue=task_queue)
        assert (await handle.result()).answer
        # The slow answer is still produced (to nobody): let it finish inside this test.
        await wait_until(lambda: len(statuses(lm_server, "slow answer")) == 2)
    [started] = started_events(await handle.fetch_history(), LM_CALL)
    assert started.attempt == 2
    assert started.last_failure.application_failure_info.type in ("LMTransportError", "LMTimeoutError")


async def test_a_hanging_lm_call_is_cut_by_the_activity_timeout_and_retried(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    lm_server.inject("hang")
    before = open_connections(lm_server)
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.ShortTimeout.start(client, question="hang once", task_queue=task_queue)
        await wait_until(lambda: any(r.fault == "hang" for r in lm_server.requests))
        hung = open_connections(lm_server) - before
        assert (await handle.result()).answer
        # The timed-out attempt is cancelled on the worker too: its request is dropped, not left hanging.
        await wait_until(lambda: not hung & open_connections(lm_server))
    [started] = started_events(await handle.fetch_history(), LM_CALL)
    assert started.attempt == 2
    assert started.last_failure.timeout_failure_info.timeout_type  # START_TO_CLOSE
    assert statuses(lm_server, "hang once") == [None, 200]


# -- cancellation reaches in-flight activities


async def test_cancel_reaches_a_hanging_lm_call(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    lm_server.inject("hang")
    before = open_connections(lm_server)
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.OneCall.start(client, question="cancel me", task_queue=task_queue)
        await wait_until(lambda: any(r.fault == "hang" for r in lm_server.requests))
        hung = open_connections(lm_server) - before
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        # The activity learns of the cancellation at its next heartbeat and drops the request.
        await wait_until(lambda: not hung & open_connections(lm_server))
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert lm_server.served == 0


@pytest.mark.parametrize(
    ("program", "tool"), [(faults.SlowSyncTool, "slow_sync_tool"), (faults.SlowAsyncTool, "slow_async_tool")]
)
async def test_cancel_reaches_a_running_tool(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm, program, tool
) -> None:
    """An async tool gets CancelledError; a sync tool sees activity.is_cancelled() in its thread."""
    key = f"cancel-{program.__name__}"
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await program.start(client, key=key, task_queue=task_queue)
        await wait_until(faults.event(faults.STARTED, key).is_set)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await wait_until(faults.event(faults.CANCELLED, key).is_set)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert faults.ATTEMPTS[f"{tool}:{key}"] == 1


async def test_cancelling_a_react_run_mid_tool_cancels_the_run(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    """The cancellation must not become the tool's observation (ReAct catches tool exceptions) and carry on."""
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.SlowToolAgent.start(client, question="cancel the agent", task_queue=task_queue)
        await wait_until(faults.event(faults.STARTED, "q0").is_set)
        served = lm_server.served
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert lm_server.served == served, "no LM call after the cancellation"


# -- tool errors


async def test_a_failing_tool_is_retried_per_its_options(client: Client, task_queue: str, lm) -> None:
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        prediction = await faults.FlakyTool.run(client, city="Lyon", task_queue=task_queue)
    assert prediction.answer == "Lyon has 2 million inhabitants."
    assert faults.ATTEMPTS == {"flaky_lookup:Lyon": 3}


async def test_a_tool_that_keeps_failing_fails_the_run_with_its_own_message(
    client: Client, task_queue: str, lm
) -> None:
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.BrokenTool.start(client, city="Lyon", task_queue=task_queue)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert "RuntimeError: weather station for Lyon is closed" in chain(info.value)
    assert faults.ATTEMPTS == {"broken_lookup:Lyon": 3}, "maximum_attempts=3 from the tool's retry policy"


@pytest.mark.parametrize(
    ("program", "tool", "observation", "attempts"),
    [
        (faults.BrokenToolAgent, "broken_lookup", "RuntimeError: weather station for q0 is closed", 3),
        (faults.AsyncBrokenToolAgent, "broken_lookup", "RuntimeError: weather station for q0 is closed", 3),
        (faults.RefusingToolAgent, "refusing_lookup", "NonRetryableToolError: no such city: q0", 1),
    ],
    ids=["sync-react", "async-react", "non-retryable"],
)
async def test_react_sees_a_failed_durable_tool_as_an_observation(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm, program, tool, observation, attempts
) -> None:
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        prediction = await program.run(client, question="weather in Lyon?", task_queue=task_queue)
    first = prediction.trajectory["observation_0"]
    assert first.startswith("Execution error in ") and observation in first
    assert "Activity task failed" not in first and "ActivityError" not in first, "Temporal's wrapping is gone"
    assert prediction.answer, "the agent went on to answer"
    assert faults.ATTEMPTS[f"{tool}:q0"] == attempts, "retried per the tool's policy, then observed"


async def test_react_shortens_its_trajectory_on_a_context_window_error(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm
) -> None:
    """DSPy's own recovery: ReAct catches ContextWindowExceededError and drops the oldest tool call."""
    lm_server.inject("context_window", match="observation_1")
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.LongAgent.start(client, question="long trajectory", task_queue=task_queue)
        prediction = await handle.result()
    assert prediction.answer
    refused = [i for i, r in enumerate(lm_server.requests) if r.fault == "context_window"]
    assert len(refused) == 1
    retry = json.dumps(lm_server.requests[refused[0] + 1].body["messages"])
    assert "observation_1" in retry and "observation_0" not in retry, "the oldest tool call was dropped"
    [failure] = failed_events(await handle.fetch_history())
    assert failure.application_failure_info.type == "ContextWindowExceededError"


# -- secrets


@pytest.mark.parametrize(
    ("kwargs", "visible"),
    [
        ({"temperature": 0.3, "max_tokens": 50, "n": 1, "rollout_id": 2}, {"temperature", "max_tokens", "n"}),
        ({"headers": {"Authorization": "Bearer x"}, "api_base": "http://h", "api_key": "k"}, set()),
        ({"extra_headers": {"X": "y"}, "api_version": "1", "organization": "o", "project": "p"}, set()),
        ({"vertex_credentials": "{}", "aws_secret_access_key": "s", "custom_setting": "c"}, set()),
    ],
)
def test_lm_kwargs_reach_runs_only_through_the_allow_list(kwargs: dict[str, Any], visible: set[str]) -> None:
    public = public_kwargs(kwargs)
    assert visible <= set(public) <= {"temperature", "max_tokens", "n", "rollout_id"}
    assert not {"headers", "api_base", "api_key", "extra_headers", "api_version", "custom_setting"} & set(public)


def test_call_kwargs_from_history_cannot_redirect_the_worker_lm() -> None:
    sent = {"temperature": 0.1, "max_tokens": 9, "tools": [], "api_base": "http://evil", "base_url": "http://evil"}
    sent |= {"headers": {"Authorization": "x"}, "extra_headers": {}, "api_key": "k", "my_token": "t"}
    assert call_kwargs(sent) == {"temperature": 0.1, "max_tokens": 9, "tools": []}


async def test_headers_and_api_base_never_reach_history(
    client: Client, lm_server: ScriptedLMServer, task_queue: str
) -> None:
    secret_header = f"Bearer hdr-{uuid.uuid4().hex}"
    lm = make_lm(lm_server, headers={"Authorization": secret_header}, temperature=0.25, custom_setting="private-x")
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.OneCall.start(client, question="who holds the key?", task_queue=task_queue)
        assert (await handle.result()).answer
    raw = (await handle.fetch_history()).to_json()
    payloads = payload_texts(await handle.fetch_history())
    assert "0.25" in payloads, "the allowed request defaults do reach the run"
    for text in (raw, payloads):
        for secret in (secret_header, "Authorization", "api_base", lm_server.url, "private-x", "sk-test-SECRET"):
            assert secret not in text


async def test_lm_error_messages_do_not_leak_the_base_url(client: Client, task_queue: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends: connections are refused
    lm = dspy.LM("openai/test-model", api_base=f"http://127.0.0.1:{port}/v1", api_key="sk-x", cache=False)
    async with running_worker(client, task_queue, lm, registry=faults.registry):
        handle = await faults.FastRetry.start(client, question="unreachable", task_queue=task_queue)
        with pytest.raises(ProgramFailedError) as info:
            await handle.result()
    assert info.value.type == "LMTransportError", "retried (4 attempts), then failed"
    text = (await handle.fetch_history()).to_json() + chain(info.value)
    assert "<redacted>" in chain(info.value)
    assert f"127.0.0.1:{port}" not in text


def payload_texts(history: WorkflowHistory) -> str:
    from temporalio.api.common.v1 import Payload

    texts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Payload):
            texts.append(value.data.decode("utf-8", "replace"))
        elif hasattr(value, "ListFields"):
            for _field, child in value.ListFields():
                walk(child)
        elif isinstance(value, str | bytes | int | float):
            return
        elif hasattr(value, "values") and callable(value.values):  # map fields
            for child in value.values():
                walk(child)
        else:  # repeated fields (upb's containers are sequences without an __iter__ attribute)
            for index in range(len(value)):
                walk(value[index])

    for event in history.events:
        walk(event)
    return "\n".join(texts)


# -- misuse

CONFIGURED_WORKER = textwrap.dedent(
    """
    import asyncio, sys
    import dspy
    from temporalio.client import Client
    from temporalio.worker import Worker
    from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions
    import durable_dspy
    from tests.programs import faults_configure  # calls dspy.configure(...) at import, like a DSPy script

    address, lm_url, task_queue, passthrough = sys.argv[1:5]

    async def main():
        lm = dspy.LM("openai/test-model", api_base=lm_url + "/v1", api_key="sk-x", cache=False)
        plugin = durable_dspy.DurableDSPyPlugin(lm=lm, registry=faults_configure.registry)
        client = await Client.connect(address, plugins=[plugin])
        options = {}
        if passthrough == "1":
            restrictions = SandboxRestrictions.default.with_passthrough_modules(faults_configure.__name__)
            options["workflow_runner"] = SandboxedWorkflowRunner(restrictions=restrictions)
        async with Worker(client, task_queue=task_queue, **options):
            handle = await faults_configure.Configured.start(client, question="configured?", task_queue=task_queue)
            try:
                print("ANSWER", (await asyncio.wait_for(handle.result(), 20)).answer, flush=True)
            except asyncio.TimeoutError:
                async for event in handle.fetch_history_events():
                    if event.HasField("workflow_task_failed_event_attributes"):
                        print("TASK FAILED", event.workflow_task_failed_event_attributes.failure.message, flush=True)
                        break
                await handle.terminate()

    asyncio.run(main())
    """
)


def run_configured_worker(address: str, lm_url: str, passthrough: bool) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    args = [address, lm_url, f"tq-{uuid.uuid4().hex[:8]}", "1" if passthrough else "0"]
    done = subprocess.run(
        [sys.executable, "-c", CONFIGURED_WORKER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90
    )
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    "passthrough",
    [
        pytest.param(True, id="user-passes-the-module-through"),
        pytest.param(False, id="plugin-passes-program-modules-through"),
    ],
)
async def test_module_level_dspy_configure_in_a_program_module(
    temporal_server: DevServer, lm_server: ScriptedLMServer, passthrough: bool
) -> None:
    """Passed through the sandbox, the program's module is imported once, like a script, so its module-level
    ``dspy.configure(...)`` runs once in the worker's main thread. Re-executed by the sandbox for each run, it
    raises (DSPy allows configure() from one async task only) and every workflow task fails, forever."""
    output = await asyncio.to_thread(run_configured_worker, temporal_server.address, lm_server.url, passthrough)
    assert "ANSWER answer" in output, output[-3000:]


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (TimeoutError("read timed out"), True),
        (ConnectionResetError("reset by peer"), True),
        (ValueError("bad response_format"), False),
        (RuntimeError("a bug in a custom LM"), False),
    ],
)
def test_errors_outside_dspys_classification(error: Exception, retryable: bool) -> None:
    """Unwrapped timeouts and connection errors (from a custom LM) retry; anything unknown fails at once."""
    failure = _application_error(error)
    assert failure.non_retryable is not retryable
    assert failure.type == type(error).__name__


def test_retry_after_and_secrets_in_lm_errors() -> None:
    from dspy.utils.exceptions import LMRateLimitError, LMTransportError

    lm = dspy.LM("openai/test-model", api_base="http://10.1.2.3:8443/v1", api_key="sk-very-secret", cache=False)
    failure = _application_error(LMRateLimitError("slow down", status=429, retry_after=7), lm)
    assert failure.next_retry_delay is not None and failure.next_retry_delay.total_seconds() == 7
    assert failure.details == ({"status": 429, "retry_after": 7},)
    assert _application_error(LMRateLimitError("slow down", retry_after=86_400), lm).next_retry_delay is None
    leaked = LMTransportError("failed to connect to 10.1.2.3:8443 with key sk-very-secret (http://10.1.2.3:8443/v1)")
    message = _application_error(leaked, lm).message
    assert "10.1.2.3:8443" not in message and "sk-very-secret" not in message
    assert message.count("<redacted>") == 3


def test_non_retryable_type_names_are_real_class_names() -> None:
    """Temporal matches non_retryable_error_types by bare class name: a typo would silently retry."""
    from dspy.utils import exceptions

    ours = {"PayloadTooLargeError", "PayloadsTooLarge", "SerializationError"}
    for name in set(NON_RETRYABLE_LM_ERRORS) - ours:
        cls = getattr(exceptions, name, None)
        assert isinstance(cls, type) and issubclass(cls, exceptions.LMError), name
        assert not exceptions.is_retryable_lm_error(cls.__new__(cls)), name


def test_a_users_retry_policy_keeps_the_non_retryable_types() -> None:
    user = ActivityOptions(retry_policy=RetryPolicy(maximum_attempts=2, non_retryable_error_types=["MyError"]))
    merged = DEFAULT_LM_OPTIONS.merged(user).retry_policy
    assert merged is not None and merged.maximum_attempts == 2
    assert merged.non_retryable_error_types == ["MyError", *NON_RETRYABLE_LM_ERRORS]
