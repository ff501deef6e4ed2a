"""Decoration rules, names (contracts with running workflows) and the registry. No server needed."""

from __future__ import annotations

import inspect
import sys
from typing import assert_type

import dspy
import pytest

import durable_dspy
from durable_dspy import DefinitionError, Registry, durable_program, durable_tool
from durable_dspy._program import program_definition
from durable_dspy._tool import tool_definition

REG = Registry()
MODULE = __name__


@durable_tool(registry=REG)
def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


@durable_tool(registry=REG, name="custom.tool-name")
async def shout(text: str) -> str:
    """Shout the text."""
    return text.upper()


@durable_program(registry=REG)
class Plain(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question: str):
        return self.qa(question=question)


@durable_program(registry=REG, name="custom-program")
class Named(dspy.Module):
    async def aforward(self, question: str, k: int = 3):
        return dspy.Prediction(answer=question * k)


class Child(Plain):
    """Durable through its parent."""


@durable_program(name="child-explicit")
class ChildExplicit(Plain):
    """A subclass may be decorated to choose its own name."""


@pytest.mark.parametrize(
    ("obj", "name"),
    [
        (Plain, f"{MODULE}.Plain"),
        (Named, "custom-program"),
        (Child, f"{MODULE}.Child"),
        (ChildExplicit, "child-explicit"),
    ],
)
def test_program_workflow_names(obj: type, name: str) -> None:
    definition = program_definition(obj)
    assert definition is not None
    assert definition.name == name
    assert definition.workflow.__temporal_workflow_definition.name == name  # type: ignore[attr-defined]
    # The sandbox imports the generated class by name from the program's module.
    assert getattr(sys.modules[MODULE], definition.workflow.__qualname__) is definition.workflow


@pytest.mark.parametrize(("tool", "name"), [(add, f"{MODULE}.add"), (shout, "custom.tool-name")])
def test_tool_activity_names(tool: object, name: str) -> None:
    definition = tool_definition(tool)
    assert definition is not None and definition.name == name
    assert definition.activity.__temporal_activity_definition.name == name  # type: ignore[attr-defined]


def test_registry_holds_what_was_decorated_with_it() -> None:
    # ChildExplicit was registered as MODULE.ChildExplicit by its parent's hook, then renamed by its decorator.
    assert {p.name for p in REG.programs()} == {
        f"{MODULE}.Plain",
        "custom-program",
        f"{MODULE}.Child",
        "child-explicit",
    }
    assert {t.name for t in REG.tools()} == {f"{MODULE}.add", "custom.tool-name"}
    assert f"{MODULE}.Child" not in {p.name for p in durable_dspy.default_registry.programs()}
    with pytest.raises(DefinitionError, match=r"No durable program named 'nope' .*registered: .*custom-program"):
        REG.program("nope")


def test_sync_and_async_entry_points() -> None:
    assert program_definition(Plain).method == "forward"  # type: ignore[union-attr]
    assert program_definition(Named).method == "aforward"  # type: ignore[union-attr]


def test_tools_keep_signature_name_doc_and_behave_plainly_outside_runs() -> None:
    assert add.__name__ == "add" and add.__doc__ == "Add two numbers."
    assert str(inspect.signature(add)) == "(a: 'int', b: 'int' = 2) -> 'int'"
    assert inspect.iscoroutinefunction(shout) and not inspect.iscoroutinefunction(add)
    assert add(1) == 3
    tool = dspy.Tool(add)
    assert (tool.name, tool.desc) == ("add", "Add two numbers.")
    assert tool.args == {"a": {"type": "integer"}, "b": {"type": "integer", "default": 2}}


async def test_tool_acall_outside_runs() -> None:
    assert await add.acall(2, b=5) == 7  # type: ignore[attr-defined]
    assert await shout.acall("hi") == "HI"  # type: ignore[attr-defined]


def test_duplicate_names_name_both_definitions() -> None:
    reg = Registry()

    @durable_tool(registry=reg, name="dup")
    def first(x: str) -> str:
        return x

    with pytest.raises(DefinitionError) as info:

        @durable_tool(registry=reg, name="dup")
        def second(x: str) -> str:
            return x

    message = str(info.value)
    assert "Two durable tools are named 'dup'" in message
    assert "first" in message and "second" in message and "test_definitions.py" in message


def _module_class(name: str, **namespace: object) -> type:
    """A dspy.Module subclass as if defined at this module's top level."""
    return type(name, (dspy.Module,), {"__module__": MODULE, "__qualname__": name, **namespace})


def test_duplicate_program_names_fail() -> None:
    reg = Registry()
    durable_program(registry=reg, name="same")(_module_class("X", forward=lambda self, q: q))
    with pytest.raises(DefinitionError, match=r"Two durable programs are named 'same': .*\.X.* and .*\.Y"):
        durable_program(registry=reg, name="same")(_module_class("Y", forward=lambda self, q: q))


def test_class_defined_in_a_function_is_rejected() -> None:
    with pytest.raises(DefinitionError, match=r"is defined inside a function.*Define it at module level"):

        @durable_program(registry=Registry())
        class Local(dspy.Module):
            def forward(self, q: str):
                return q


def test_lambda_tool_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="is a lambda"):
        durable_tool(registry=Registry())(lambda q: q)  # type: ignore[arg-type]


def test_second_decoration_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="already a durable tool"):
        durable_tool(add)
    with pytest.raises(DefinitionError, match="already a durable program"):
        durable_program(Plain)


def test_init_with_required_arguments_is_rejected() -> None:
    with pytest.raises(DefinitionError, match=r"requires \['k'\].*Give them defaults"):
        durable_program(registry=Registry())(
            _module_class("NeedsArgs", __init__=lambda self, k: None, forward=lambda self, q: q)
        )


@pytest.mark.parametrize(
    ("forward", "message"),
    [
        (lambda self, id: id, r"`id` \(reserved for start\(\) options"),
        (lambda self, **kw: kw, r"durable inputs are named fields"),
    ],
)
def test_inputs_that_cannot_cross_are_rejected(forward, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DefinitionError, match=message):
        durable_program(registry=Registry())(_module_class("Bad", forward=forward))


def test_non_module_and_missing_forward_are_rejected() -> None:
    with pytest.raises(DefinitionError, match=r"decorates dspy\.Module subclasses"):
        durable_program(registry=Registry())(type("NotModule", (), {"__module__": MODULE, "__qualname__": "NotModule"}))
    with pytest.raises(DefinitionError, match="defines neither forward"):
        durable_program(registry=Registry())(_module_class("Empty"))


def test_unknown_activity_option_lists_the_valid_ones() -> None:
    with pytest.raises(DefinitionError, match=r"unknown activity option\(s\) \['timeout'\].*start_to_close_timeout"):
        durable_tool(registry=Registry(), timeout=3)(add.__wrapped__)  # type: ignore[call-overload]


def test_public_typing() -> None:
    assert_type(add(1, 2), int)
    assert_type(Plain, type[Plain])
