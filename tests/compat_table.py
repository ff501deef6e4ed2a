"""The DSPy compatibility table: its rows name the matrix cases that prove them; the doc is generated from it.

Run ``python -m tests.compat_table`` to rewrite ``docs/dspy-compatibility.md``. ``tests/test_dspy_matrix.py`` runs
every case named here (durable output == plain DSPy output, one LM activity per LM call, replay) and fails when the
doc differs from ``render()`` or a row names a case the matrix does not run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DOC = "docs/dspy-compatibility.md"
DSPY_VERSION = "3.4"


@dataclass(frozen=True)
class Row:
    feature: str
    sync: str | None  # the matrix case (a program in tests/programs/matrix.py) that runs it in a sync forward
    aio: str | None  # ... in an async aforward
    notes: str


ROWS = [
    Row("`dspy.Predict`", "PredictSync", "PredictAsync", ""),
    Row("`dspy.ChainOfThought`", "ChainOfThoughtSync", "ChainOfThoughtAsync", ""),
    Row(
        "custom modules nesting modules and predictors",
        "NestedSync",
        "NestedAsync",
        "Activity summaries and the progress query name the calling predictor by its path.",
    ),
    Row(
        "`dspy.JSONAdapter`",
        "JSONAdapterSync",
        "JSONAdapterAsync",
        "`response_format` is sent when the worker's LM supports it: capabilities are resolved on the worker and "
        "recorded in the run.",
    ),
    Row(
        "`dspy.ChatAdapter` falling back to `JSONAdapter`",
        "ChatFallbackSync",
        "ChatFallbackAsync",
        "The fallback is a second LM activity, as it is a second LM call.",
    ),
    Row(
        "typed and pydantic fields",
        "TypedSync",
        "TypedAsync",
        "Inputs are decoded from `forward`'s annotations (a pydantic model, `list[str]`, ...). Outputs cross to the "
        "client as JSON: inside the run a pydantic output is the model, in the client's prediction it is a dict.",
    ),
    Row(
        "`n > 1` completions",
        "CompletionsSync",
        "CompletionsAsync",
        "One activity per LM call (DSPy's engine may send `n` requests for it); `prediction.completions` survives "
        "the trip to the client.",
    ),
    Row(
        "per-call settings (`config={temperature, rollout_id, max_tokens}`)",
        "PerCallConfigSync",
        "PerCallConfigAsync",
        "They travel with the LM activity's request.",
    ),
    Row("`dspy.History` inputs", "HistorySync", "HistoryAsync", "Decoded from `forward`'s `dspy.History` annotation."),
    Row(
        "`dspy.ReAct` with durable tools",
        "ReActDurableToolsSync",
        "ReActDurableToolsAsync",
        "Each tool call is an activity. A sync ReAct can call async durable tools directly.",
    ),
    Row(
        "`dspy.ReAct` with a plain sync tool",
        "ReActPlainToolSync",
        "ReActPlainToolAsync",
        "**Not durable:** an undecorated tool runs inline in workflow code and again on every replay. Keep it "
        "deterministic and free of I/O, or make it a `@durable_tool`.",
    ),
    Row(
        "`dspy.ReAct` with a plain async tool",
        "ReActPlainAsyncToolSync",
        "ReActPlainAsyncToolAsync",
        "**Not durable** (inline, like a plain sync tool). In a sync run DSPy's async-to-sync tool conversion is on "
        "(`allow_tool_async_sync_conversion`): the coroutine is awaited on the workflow loop instead of failing as "
        "the tool's observation. Plain DSPy needs the setting for the same result.",
    ),
    Row(
        "`dspy.ReActV2` (experimental)",
        "ReActV2Sync",
        "ReActV2Async",
        "Text-based tool calls, several per turn; each durable tool call is an activity.",
    ),
    Row(
        "`dspy.BestOfN`",
        "BestOfNSync",
        None,
        "No `aforward` in DSPy. `lm.copy(rollout_id=..., temperature=...)` copies the stand-in LM, so every attempt "
        "is still an LM activity, with its rollout id and temperature.",
    ),
    Row("`dspy.Refine`", "RefineSync", None, "No `aforward` in DSPy. Feedback calls are LM activities too."),
    Row("`dspy.MultiChainComparison`", "MultiChainComparisonSync", None, "No `aforward` in DSPy."),
    Row(
        "several LMs (a predictor's own `lm`)",
        "SeveralLMsSync",
        "SeveralLMsAsync",
        "Served on the worker by the worker's own instance of the program (key `predictor:<path>`): the run never "
        "sees that LM's credentials.",
    ),
    Row(
        "`dspy.Parallel`",
        "ParallelSync",
        None,
        "Items run concurrently on greenlets inside the run (at most `num_threads`), results in order, DSPy's "
        "`max_errors` / `return_failed_examples` rules. No async API in DSPy: use `asyncio.gather` in `aforward`.",
    ),
    Row("`Module.batch`", "BatchSync", None, "Runs on `dspy.Parallel`, see above."),
    Row(
        "`asyncio.gather` of `acall`s",
        None,
        "GatherAsync",
        "The async fan-out: the items' LM activities run concurrently.",
    ),
    Row(
        "`dspy.Evaluate` inside a run",
        "EvaluateSync",
        None,
        "Its `ParallelExecutor` fans out like `dspy.Parallel`.",
    ),
    Row(
        "`dspy.ProgramOfThought`",
        "ProgramOfThoughtSync",
        None,
        "No `aforward` in DSPy. Each code cell is a `durable_dspy.interpreter.execute` activity; see "
        "[Code interpreters](#code-interpreters).",
    ),
    Row(
        "`dspy.CodeAct`",
        "CodeActSync",
        None,
        "No working `aforward` in DSPy. Tools' source is pasted into the interpreter, so tools run inside the code "
        "activity: they must be plain, self-contained functions (a `@durable_tool`'s source fails there, as in "
        "plain DSPy).",
    ),
]

# Behaviour checked outside the matrix (test file, test name).
CHECKS = [
    (
        "Callbacks fire once per DSPy event, not again on replay; the worker LM's own callbacks fire in the LM "
        "activity, once per real call",
        "tests/test_dspy_matrix.py",
        "test_callbacks_fire_once_per_event_despite_replays",
    ),
    (
        "A predictor's own LM answers on the worker (second server, second model)",
        "tests/test_dspy_matrix.py",
        "test_own_lm_of_a_predictor_answers_on_the_worker",
    ),
    ("`prediction.completions` survives the trip", "tests/test_dspy_matrix.py", "test_completions_survive_the_trip"),
    (
        "Parallel: items' LM activities all scheduled before the first completes",
        "tests/test_parallel.py",
        "test_items_run_concurrently_and_come_back_in_order",
    ),
    (
        "Parallel: `num_threads` bounds the calls in flight",
        "tests/test_parallel.py",
        "test_num_threads_bounds_the_lm_calls_in_flight",
    ),
    ("Parallel: DSPy's error rules", "tests/test_parallel.py", "test_too_many_errors_cancel_the_rest_as_dspy_does"),
    (
        "ProgramOfThought: a failed cell's state is kept for the fixed cell",
        "tests/test_interpreter.py",
        "test_program_of_thought_fixes_its_code_in_one_session",
    ),
    (
        "Interpreter: a session lost by the worker is rebuilt from its earlier cells",
        "tests/test_interpreter.py",
        "test_a_lost_session_is_rebuilt_from_its_earlier_cells",
    ),
    ("RLM fails at once with a clear error", "tests/test_interpreter.py", "test_rlm_is_not_durable_and_says_so"),
]

# Not durable in DSPy 3.4, and why.
NOT_DURABLE = [
    (
        "`dspy.RLM`, `dspy.Flex`",
        "Their interpreter code calls host tools (`llm_query`, sub-agents, the `dspy` facade) that would have to run "
        "in the workflow, while a durable code cell runs in an activity on the worker. The run fails at the first "
        "code cell with a `CodeInterpreterError` that says so (tested for RLM).",
    ),
    (
        "`dspy.KNN` (programs compiled with `KNNFewShot`)",
        "It calls its embedder from the module's own code, which in a run is workflow code: the embeddings would "
        "not be activities. Not tested here.",
    ),
    (
        "`dspy.streamify`, stream listeners",
        "Streaming needs a channel out of the workflow while a call runs; an LM call is one activity that returns "
        "its whole answer. Follow a run with the progress query instead. Not tested here.",
    ),
    (
        "`dspy.asyncify`, `dspy.syncify`",
        "They run the program on a thread (`anyio.to_thread`) or nest event loops, which workflow code cannot. A "
        "durable program is already sync (`forward`) or async (`aforward`): call modules directly.",
    ),
    (
        "DSPy's LM cache inside runs",
        "Not consulted in workflow code (a cache hit would schedule no activity and break replay): the run's "
        "history plays that role. The worker's LM may cache inside the activity.",
    ),
    (
        "An explicit `interpreter_factory=` other than `DurableInterpreter`",
        "A module given its own interpreter (`LocalInterpreter`, `PythonInterpreter`) would start a process from "
        "workflow code. Leave it unset (a run supplies `DurableInterpreter`) or pass "
        "`durable_dspy.DurableInterpreter`.",
    ),
]

INTRO = f"""# DSPy compatibility

Which DSPy {DSPY_VERSION} features run durably, written the ordinary DSPy way inside a `@durable_program`. Every ✅
below is a case of `tests/test_dspy_matrix.py` (named in the cell), which checks on a real Temporal server against a
scripted LM that the durable run's output (fields, completions, usage) equals a plain DSPy run, that the run
scheduled exactly one LM activity per LM call of the plain run, that the LM servers answered as many requests, and
that the history replays. This page is generated from `tests/compat_table.py` (`python -m tests.compat_table`); a
test fails when it is stale.

"sync" is a program with `def forward`, run on the greenlet bridge; "async" is `async def aforward`.
"""

INTERPRETERS = """## Code interpreters

`ProgramOfThought` and `CodeAct` run generated code through DSPy's pluggable interpreter (`interpreter_factory`).
DSPy's default, `PythonInterpreter`, is a Deno subprocess that downloads its runtime: workflow code can start no
process at all. Inside a durable run `dspy.settings.interpreter_factory` is `DurableInterpreter`, a stand-in whose
`execute(code, variables)` schedules one `durable_dspy.interpreter.execute` activity per cell; the cell's result
(output, `SUBMIT` value, or the error shown to the LM) is recorded in history, and replays never run code again.

On the worker a cell runs in DSPy's `LocalInterpreter`: a separate CPython process. It keeps generated code out of
the worker's memory and output, but **it is not a security sandbox**: the code runs with the worker user's files,
network and environment. Run such workers with least privilege, or pass another interpreter to the worker
(`DurableDSPyPlugin(interpreter=...)`, zero arguments like DSPy's `interpreter_factory`; DSPy's Deno-based
`PythonInterpreter` is a WASM sandbox where Deno can be installed).

A session's interpreter process stays alive on the worker between cells (at most 8 sessions, 120 s idle). When a
cell reaches a worker that does not hold its session (another worker, a restart), the session's earlier cells run
again, in order, in a fresh interpreter before it: the state is rebuilt, and so are those cells' side effects.
"""


def _cell(case: str | None) -> str:
    return f"✅ `{case}`" if case else "—"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    lines = [INTRO, "| DSPy feature | sync | async | notes |", "|---|---|---|---|"]
    lines += [f"| {row.feature} | {_cell(row.sync)} | {_cell(row.aio)} | {_escape(row.notes)} |" for row in ROWS]
    lines += ["", "Also checked:", ""]
    lines += [f"- {what}: `{path}::{test}`" for what, path, test in CHECKS]
    lines += ["", "## Not durable in DSPy " + DSPY_VERSION, "", "| feature | why |", "|---|---|"]
    lines += [f"| {feature} | {_escape(why)} |" for feature, why in NOT_DURABLE]
    lines += ["", INTERPRETERS.rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    path = Path(__file__).resolve().parent.parent / DOC
    path.write_text(render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
