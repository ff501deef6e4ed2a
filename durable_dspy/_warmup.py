"""Warm-up: do before polling what the first run on a fresh worker would otherwise pay for.

Left lazy, the first run imports the LM call path, looks up the LM's capabilities (DSPy's model metadata),
builds a pydantic ``TypeAdapter`` per payload type and parses its programs' signatures. Warming sends no LM
request and does not talk to Temporal; a step that fails is logged at DEBUG and left to the first run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import import_module
from typing import TYPE_CHECKING, Any

import dspy

from ._lm_activity import PREDICTOR_KEY_PREFIX
from ._protocol import DEFAULT_LM_KEY

if TYPE_CHECKING:
    from ._plugin import DurableDSPyPlugin
    from ._program import ProgramDefinition

logger = logging.getLogger("durable_dspy.warmup")

# Imported by DSPy on the first LM call rather than with dspy itself (tens of ms). Module names of DSPy's
# internals: one that no longer exists is skipped.
LM_CALL_MODULES = (
    "dspy.clients.execution",
    "dspy.clients.costs",
    "dspy._vendor.lm15.cloud.hosts",  # a native provider binds its credentials and base URL through it
)


def warm_up(plugin: DurableDSPyPlugin, *, workflows: bool | None = None, activities: bool | None = None) -> None:
    """Prepare this process for the plugin's first run: call it before the worker starts polling.

    ``serve()`` does this by default (``warm_up=False`` turns it off). It builds each registered program once,
    formats and parses each predictor's signature with DSPy's adapter on a made-up answer, builds the payload
    converter's type adapters, imports the LM call path and resolves the capabilities of the worker's LMs
    (model metadata; no LM request is sent). It never raises.

    Args:
        plugin: the plugin the worker runs with.
        workflows: warm the workflow side (default: whether the plugin registers workflows).
        activities: warm the LM activities (default: whether the plugin registers activities).

    Example:
        >>> plugin = DurableDSPyPlugin(lm=dspy.LM("openai/gpt-4o-mini"))
        >>> await asyncio.to_thread(durable_dspy.warm_up, plugin)
        >>> async with Worker(client, task_queue="rag", plugins=[plugin]): ...
    """
    workflows = plugin.workflows is not None if workflows is None else workflows
    activities = plugin.activities is not None if activities is None else activities
    started = time.perf_counter()
    programs = plugin.registry.programs()
    instances: dict[str, Any] = {}
    for definition in programs:
        with _step("construct", definition.name):
            # A workflow worker builds the template its runs copy (see ProgramDefinition.new_program).
            instances[definition.name] = definition.new_program()[0] if workflows else definition.cls()
    with _step("payload types"):
        _warm_payload_types(plugin)
    if workflows:
        for definition in programs:
            if definition.name in instances:
                with _step("adapters", definition.name):
                    _warm_adapters(instances[definition.name])
    if activities:
        for module in LM_CALL_MODULES:
            with _step("import", module):
                import_module(module)
        for definition in programs:
            for key in _lm_keys(definition, instances.get(definition.name)):
                with _step("lm info", definition.name, key):
                    plugin.lm_activities.info(definition.name, key)
    logger.debug("warm-up done in %.0f ms", (time.perf_counter() - started) * 1000)


@contextmanager
def _step(what: str, *names: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    except Exception:
        logger.debug("warm-up %s %s failed; the first run will do it", what, " ".join(names), exc_info=True)
    else:
        logger.debug("warm-up %s %s: %.1f ms", what, " ".join(names), (time.perf_counter() - started) * 1000)


def _lm_keys(definition: ProgramDefinition, program: Any) -> list[str]:
    """The LMs a run of the program asks the worker about (as the workflow's describe step does)."""
    keys = [DEFAULT_LM_KEY]
    if program is not None:
        keys += [PREDICTOR_KEY_PREFIX + name for name, p in program.named_predictors() if p.lm is not None]
    return keys


def _warm_payload_types(plugin: DurableDSPyPlugin) -> None:
    """Build the shared type adapters for every type a run sends or receives (about 2 ms each, once)."""
    from ._converter import warm_types
    from ._protocol import DescribeRequest, DescribeResult, LMCallRequest, LMCallResult, RunResult
    from ._tool import ToolCall

    types: list[Any] = [Any, DescribeRequest, DescribeResult, LMCallRequest, LMCallResult, RunResult, ToolCall]
    for tool in plugin.registry.tools():
        try:
            types.append(tool.result_type)
        except Exception:  # an annotation that does not resolve: the run reports it, not the warm-up
            continue
    warm_types(t for t in types if t is not None)


class _WarmUpLM(dspy.BaseLM):
    """Never called: adapters only read its capabilities."""

    def __init__(self) -> None:
        super().__init__(model="durable_dspy/warm-up", cache=False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the warm-up LM sends no requests")


def _warm_adapters(program: Any) -> None:
    """Format each predictor's prompt and parse a made-up answer, as a run's first LM call would."""
    adapter = dspy.settings.adapter or dspy.ChatAdapter()
    # No callbacks: a user's tracing must not see warm-up calls.
    with dspy.context(lm=_WarmUpLM(), callbacks=[]):
        for _, predictor in program.named_predictors():
            _try(_format_and_parse, adapter, predictor.signature, predictor.demos)


def _format_and_parse(adapter: Any, signature: Any, demos: list[Any]) -> None:
    inputs = {name: "warm-up" for name in signature.input_fields}
    adapter.format(signature, demos, inputs)
    outputs = {name: "warm-up" for name in signature.output_fields}
    adapter.parse(signature, adapter.format_assistant_message_content(signature, outputs))


def _try(fn: Callable[..., Any], *args: Any) -> None:
    # A typed field may refuse the made-up value; what ran up to there is warm all the same.
    try:
        fn(*args)
    except Exception as exc:
        logger.debug("warm-up of a predictor stopped early: %s", type(exc).__name__)
