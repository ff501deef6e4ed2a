"""Code interpreters for ``ProgramOfThought`` and ``CodeAct`` in durable runs: each cell is an activity.

DSPy's code-executing modules take any ``CodeInterpreter`` (``start`` / ``execute(code, variables)`` /
``shutdown``, chosen by ``interpreter_factory`` or ``dspy.settings.interpreter_factory``). Workflow code can run
neither DSPy's default ``PythonInterpreter`` (a Deno subprocess that downloads its runtime) nor any other
subprocess, so inside a durable run the interpreter is :class:`DurableInterpreter`, a stand-in whose ``execute``
schedules one ``durable_dspy.interpreter.execute`` activity per code cell; the cell's outcome is recorded in
history and replays never run code again.

On the worker the cell runs in a real interpreter, by default DSPy's ``LocalInterpreter``: a separate CPython
process. It keeps the generated code out of the worker's memory and output, but it is **not a security sandbox**:
the code has the worker user's files, network and environment. A worker can choose another interpreter (DSPy's
Deno-based ``PythonInterpreter`` is a WASM sandbox where Deno is available) with ``InterpreterActivities(factory=)``.

A session's interpreter process stays alive on the worker between its cells. When a cell lands on a worker that
does not hold the session (another worker, a restart, an expired session), the session's earlier cells are run
again, in order, in a fresh interpreter before the new one: state is rebuilt, and so are the side effects of
those cells.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dspy
from dspy.primitives.code_interpreter import CodeExecutionError, CodeInterpreter, CodeInterpreterError, FinalOutput
from dspy.primitives.local_interpreter import LocalInterpreter
from dspy.utils.callback import with_callbacks
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from . import _bridge, _progress
from ._errors import WorkflowUsageError
from ._options import ActivityOptions

logger = logging.getLogger("durable_dspy.interpreter")

INTERPRETER_ACTIVITY = "durable_dspy.interpreter.execute"

DEFAULT_INTERPRETER_OPTIONS = ActivityOptions(
    start_to_close_timeout=timedelta(minutes=5),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=3,
        # A cell that broke its interpreter (a timeout, a crash, leaked threads) would break it again.
        non_retryable_error_types=["CodeInterpreterError"],
    ),
)


@dataclass(frozen=True)
class Cell:
    """One ``execute(code, variables)`` call of a session."""

    code: str
    variables: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellRequest:
    """A cell to run, with the session's earlier cells to rebuild its state on a worker that lacks it."""

    session: str
    cell: Cell
    earlier: list[Cell] = field(default_factory=list)
    output_fields: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class CellResult:
    """A cell's outcome: ``kind`` is ``"result"``, ``"final"`` (``SUBMIT`` was called), ``"syntax"`` or ``"error"``."""

    kind: str
    value: Any = None
    error: str = ""


class DurableInterpreter:
    """The ``CodeInterpreter`` of durable runs: every ``execute`` is one ``durable_dspy.interpreter.execute`` activity.

    Inside a durable run it is ``dspy.settings.interpreter_factory``, so ``dspy.ProgramOfThought(...)`` and
    ``dspy.CodeAct(...)`` use it unchanged. Outside a workflow it runs cells in a ``LocalInterpreter`` of its own,
    so a program built with ``interpreter_factory=DurableInterpreter`` also runs as plain DSPy.

    Example:
        >>> pot = dspy.ProgramOfThought("question -> answer", interpreter_factory=DurableInterpreter)
    """

    execution_instructions = LocalInterpreter.execution_instructions

    def __init__(
        self,
        tools: dict[str, Callable[..., Any]] | None = None,
        output_fields: list[dict[str, Any]] | None = None,
        *,
        options: ActivityOptions | None = None,
    ) -> None:
        self._tools = dict(tools or {})
        self.output_fields = output_fields
        self._options = DEFAULT_INTERPRETER_OPTIONS.merged(options)
        self._session: str | None = None
        self._cells: list[Cell] = []
        self._started = False
        self._ended = False
        self._local: LocalInterpreter | None = None

    @property
    def tools(self) -> dict[str, Callable[..., Any]]:
        return self._tools

    # Callbacks (on_interpreter_*) fire in the workflow, as for DSPy's own interpreters.
    @with_callbacks  # type: ignore[untyped-decorator]
    def start(self) -> None:
        if self._ended:
            raise CodeInterpreterError("DurableInterpreter session has been shut down.")
        self._started = True

    @with_callbacks  # type: ignore[untyped-decorator]
    def execute(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        if self._ended:
            raise CodeInterpreterError("DurableInterpreter session has been shut down.")
        if not self._started:
            self.start()
        if not workflow.in_workflow():
            if self._local is None:
                self._local = LocalInterpreter(tools=self._tools, output_fields=self.output_fields)
            with dspy.context(callbacks=[]):  # this call's callbacks have fired already
                return self._local.execute(code, variables)
        if not _bridge.in_bridge():
            raise WorkflowUsageError(
                "A code interpreter was called from async workflow code. DSPy's code-executing modules "
                "(ProgramOfThought, CodeAct) are sync: call them from a sync `forward`."
            )
        if self._tools:
            # Code runs in an activity on the worker; it cannot call back into the workflow for a host tool.
            raise CodeInterpreterError(
                f"Code in a durable run cannot call host tools ({sorted(self._tools)}): each cell runs in an "
                "activity on the worker. Modules that give the interpreter host tools (RLM, Flex) are not "
                "durable; ProgramOfThought and CodeAct are."
            )
        if self._session is None:
            self._session = str(workflow.uuid4())
        cell = Cell(code=code, variables=dict(variables or {}))
        request = CellRequest(
            session=self._session, cell=cell, earlier=list(self._cells), output_fields=self.output_fields
        )
        result = _bridge.await_(self._schedule(request))
        self._cells.append(cell)
        return self._outcome(result)

    async def _schedule(self, request: CellRequest) -> CellResult:
        state = _progress.current()
        step = state.begin("tool", INTERPRETER_ACTIVITY) if state else None
        try:
            result: CellResult = await workflow.execute_activity(
                INTERPRETER_ACTIVITY,
                request,
                result_type=CellResult,
                summary="code cell",
                **self._options.as_kwargs(),
            )
        except ActivityError as err:
            if state and step:
                state.end(step, failed=True)
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type == "CodeInterpreterError":
                self._ended = True  # like DSPy's interpreters: a broken session stays broken
                raise CodeInterpreterError(cause.message) from err
            raise
        if state and step:
            state.end(step)
        return result

    @staticmethod
    def _outcome(result: CellResult) -> Any:
        if result.kind == "final":
            return FinalOutput(result.value)
        if result.kind == "syntax":
            raise SyntaxError(result.error)
        if result.kind == "error":
            raise CodeExecutionError(result.error)
        return result.value

    @with_callbacks  # type: ignore[untyped-decorator]
    def shutdown(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._local is not None:
            self._local.shutdown()
            self._local = None

    def __call__(self, code: str, variables: dict[str, Any] | None = None) -> Any:
        return self.execute(code, variables)


@dataclass
class _Session:
    interpreter: CodeInterpreter
    cells: int
    used: float


class InterpreterActivities:
    """The worker side: runs cells in real interpreters, one live interpreter process per recent session.

    Args:
        factory: makes the worker's interpreter (zero arguments, like DSPy's ``interpreter_factory``);
            DSPy's ``LocalInterpreter`` by default.
        max_sessions: live sessions kept between cells; the least recently used beyond this are shut down.
        idle_timeout: seconds after which an unused session is shut down.
    """

    def __init__(
        self,
        *,
        factory: Callable[[], CodeInterpreter] | None = None,
        max_sessions: int = 8,
        idle_timeout: float = 120.0,
    ) -> None:
        self._factory = factory or (lambda: LocalInterpreter(execution_timeout=120.0))
        self._max_sessions = max_sessions
        self._idle_timeout = idle_timeout
        self._sessions: collections.OrderedDict[str, _Session] = collections.OrderedDict()
        self._lock = threading.Lock()

    @activity.defn(name=INTERPRETER_ACTIVITY)
    def execute(self, request: CellRequest) -> CellResult:
        """Run one cell of a session (sync: the worker runs it on its activity thread pool)."""
        session = self._checkout(request)
        try:
            result = _run_cell(session.interpreter, request.cell)
        except CodeInterpreterError as exc:
            _shutdown(session.interpreter)
            raise ApplicationError(str(exc), type="CodeInterpreterError", non_retryable=True) from exc
        except BaseException:
            _shutdown(session.interpreter)
            raise
        session.cells += 1
        self._checkin(request.session, session)
        return result

    def _checkout(self, request: CellRequest) -> _Session:
        """Take the session's live interpreter if it has run exactly the earlier cells; else rebuild one."""
        with self._lock:
            session = self._sessions.pop(request.session, None)
            expired = self._expired()
        for old in expired:
            _shutdown(old.interpreter)
        if session is not None and session.cells == len(request.earlier):
            return session
        if session is not None:
            _shutdown(session.interpreter)
        interpreter = self._factory()
        if request.output_fields is not None and hasattr(interpreter, "output_fields"):
            interpreter.output_fields = request.output_fields
        if request.earlier:
            logger.debug("interpreter session %s: replaying %d cells", request.session, len(request.earlier))
        for cell in request.earlier:
            try:
                _run_cell(interpreter, cell)
            except CodeInterpreterError as exc:
                _shutdown(interpreter)
                raise ApplicationError(
                    f"Rebuilding the interpreter session failed: {exc}", type="CodeInterpreterError", non_retryable=True
                ) from exc
        return _Session(interpreter, cells=len(request.earlier), used=time.monotonic())

    def _checkin(self, key: str, session: _Session) -> None:
        session.used = time.monotonic()
        with self._lock:
            self._sessions[key] = session
            surplus = []
            while len(self._sessions) > self._max_sessions:
                surplus.append(self._sessions.popitem(last=False)[1])
        for old in surplus:
            _shutdown(old.interpreter)

    def _expired(self) -> list[_Session]:
        now = time.monotonic()
        stale = [key for key, s in self._sessions.items() if now - s.used > self._idle_timeout]
        return [self._sessions.pop(key) for key in stale]

    def close(self) -> None:
        """Shut down every live session."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            _shutdown(session.interpreter)


def _run_cell(interpreter: CodeInterpreter, cell: Cell) -> CellResult:
    """Run a cell; code errors are results (the module shows them to the LM), interpreter failures raise."""
    try:
        # The worker's global callbacks already saw this cell in the workflow (DurableInterpreter.execute).
        with dspy.context(callbacks=[]):
            value = interpreter.execute(cell.code, cell.variables)
    except SyntaxError as exc:
        return CellResult(kind="syntax", error=str(exc))
    except CodeExecutionError as exc:
        return CellResult(kind="error", error=str(exc))
    if isinstance(value, FinalOutput):
        return CellResult(kind="final", value=value.output)
    return CellResult(kind="result", value=value)


def _shutdown(interpreter: CodeInterpreter) -> None:
    try:
        interpreter.shutdown()
    except Exception:  # a dead interpreter process is what we wanted anyway
        logger.debug("interpreter shutdown failed", exc_info=True)
