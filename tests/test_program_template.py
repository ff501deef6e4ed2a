"""Each run gets a fresh program: a deep copy of a pristine instance made once per worker, or a new instance.

The copy spares every run the construction of the program (parsing each predictor's signature); nothing a run
does to its program may reach the next run, and compiled state still loads into each run's own copy.
"""

from __future__ import annotations

import copy
from typing import Any

import dspy
import pytest
from temporalio.client import Client

from durable_dspy import Registry, durable_program
from durable_dspy._program import ProgramDefinition, program_definition
from durable_dspy._versioning import fingerprint
from durable_dspy.testing._lm_server import ScriptedLMServer
from tests.conftest import running_worker
from tests.history import replay

TEMPLATES = Registry()
UNIT_ONLY = Registry()
CONSTRUCTED: dict[str, int] = {}
INSTRUCTIONS = "Answer like the COMPILED version."


def _constructed(cls: type) -> None:
    CONSTRUCTED[cls.__name__] = CONSTRUCTED.get(cls.__name__, 0) + 1


@durable_program(registry=TEMPLATES)
class Mutating(dspy.Module):
    """Its forward changes the program: its own list, a predictor's demos and config."""

    def __init__(self):
        super().__init__()
        _constructed(type(self))
        self.qa = dspy.Predict("question -> answer")
        self.seen: list[str] = []

    def forward(self, question: str):
        self.seen.append(question)
        demos_before = len(self.qa.demos)
        self.qa.demos.append(dspy.Example(question="demo", answer="demo answer"))
        self.qa.config["temperature"] = 0.5
        answer = self.qa(question=question).answer
        return dspy.Prediction(answer=answer, seen=list(self.seen), demos_before=demos_before)


def _compiled_state() -> dict[str, Any]:
    program = Mutating()
    program.qa.signature = program.qa.signature.with_instructions(INSTRUCTIONS)
    return program.dump_state()


@durable_program(registry=TEMPLATES, state=_compiled_state())
class Compiled(Mutating):
    """The same program with compiled state: each run loads it into its own copy."""


@durable_program(registry=TEMPLATES)
class Uncopyable(dspy.Module):
    """Holds a generator, which deepcopy refuses: constructed for each run, as before."""

    def __init__(self):
        super().__init__()
        _constructed(type(self))
        self.qa = dspy.Predict("question -> answer")
        self.numbers = (i for i in range(1000))
        self.seen: list[str] = []

    def forward(self, question: str):
        self.seen.append(question)
        return dspy.Prediction(answer=self.qa(question=question).answer, seen=list(self.seen), n=next(self.numbers))


@durable_program(registry=TEMPLATES)
class ClosureTool(dspy.Module):
    """A tool defined in __init__ over ``self``: a copy's tool would still write to the first instance."""

    def __init__(self):
        super().__init__()
        _constructed(type(self))
        self.qa = dspy.Predict("question -> answer")
        self.seen: list[str] = []

        def remember(note: str) -> str:
            self.seen.append(note)
            return "noted"

        self.remember = remember

    def forward(self, question: str):
        self.remember(question)
        return dspy.Prediction(answer=self.qa(question=question).answer, seen=list(self.seen))


@durable_program(registry=TEMPLATES)
class OwnCopy(dspy.Module):
    """Defines its own __deepcopy__: constructed for each run."""

    def __init__(self):
        super().__init__()
        _constructed(type(self))
        self.qa = dspy.Predict("question -> answer")

    def __deepcopy__(self, memo: dict[int, Any]) -> OwnCopy:
        return self  # a copy that is not a copy

    def forward(self, question: str):
        return self.qa(question=question)


class _Recorder(dspy.utils.BaseCallback):
    pass


@durable_program(registry=TEMPLATES)
class WithCallbacks(dspy.Module):
    """A module with its own callbacks (a deep copy would drop them): constructed for each run."""

    def __init__(self):
        super().__init__(callbacks=[_Recorder()])
        _constructed(type(self))
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question: str):
        return self.qa(question=question)


@durable_program(registry=UNIT_ONLY)
class WithOwnLM(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")
        self.qa.lm = dspy.LM("openai/judge-model", api_key="sk-judge", cache=False)

    def forward(self, question: str):
        return self.qa(question=question)


def _definition(cls: type) -> ProgramDefinition:
    definition = program_definition(cls)
    assert definition is not None
    return definition


def test_each_program_is_a_fresh_copy_of_an_untouched_template() -> None:
    definition = _definition(Mutating)
    first, first_print = definition.new_program()
    first.seen.append("changed")
    first.qa.demos.append(dspy.Example(question="q", answer="a"))
    second, second_print = definition.new_program()
    assert second is not first and second.qa is not first.qa
    assert second.seen == [] and second.qa.demos == [] and second.qa.config == {}
    assert first_print == second_print == fingerprint(second)
    assert definition._template is not None and not definition._construct_each_run
    assert definition._template.seen == [] and definition._template.qa.demos == []


def test_a_predictors_own_lm_is_shared_not_copied() -> None:
    # Each run replaces it with a stand-in before forward runs; copying it would only cost time.
    definition = _definition(WithOwnLM)
    first, _ = definition.new_program()
    second, _ = definition.new_program()
    third, _ = definition.new_program()
    assert definition._template is not None
    assert second is not third and second.qa is not third.qa
    assert second.qa.lm is third.qa.lm is definition._template.qa.lm
    first.qa.lm = second.qa.lm = None  # what each run does: its own predictor gets a stand-in
    assert isinstance(third.qa.lm, dspy.LM) and definition._template.qa.lm is third.qa.lm


@pytest.mark.parametrize("cls", [Uncopyable, ClosureTool, OwnCopy, WithCallbacks])
def test_programs_a_copy_could_change_are_constructed_for_each_run(cls: type) -> None:
    definition = _definition(cls)
    programs = [definition.new_program()[0]]  # constructs the would-be template too, and gives up on it
    before = CONSTRUCTED[cls.__name__]
    programs += [definition.new_program()[0] for _ in range(3)]
    assert CONSTRUCTED[cls.__name__] - before == 3
    assert len({id(program) for program in programs}) == 4
    assert definition._template is None and definition._construct_each_run
    if cls is WithCallbacks:
        assert all(isinstance(program.callbacks[0], _Recorder) for program in programs)


@durable_program(registry=UNIT_ONLY)
class CopiedOnce(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question: str):
        return self.qa(question=question)


def test_a_copy_that_fails_later_falls_back_to_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    definition = _definition(CopiedOnce)
    definition.new_program()
    assert definition._template is not None

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no copies today")

    monkeypatch.setattr(copy, "deepcopy", refuse)
    program, print_ = definition.new_program()
    assert isinstance(program, CopiedOnce) and print_ == fingerprint(program)
    assert definition._template is None and definition._construct_each_run


def _forget_template(cls: type) -> ProgramDefinition:
    """As on a new worker: the first run makes the template (in the workflow sandbox)."""
    definition = _definition(cls)
    definition._template, definition._construct_each_run = None, False
    return definition


@pytest.mark.parametrize("cls", [Mutating, Uncopyable, ClosureTool])
async def test_one_runs_changes_to_its_program_never_reach_the_next_run(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm: dspy.LM, cls: Any
) -> None:
    definition = _forget_template(cls)
    async with running_worker(client, task_queue, lm, registry=TEMPLATES):
        handles = []
        for i in range(3):
            handles.append(await cls.start(client, question=f"run {i}", task_queue=task_queue))
            await handles[-1].result()
        results = [await handle.result() for handle in handles]
    assert [result.seen for result in results] == [["run 0"], ["run 1"], ["run 2"]]
    assert (definition._template is not None) is (cls is Mutating)  # made in the first run, then copied
    if cls is Mutating:
        assert [result.demos_before for result in results] == [0, 0, 0]
    if cls is Uncopyable:
        assert [result.n for result in results] == [0, 0, 0]
    for handle in handles:
        await replay(await handle.fetch_history(), registry=TEMPLATES)


async def test_compiled_state_loads_into_every_runs_copy(
    client: Client, lm_server: ScriptedLMServer, task_queue: str, lm: dspy.LM
) -> None:
    _forget_template(Compiled)
    async with running_worker(client, task_queue, lm, registry=TEMPLATES):
        handles = []
        for i in range(3):
            handles.append(await Compiled.start(client, question=f"compiled {i}", task_queue=task_queue))
            await handles[-1].result()
    prompts = [str(request.body["messages"]) for request in lm_server.requests]
    assert len(prompts) == 3 and all(INSTRUCTIONS in prompt for prompt in prompts)
    template = _definition(Compiled)._template
    assert template is not None and INSTRUCTIONS not in template.qa.signature.instructions
    for handle in handles:
        await replay(await handle.fetch_history(), registry=TEMPLATES)
