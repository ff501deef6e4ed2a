"""One durable program per DSPy feature, written the ordinary DSPy way, for the compatibility matrix.

Each feature has a plain base module (``__init__`` only) and a durable ``...Sync`` (``forward``) and, where DSPy
has a working async path, ``...Async`` (``aforward``) program. Inputs are chosen by the tests; the scripted LM
server's ``respond`` below answers the few prompts its default answers cannot (code, a broken ChatAdapter reply).
"""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import dspy
import pydantic

from durable_dspy import durable_program, durable_tool
from durable_dspy.testing._lm_server import ChatRequest, Reply, ScriptedLMServer

# A question containing this makes the scripted server answer ChatAdapter prompts with text it cannot parse,
# so DSPy falls back to JSONAdapter.
UNPARSEABLE = "[unparseable]"

# The judge predictor's own LM points here; the tests set it to a second scripted server. Only the worker's copy
# of the program (and the plain run) ever calls it; inside a run the predictor's LM is a stand-in.
JUDGE = {"api_base": "http://127.0.0.1:9/v1", "model": "openai/judge-model"}


# ProgramOfThought questions containing these get code that fails once (and is then fixed, using the state the
# failed cell left behind), or code that leaves a thread running, which breaks the interpreter session.
RETRY = "[retry]"
LEAK = "[leak]"


def respond(server: ScriptedLMServer, request: ChatRequest) -> Reply:
    """The default scripted answers, plus Python code for ProgramOfThought / CodeAct and a broken Chat reply."""
    if UNPARSEABLE in request.user_text and not request.is_json:
        return "I would rather not use your field markers."
    if {"next_thought", "tool_calls"} <= set(request.output_fields):
        return _react_v2_turn(request)
    reply = server.default_reply(request)
    if isinstance(reply, dict) and "generated_code" in request.output_fields:
        reply = {**reply, "generated_code": f"```python\n{_code(request)}\n```"}
        if "finished" in request.output_fields:  # CodeAct: stop after the first step
            reply["finished"] = True
    return reply


def _react_v2_turn(request: ChatRequest) -> Reply:
    """ReActV2: first both durable tools in one turn, then submit what they said."""
    seen = json.dumps(request.messages)
    if "has a river" not in seen:
        calls = [{"name": "lookup", "args": {"city": "Paris"}}, {"name": "population", "args": {"city": "Paris"}}]
        return {"next_thought": "Look Paris up.", "tool_calls": {"tool_calls": calls}}
    submit = {"name": "submit", "args": {"answer": "Paris has a river."}}
    return {"next_thought": "Done.", "tool_calls": {"tool_calls": [submit]}}


def _code(request: ChatRequest) -> str:
    if "finished" in request.output_fields:  # CodeAct: call the pasted tool and print the result
        return "print(add(20, 22))"
    if LEAK in request.user_text:
        return "import threading, time\nthreading.Thread(target=time.sleep, args=(3,)).start()\nSUBMIT({'answer': '?'})"
    if RETRY in request.user_text and "[[ ## previous_code ## ]]" not in request.user_text:
        return "value = 6 * 7\nboom = value / 0"
    if RETRY in request.user_text:
        return "SUBMIT({'answer': str(value)})"  # `value` is still defined by the cell that failed
    return "value = 6 * 7\nSUBMIT({'answer': str(value)})"


# -- tools


@durable_tool
def lookup(city: str) -> str:
    """Look up facts about a city."""
    return f"{city} has a river."


@durable_tool
async def population(city: str) -> int:
    """Look up a city's population."""
    return 1000 + len(city)


def word_count(text: str) -> int:
    """Count the words in a text (a plain tool: runs inline in the workflow)."""
    return len(text.split())


async def shout(text: str) -> str:
    """Shout a text (a plain async tool)."""
    await asyncio.sleep(0)
    return text.upper()


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def never_enough(args: dict, pred: dspy.Prediction) -> float:
    """A reward no attempt reaches, so BestOfN and Refine use every attempt."""
    return 0.0


# -- signatures and types


class Person(pydantic.BaseModel):
    name: str
    age: int


class Profile(dspy.Signature):
    """Profile the person a text describes."""

    text: str = dspy.InputField()
    subject: Person = dspy.InputField()
    person: Person = dspy.OutputField()
    tags: list[str] = dspy.OutputField()
    score: float = dspy.OutputField()
    count: int = dspy.OutputField()
    adult: bool = dspy.OutputField()
    verdict: Literal["yes", "no"] = dspy.OutputField()


class Chat(dspy.Signature):
    """Answer the question, continuing the conversation."""

    question: str = dspy.InputField()
    history: dspy.History = dspy.InputField()
    answer: str = dspy.OutputField()


# -- Predict


class _Predict(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")


@durable_program
class PredictSync(_Predict):
    def forward(self, question: str):
        return self.qa(question=question)


@durable_program
class PredictAsync(_Predict):
    async def aforward(self, question: str):
        return await self.qa.acall(question=question)


# -- ChainOfThought


class _CoT(dspy.Module):
    def __init__(self):
        super().__init__()
        self.cot = dspy.ChainOfThought("question -> answer")


@durable_program
class ChainOfThoughtSync(_CoT):
    def forward(self, question: str):
        return self.cot(question=question)


@durable_program
class ChainOfThoughtAsync(_CoT):
    async def aforward(self, question: str):
        return await self.cot.acall(question=question)


# -- custom modules nesting modules nesting predictors


class _Summarize(dspy.Module):
    def __init__(self):
        super().__init__()
        self.summarize = dspy.Predict("text -> summary")

    def forward(self, text):
        return self.summarize(text=text)

    async def aforward(self, text):
        return await self.summarize.acall(text=text)


class _Draft(dspy.Module):
    def __init__(self):
        super().__init__()
        self.inner = _Summarize()
        self.draft = dspy.ChainOfThought("summary, question -> draft")

    def forward(self, text, question):
        summary = self.inner(text=text).summary
        return self.draft(summary=summary, question=question)

    async def aforward(self, text, question):
        summary = (await self.inner.acall(text=text)).summary
        return await self.draft.acall(summary=summary, question=question)


class _Nested(dspy.Module):
    def __init__(self):
        super().__init__()
        self.drafter = _Draft()
        self.polish = dspy.Predict("draft -> answer")


@durable_program
class NestedSync(_Nested):
    def forward(self, question: str, text: str = "Temporal records every step."):
        draft = self.drafter(text=text, question=question).draft
        return self.polish(draft=draft)


@durable_program
class NestedAsync(_Nested):
    async def aforward(self, question: str, text: str = "Temporal records every step."):
        draft = (await self.drafter.acall(text=text, question=question)).draft
        return await self.polish.acall(draft=draft)


# -- adapters: JSONAdapter, and ChatAdapter falling back to JSONAdapter (a question containing UNPARSEABLE)


@durable_program
class JSONAdapterSync(_Predict):
    def forward(self, question: str):
        with dspy.context(adapter=dspy.JSONAdapter()):
            return self.qa(question=question)


@durable_program
class JSONAdapterAsync(_Predict):
    async def aforward(self, question: str):
        with dspy.context(adapter=dspy.JSONAdapter()):
            return await self.qa.acall(question=question)


@durable_program
class ChatFallbackSync(_Predict):
    def forward(self, question: str):
        with dspy.context(adapter=dspy.ChatAdapter()):
            return self.qa(question=question)


@durable_program
class ChatFallbackAsync(_Predict):
    async def aforward(self, question: str):
        with dspy.context(adapter=dspy.ChatAdapter()):
            return await self.qa.acall(question=question)


# -- typed and pydantic fields (a pydantic input too)


class _Typed(dspy.Module):
    def __init__(self):
        super().__init__()
        self.profile = dspy.Predict(Profile)


@durable_program
class TypedSync(_Typed):
    def forward(self, text: str, subject: Person):
        return self.profile(text=text, subject=subject)


@durable_program
class TypedAsync(_Typed):
    async def aforward(self, text: str, subject: Person):
        return await self.profile.acall(text=text, subject=subject)


# -- n > 1 completions


class _Completions(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer", n=3)


@durable_program
class CompletionsSync(_Completions):
    def forward(self, question: str):
        return self.qa(question=question)


@durable_program
class CompletionsAsync(_Completions):
    async def aforward(self, question: str):
        return await self.qa.acall(question=question)


# -- per-call LM settings


@durable_program
class PerCallConfigSync(_Predict):
    def forward(self, question: str):
        return self.qa(question=question, config={"temperature": 0.7, "rollout_id": 7, "max_tokens": 321})


@durable_program
class PerCallConfigAsync(_Predict):
    async def aforward(self, question: str):
        return await self.qa.acall(question=question, config={"temperature": 0.7, "rollout_id": 7, "max_tokens": 321})


# -- dspy.History inputs


class _History(dspy.Module):
    def __init__(self):
        super().__init__()
        self.chat = dspy.Predict(Chat)


@durable_program
class HistorySync(_History):
    def forward(self, question: str, history: dspy.History):
        return self.chat(question=question, history=history)


@durable_program
class HistoryAsync(_History):
    async def aforward(self, question: str, history: dspy.History):
        return await self.chat.acall(question=question, history=history)


# -- ReAct with durable tools (sync and async), with a plain sync tool, with a plain async tool


class _ReActDurable(dspy.Module):
    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[lookup, population], max_iters=4)


@durable_program
class ReActDurableToolsSync(_ReActDurable):
    def forward(self, question: str):
        return self.react(question=question)


@durable_program
class ReActDurableToolsAsync(_ReActDurable):
    async def aforward(self, question: str):
        return await self.react.acall(question=question)


class _ReActPlain(dspy.Module):
    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[word_count], max_iters=3)


@durable_program
class ReActPlainToolSync(_ReActPlain):
    def forward(self, question: str):
        return self.react(question=question)


@durable_program
class ReActPlainToolAsync(_ReActPlain):
    async def aforward(self, question: str):
        return await self.react.acall(question=question)


class _ReActPlainAsync(dspy.Module):
    def __init__(self):
        super().__init__()
        self.react = dspy.ReAct("question -> answer", tools=[shout], max_iters=3)


@durable_program
class ReActPlainAsyncToolSync(_ReActPlainAsync):
    """A sync ReAct calling a plain async tool (plain DSPy needs ``allow_tool_async_sync_conversion`` for this)."""

    def forward(self, question: str):
        return self.react(question=question)


@durable_program
class ReActPlainAsyncToolAsync(_ReActPlainAsync):
    async def aforward(self, question: str):
        return await self.react.acall(question=question)


# -- ReActV2 (experimental in DSPy 3.4): several tool calls per turn, a `submit` tool


class _ReActV2(dspy.Module):
    def __init__(self):
        super().__init__()
        self.agent = dspy.ReActV2("question -> answer", tools=[lookup, population], max_iters=3)


@durable_program
class ReActV2Sync(_ReActV2):
    def forward(self, question: str):
        return self.agent(question=question)


@durable_program
class ReActV2Async(_ReActV2):
    async def aforward(self, question: str):
        return await self.agent.acall(question=question)


# -- BestOfN, Refine, MultiChainComparison (no async path in DSPy 3.4)


@durable_program
class BestOfNSync(dspy.Module):
    def __init__(self):
        super().__init__()
        self.best = dspy.BestOfN(dspy.ChainOfThought("question -> answer"), N=3, reward_fn=never_enough, threshold=1.0)

    def forward(self, question: str):
        return self.best(question=question)


@durable_program
class RefineSync(dspy.Module):
    def __init__(self):
        super().__init__()
        self.refine = dspy.Refine(dspy.ChainOfThought("question -> answer"), N=2, reward_fn=never_enough, threshold=1.0)

    def forward(self, question: str):
        return self.refine(question=question)


@durable_program
class MultiChainComparisonSync(dspy.Module):
    def __init__(self):
        super().__init__()
        self.attempts = dspy.ChainOfThought("question -> answer", n=3)
        self.compare = dspy.MultiChainComparison("question -> answer", M=3)

    def forward(self, question: str):
        completions = self.attempts(question=question).completions
        return self.compare(completions, question=question)


# -- several LMs: a predictor with its own LM (served by the worker's own instance of the program)


def judge_lm() -> dspy.LM:
    return dspy.LM(JUDGE["model"], api_base=JUDGE["api_base"], api_key="sk-judge", cache=False)


class _TwoLMs(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> answer")
        self.judge = dspy.Predict("question, answer -> verdict: bool")
        self.judge.lm = judge_lm()


@durable_program
class SeveralLMsSync(_TwoLMs):
    def forward(self, question: str):
        answer = self.draft(question=question).answer
        verdict = self.judge(question=question, answer=answer).verdict
        return dspy.Prediction(answer=answer, verdict=verdict)


@durable_program
class SeveralLMsAsync(_TwoLMs):
    async def aforward(self, question: str):
        answer = (await self.draft.acall(question=question)).answer
        verdict = (await self.judge.acall(question=question, answer=answer)).verdict
        return dspy.Prediction(answer=answer, verdict=verdict)


# -- dspy.Parallel and Module.batch in forward; asyncio.gather in aforward


@durable_program
class ParallelSync(_Predict):
    def forward(self, questions: list[str], num_threads: int = 4):
        parallel = dspy.Parallel(num_threads=num_threads, disable_progress_bar=True)
        results = parallel([(self.qa, {"question": q}) for q in questions])
        return dspy.Prediction(answers=[r.answer for r in results])


@durable_program
class BatchSync(_Predict):
    def forward(self, questions: list[str], num_threads: int = 4):
        examples = [dspy.Example(question=q).with_inputs("question") for q in questions]
        results = self.qa.batch(examples, num_threads=num_threads, disable_progress_bar=True)
        return dspy.Prediction(answers=[r.answer for r in results])


@durable_program
class GatherAsync(_Predict):
    async def aforward(self, questions: list[str]):
        results = await asyncio.gather(*(self.qa.acall(question=q) for q in questions))
        return dspy.Prediction(answers=[r.answer for r in results])


# -- code interpreters (ProgramOfThought, CodeAct: no async path in DSPy 3.4)


@durable_program
class ProgramOfThoughtSync(dspy.Module):
    def __init__(self):
        super().__init__()
        self.pot = dspy.ProgramOfThought("question -> answer", max_iters=2)

    def forward(self, question: str):
        return self.pot(question=question)


@durable_program
class CodeActSync(dspy.Module):
    def __init__(self):
        super().__init__()
        self.act = dspy.CodeAct("question -> answer", tools=[add], max_iters=2)

    def forward(self, question: str):
        return self.act(question=question)


# -- dspy.Evaluate inside a run (its ParallelExecutor fans out like dspy.Parallel)


def answered(example: dspy.Example, prediction: dspy.Prediction, trace: object = None) -> float:
    return 1.0 if prediction.answer.startswith("answer") else 0.0


@durable_program
class EvaluateSync(_Predict):
    def forward(self, questions: list[str]):
        devset = [dspy.Example(question=q, answer="").with_inputs("question") for q in questions]
        evaluate = dspy.Evaluate(devset=devset, metric=answered, num_threads=4, display_progress=False)
        result = evaluate(self.qa)
        return dspy.Prediction(score=result.score, answers=[p.answer for _, p, _ in result.results])
