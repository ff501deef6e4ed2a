"""One Temporal plugin that wires everything a durable DSPy worker, client or replayer needs."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

from dspy.clients.base_lm import BaseLM
from temporalio.converter import DataConverter, DefaultPayloadConverter, ExternalStorage, StorageDriver
from temporalio.plugin import SimplePlugin
from temporalio.worker import ReplayerConfig, WorkerConfig, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ._codec import EncryptionCodec, configure_payloads, encryption_codec
from ._converter import DurablePayloadConverter
from ._executor import DEFAULT_LANES, RunAffinityExecutor
from ._flush_worker import FlushInterceptor, flush_activity
from ._interpreter import InterpreterActivities
from ._lm_activity import LMActivities
from ._registry import Registry, default_registry

# Modules the workflow sandbox must not re-import for every run.
PASSTHROUGH_MODULES = (
    "dspy",  # importing it takes seconds and touches files, locale and randomness the sandbox forbids
    "litellm",  # imported lazily by dspy; huge, and never called from workflow code
    "greenlet",  # a C extension: the bridge's greenlets must be the real ones
    "wrapt",  # C extension behind durable tools; a re-imported copy would not recognise wrappers
    "durable_dspy",  # the registry and the stand-in LM must be one object across sandboxed runs
    "pydantic",  # dspy's signatures and types are pydantic models; one class identity for both sides
    "pydantic_core",  # pydantic's compiled core
    "httpx",  # dspy's HTTP client stack, imported with it
    "openai",  # types referenced by dspy and litellm
    "anyio",  # dspy's async helpers
    "json_repair",  # used by dspy's JSON adapter when parsing
    "ujson",  # used by dspy's adapters when available
)


def _data_converter(existing: DataConverter | None) -> DataConverter:
    """Pydantic payloads (dspy types are pydantic models), keeping the user's codec and failure converter."""
    base = existing or DataConverter.default
    if base.payload_converter_class is not DefaultPayloadConverter:
        return base  # the user chose a payload converter; respect it
    return dataclasses.replace(base, payload_converter_class=DurablePayloadConverter)


def _workflow_runner(existing: WorkflowRunner | None, program_modules: Sequence[str] = ()) -> WorkflowRunner:
    # Program modules are passed through too: imported once, like a script, so a module-level
    # `dspy.configure(...)` runs once in the worker's main thread instead of in every run's sandbox (where DSPy
    # refuses it and the workflow task fails forever). The cost: the sandbox no longer checks those modules' code.
    modules = (*PASSTHROUGH_MODULES, *program_modules)
    if existing is None:
        return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules))
    if isinstance(existing, SandboxedWorkflowRunner):
        return dataclasses.replace(existing, restrictions=existing.restrictions.with_passthrough_modules(*modules))
    return existing


class DurableDSPyPlugin(SimplePlugin):
    """Adds durable DSPy programs and tools to a Temporal client, worker or replayer.

    Args:
        lm: the worker's default LM (``dspy.settings.lm`` of the worker process when omitted). It stays on the
            worker: runs only ever see its model name, request defaults and capabilities.
        registry: where the programs and tools come from (the default registry when omitted).
        workflows: register the programs' workflows (False for an activity-only worker).
        activities: register the LM and tool activities (False for a workflow-only worker).
        interpreter: makes the worker's code interpreter for ProgramOfThought / CodeAct cells (zero arguments,
            like DSPy's ``interpreter_factory``); DSPy's ``LocalInterpreter`` (a subprocess, not a sandbox) when
            omitted.
        workflow_lanes: threads that run workflow activations; each run stays on one of them.
        activity_threads: threads for sync activities other than durable tools (each sync tool call gets a
            thread of its own).
        compression: zlib-compress payloads of at least this many bytes (True: 32 KiB), to stay under Temporal's
            2 MB payload limit.
        encryption: AES-GCM-encrypt every payload, so prompts and answers are unreadable in Temporal's database.
            True reads the base64 key(s) from ``$DURABLE_DSPY_ENCRYPTION_KEY``; or pass a key or an
            ``EncryptionCodec``.
        external_storage: keep payloads of at least ``external_storage_threshold`` bytes (256 KiB) out of history:
            a directory shared by clients and workers, or a Temporal ``StorageDriver`` / ``ExternalStorage``.

    The client and every worker need the same ``compression``, ``encryption`` and ``external_storage``.

    Example:
        >>> plugin = DurableDSPyPlugin(lm=dspy.LM("openai/gpt-4o-mini"))
        >>> client = await Client.connect("localhost:7233", plugins=[plugin])
        >>> worker = Worker(client, task_queue="rag")  # gets workflows, activities and settings from the plugin
    """

    def __init__(
        self,
        *,
        lm: BaseLM | None = None,
        registry: Registry | None = None,
        workflows: bool = True,
        activities: bool = True,
        interpreter: Callable[[], Any] | None = None,
        workflow_lanes: int = DEFAULT_LANES,
        activity_threads: int = 32,
        compression: bool | int = False,
        encryption: bool | str | bytes | EncryptionCodec | None = None,
        external_storage: str | os.PathLike[str] | StorageDriver | ExternalStorage | None = None,
        external_storage_threshold: int = 256 * 1024,
    ) -> None:
        self.registry = registry if registry is not None else default_registry
        self.lm_activities = LMActivities(lm=lm, programs=lambda name: self.registry.program(name).cls)
        self.interpreter_activities = InterpreterActivities(factory=interpreter)
        self._workflow_lanes = workflow_lanes
        self._activity_threads = activity_threads
        self._payloads = functools.partial(
            configure_payloads,
            compression=compression,
            # Built once, now: a missing or bad key (or $DURABLE_DSPY_ENCRYPTION_KEY) fails here, not in the first run.
            encryption=encryption_codec(encryption),
            external_storage=external_storage,
            external_storage_threshold=external_storage_threshold,
        )
        super().__init__(
            "durable_dspy",
            data_converter=self._data_converter,
            activities=self._activities if activities else None,
            workflows=self._workflows if workflows else None,
            workflow_runner=self._workflow_runner,
            interceptors=[FlushInterceptor()] if activities else None,
        )

    def _data_converter(self, existing: DataConverter | None) -> DataConverter:
        return self._payloads(_data_converter(existing))

    def _workflow_runner(self, existing: WorkflowRunner | None) -> WorkflowRunner:
        return _workflow_runner(existing, sorted({p.cls.__module__ for p in self.registry.programs()}))

    def _activities(self, existing: Sequence[Callable[..., Any]] | None) -> Sequence[Callable[..., Any]]:
        ours: list[Callable[..., Any]] = [
            self.lm_activities.call,
            self.lm_activities.describe,
            self.interpreter_activities.execute,
            flush_activity,
            *(t.activity for t in self.registry.tools()),
        ]
        return [*(existing or []), *ours]

    def _workflows(self, existing: Sequence[type] | None) -> Sequence[type]:
        return [*(existing or []), *(p.workflow for p in self.registry.programs())]

    def configure_worker(self, config: WorkerConfig) -> WorkerConfig:
        config = super().configure_worker(config)
        if config.get("workflow_task_executor") is None:
            # A run paused in a greenlet (sync forward) must resume on the thread that created it.
            config["workflow_task_executor"] = RunAffinityExecutor(self._workflow_lanes)
        if config.get("activity_executor") is None:
            config["activity_executor"] = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._activity_threads, thread_name_prefix="durable-dspy-tool"
            )
        return config

    def configure_replayer(self, config: ReplayerConfig) -> ReplayerConfig:
        config = super().configure_replayer(config)
        # Replayer() always fills in a plain thread pool, where a paused greenlet can resume on another thread.
        if not isinstance(config.get("workflow_task_executor"), RunAffinityExecutor):
            config["workflow_task_executor"] = RunAffinityExecutor(self._workflow_lanes)
        return config
