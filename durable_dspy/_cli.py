"""The ``durable-dspy`` command: demo, dev, worker, run, replay.

APP is a module path (``myproject.agents``, importable from the current directory) or a file (``agents.py``);
importing it registers its durable programs and tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from ._connect import connect_config
from ._progress import PROGRESS_QUERY, Progress, Step

if TYPE_CHECKING:
    from dspy.clients.base_lm import BaseLM
    from temporalio.client import Client

    from ._program import ProgramDefinition
    from .testing import ScriptedLMServer

SCRIPTED = "scripted"
"""The ``--lm`` value for the offline scripted LM (``durable_dspy.testing.ScriptedLMServer``, placeholder answers)."""
SCRIPTED_MODEL = "openai/scripted"
LOCAL_ADDRESS = "localhost:7233"
"""Where ``run`` looks when no address is configured: the port ``durable-dspy dev`` listens on by default."""

_SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "site-packages", "__pycache__", ".tox", "build", "dist"}


class AppError(click.ClickException):
    """APP or APP:PROGRAM does not name something durable."""


# -- loading APP ---------------------------------------------------------------------------------------------


_DECORATED = re.compile(r"^@durable_program\b", re.M)


def _candidates(root: Path, limit: int = 10) -> list[str]:
    """Importable module paths under ``root`` with a module-level @durable_program, for error messages."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = [] if depth >= 3 else sorted(d for d in dirnames if d.isidentifier() and d not in _SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix != ".py" or not path.stem.isidentifier():
                continue
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if _DECORATED.search(path.read_text(encoding="utf-8")):
                    parts = path.relative_to(root).with_suffix("").parts
                    found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
            if len(found) >= limit:
                return found
    return found


def _names(programs: list[ProgramDefinition]) -> str:
    return ", ".join(sorted(p.name for p in programs)) or "none"


def _belongs(program: ProgramDefinition, module: ModuleType) -> bool:
    """Whether APP defines the program (in itself or a submodule) or exposes it, for an APP imported before."""
    home = program.cls.__module__
    exposed = any(value is program.cls for value in vars(module).values())
    return exposed or home == module.__name__ or home.startswith(module.__name__ + ".")


def load_app(app: str) -> tuple[ModuleType, list[ProgramDefinition]]:
    """Import APP (a module path or a ``.py`` file), with the current directory importable as for ``python -m``.

    Returns the module and the durable programs it registers (itself or through its imports).
    """
    from ._registry import default_registry

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module_name = app
    if app.endswith(".py") or os.sep in app:
        path = Path(app).resolve()
        if not path.is_file():
            raise AppError(f"APP {app!r}: no such file.")
        sys.path.insert(0, str(path.parent))
        module_name = path.stem  # the name a client importing the same file gets, so workflow names match
    before = {p.name for p in default_registry.programs()}
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppError(f"Importing {app!r} failed:\n{traceback.format_exc()}") from exc
        here = _candidates(Path(cwd))
        hint = f" Modules here with durable programs: {', '.join(here)}." if here else " None found here."
        raise AppError(
            f"Cannot import APP {app!r}: {exc}. APP is a module path importable from the current directory "
            f"({cwd}), e.g. `myproject.agents` for myproject/agents.py, or a file path like agents.py.{hint}"
        ) from None
    except Exception as exc:
        raise AppError(f"Importing {app!r} failed:\n{traceback.format_exc()}") from exc
    programs = [p for p in default_registry.programs() if p.name not in before or _belongs(p, module)]
    if not programs:
        raise AppError(
            f"APP {app!r} registers no durable programs. Decorate a dspy.Module class in it with @durable_program "
            "(or import the module that does)."
        )
    return module, programs


def resolve_program(target: str) -> ProgramDefinition:
    """``APP:Program`` to its definition: ``Program`` is a class in APP or a registered workflow name."""
    from ._program import program_definition

    app, _, name = target.rpartition(":") if ":" in target else (target, "", "")
    module, programs = load_app(app)
    if not name:
        if len(programs) == 1:
            return programs[0]
        raise AppError(f"{app!r} registers several durable programs ({_names(programs)}); name one as APP:PROGRAM.")
    definition = program_definition(getattr(module, name, None))
    if definition is not None:
        return definition
    for program in programs:
        if name in (program.name, program.cls.__qualname__):
            return program
    choices = ", ".join(f"{app}:{p.cls.__qualname__}" for p in programs)
    raise AppError(f"No durable program {name!r} in {app!r}. Registered: {_names(programs)}. Use one of: {choices}.")


# -- LMs -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def worker_lm(model: str | None) -> Iterator[tuple[BaseLM | None, str]]:
    """The LM for ``--lm MODEL`` and a label for it; ``scripted`` runs the offline scripted LM server meanwhile."""
    if model is None:
        yield None, "none given (the worker uses dspy.settings.lm)"
        return
    import dspy

    if model != SCRIPTED:
        yield dspy.LM(model), model
        return
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # offline: bundled model metadata
    from .testing import ScriptedLMServer

    server: ScriptedLMServer
    with ScriptedLMServer() as server:
        lm = dspy.LM(SCRIPTED_MODEL, api_base=server.url + "/v1", api_key="scripted", cache=False)
        yield lm, f"scripted local LM at {server.url} (durable_dspy.testing.ScriptedLMServer: placeholder answers)"


# -- progress --------------------------------------------------------------------------------------------------


def _symbols() -> tuple[str, str, str]:
    encoding = getattr(sys.stderr, "encoding", None) or "ascii"
    try:
        "✓✗…".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "+", "x", "..."
    return "✓", "✗", "…"


class ProgressPrinter:
    """Prints each finished step of a run once, and on a terminal a live line for the step under way."""

    def __init__(self, indent: str = "  ") -> None:
        self.indent = indent
        self.done: set[int] = set()
        self.live = sys.stderr.isatty()
        self._status = False
        self.ok, self.failed, self.running = _symbols()

    def _write(self, text: str, *, newline: bool = True) -> None:
        if self._status:
            click.echo("\r\x1b[K", nl=False, err=True)
            self._status = False
        click.echo(text, nl=newline, err=True)

    def line(self, step: Step, mark: str) -> str:
        tokens = f"{step.tokens} tokens" if step.tokens else ""
        seconds = f"{step.duration_ms / 1000:.2f} s" if step.duration_ms is not None else ""
        return f"{self.indent}{mark} {step.kind:<4} {step.name:<42} {tokens:>11} {seconds:>8}".rstrip()

    def update(self, progress: Progress) -> None:
        for index, step in enumerate(progress.steps):
            if index in self.done or step.status == "running":
                continue
            self.done.add(index)
            self._write(self.line(step, self.ok if step.status == "completed" else self.failed))
        running = [s for s in progress.steps if s.status == "running"]
        if self.live and running:
            self._write(
                f"{self.line(running[-1], self.running)}  ({progress.total_tokens} tokens so far)", newline=False
            )
            self._status = True

    def note(self, text: str) -> None:
        self._write(text)

    def summary(self, progress: Progress) -> str:
        cost = f", ${progress.cost:.4f}" if progress.cost else ""
        return (
            f"{progress.program} {progress.status}: {progress.lm_calls} LM calls, {progress.tool_calls} tool calls, "
            f"{progress.total_tokens} tokens{cost}"
        )


async def query_progress(handle: Any, timeout: float = 2.0) -> Progress | None:
    """The run's progress, or None when no worker answers in time (none running, or one restarting)."""
    try:
        return await asyncio.wait_for(
            handle.query(PROGRESS_QUERY, result_type=Progress, rpc_timeout=timedelta(seconds=timeout)), timeout + 1
        )
    except Exception:
        return None


async def _has_pollers(client: Client, task_queue: str) -> bool:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except Exception:
        return True  # unknown: do not cry wolf
    return bool(response.pollers)


# -- commands ------------------------------------------------------------------------------------------------


def _setup_logging(level: str) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("durable_dspy").setLevel(level.upper())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="durable-dspy", prog_name="durable-dspy")
def cli() -> None:
    """Run DSPy programs durably on Temporal: every LM call and tool call is an activity.

    \b
    durable-dspy demo                                   crash a running agent on purpose and watch it resume
    durable-dspy dev myapp.agents                       local Temporal with web UI + a worker for your programs
    durable-dspy run myapp.agents:RAG -i question=Hi    start a run, follow its progress, print the result
    durable-dspy worker myapp.agents -q rag --lm openai/gpt-4o-mini   a production worker
    durable-dspy replay myapp.agents runs/*.json        check saved histories against the current code
    """


@cli.command()
@click.option(
    "--lm",
    "model",
    default=SCRIPTED,
    show_default=True,
    metavar="MODEL",
    help="`scripted` (offline scripted LM) or a real model such as openai/gpt-4o-mini (needs its API key).",
)
@click.option(
    "--question", default=None, help="Ask something else (the scripted LM follows the default question's script)."
)
@click.option(
    "--keep-running", is_flag=True, help="Keep the Temporal server and web UI up after the demo (Ctrl-C stops)."
)
def demo(model: str, question: str | None, keep_running: bool) -> None:
    """A durable ReAct agent whose worker is killed mid-run (SIGKILL) and resumed by a new worker.

    Starts the embedded Temporal dev server with its web UI, a worker process and the bundled agent
    (durable_dspy.demo: search over a bundled corpus, safe arithmetic), then reports what the second worker
    took from history instead of sending again. Offline by default.

    \b
    Example:
        durable-dspy demo
        OPENAI_API_KEY=sk-... durable-dspy demo --lm openai/gpt-4o-mini
    """
    from .demo._run import DemoError, run_demo

    try:
        asyncio.run(run_demo(model=model, question=question, keep_running=keep_running))
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise click.Abort() from None


@cli.command()
@click.argument("app")
@click.option("--task-queue", "-q", default=None, help="Default: $DURABLE_DSPY_TASK_QUEUE, else durable-dspy.")
@click.option(
    "--lm",
    "model",
    envvar="DURABLE_DSPY_LM",
    default=SCRIPTED,
    show_default=True,
    metavar="MODEL",
    help="The worker's LM, e.g. openai/gpt-4o-mini; `scripted` is the offline scripted LM. Env: DURABLE_DSPY_LM.",
)
@click.option("--port", default=7233, show_default=True, help="Temporal's gRPC port (0: any free port).")
@click.option("--ui-port", default=8233, show_default=True, help="The web UI's port (0: any free port).")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file for Temporal's state. Default: ~/.local/share/durable-dspy/temporal.sqlite.",
)
@click.option("--log-level", default="info", show_default=True)
def dev(app: str, task_queue: str | None, model: str, port: int, ui_port: int, db: Path | None, log_level: str) -> None:
    """Local development: Temporal (with web UI) plus a worker for the programs APP registers.

    Runs stay in the SQLite file across restarts. Start runs from another terminal with `durable-dspy run`.

    \b
    Example:
        durable-dspy dev durable_dspy.demo
        durable-dspy run durable_dspy.demo:ResearchAgent --input question="What is DSPy?"
    """
    _setup_logging(log_level)
    _, programs = load_app(app)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_dev(app, programs, task_queue, model, port, ui_port, db))


async def _dev(
    app: str,
    programs: list[ProgramDefinition],
    task_queue: str | None,
    model: str,
    port: int,
    ui_port: int,
    db: Path | None,
) -> None:
    from . import serve_async
    from ._client import default_task_queue
    from ._devserver import DevServer, DevServerError, default_db_path

    queue = task_queue or default_task_queue()
    server = DevServer(port=port or None, ui=True, ui_port=ui_port or None, db_filename=db or default_db_path())
    try:
        await asyncio.to_thread(server.start)
    except DevServerError as exc:
        raise click.ClickException(
            f"{exc}\nIs another Temporal server using port {port}? Pass --port 0 --ui-port 0 for free ports, or "
            f"run only a worker against it: durable-dspy worker {app} --address localhost:{port}"
        ) from None
    try:
        with worker_lm(model) as (lm, label):

            def ready(_worker: object) -> None:
                example = programs[0]
                first = next(iter(example.signature.parameters), "question")
                flags = "" if port == 7233 else f" --address {server.address}"
                flags += "" if task_queue is None else f" -q {queue}"
                click.echo(f"durable-dspy dev: {len(programs)} program(s) from {app} on task queue {queue!r}")
                for program in programs:
                    click.echo(f"  program   {program.name}({', '.join(program.signature.parameters)})")
                click.echo(f"  Temporal  {server.address}  (state: {db or default_db_path()})")
                click.echo(f"  web UI    {server.ui_url}")
                click.echo(f"  LM        {label}")
                click.echo(
                    f"Start a run:  durable-dspy run {app}:{example.cls.__qualname__} --input {first}=...{flags}"
                )
                click.echo("Ctrl-C to stop.")

            await serve_async(task_queue=queue, lm=lm, address=server.address, on_ready=ready)
    finally:
        await asyncio.to_thread(server.stop)


@cli.command()
@click.argument("app")
@click.option("--task-queue", "-q", default=None, help="Default: $DURABLE_DSPY_TASK_QUEUE, else durable-dspy.")
@click.option("--address", default=None, help="host:port; default from TEMPORAL_ADDRESS or Temporal's config file.")
@click.option("--namespace", default=None, help="Default from TEMPORAL_NAMESPACE or the config file, else default.")
@click.option("--profile", default=None, help="A profile of Temporal's config file (default: $TEMPORAL_PROFILE).")
@click.option(
    "--lm",
    "model",
    envvar="DURABLE_DSPY_LM",
    default=None,
    metavar="MODEL",
    help="The worker's LM, e.g. openai/gpt-4o-mini (its key from the provider's env var). Env: DURABLE_DSPY_LM.",
)
@click.option(
    "--health-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Written once the worker polls, removed when it stops: for readiness probes.",
)
@click.option("--graceful-timeout", default=30.0, show_default=True, help="Seconds in-flight calls get on SIGTERM.")
@click.option("--log-level", default="info", show_default=True)
def worker(
    app: str,
    task_queue: str | None,
    address: str | None,
    namespace: str | None,
    profile: str | None,
    model: str | None,
    health_file: Path | None,
    graceful_timeout: float,
    log_level: str,
) -> None:
    """A production worker for the programs APP registers; stops gracefully on SIGTERM or Ctrl-C.

    Connection settings (address, namespace, API key, TLS) come from Temporal's environment configuration
    (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE, the config
    file); --address and --namespace override them. It never starts a local server: use `dev` for that.

    \b
    Example:
        TEMPORAL_ADDRESS=temporal:7233 OPENAI_API_KEY=sk-... \\
          durable-dspy worker myapp.agents -q rag --lm openai/gpt-4o-mini --health-file /tmp/worker-ready
    """
    _setup_logging(log_level)
    load_app(app)
    config = connect_config(address, namespace=namespace, profile=profile)
    if config is None:
        raise click.ClickException(
            "No Temporal address: pass --address HOST:PORT, set TEMPORAL_ADDRESS, or configure a profile in "
            "Temporal's config file. For a local server with a worker, use `durable-dspy dev APP`."
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_worker(task_queue, config, profile, model, health_file, graceful_timeout))


async def _worker(
    task_queue: str | None,
    config: dict[str, Any],
    profile: str | None,
    model: str | None,
    health_file: Path | None,
    grace: float,
) -> None:
    from . import serve_async
    from ._client import default_task_queue

    queue = task_queue or default_task_queue()
    where = f"{config['target_host']} (namespace {config.get('namespace', 'default')})"
    with worker_lm(model) as (lm, label):
        click.echo(f"LM: {label}")
        await serve_async(
            task_queue=queue,
            lm=lm,
            address=config["target_host"],
            namespace=config.get("namespace"),
            profile=profile,  # API key and TLS settings come with it
            health_file=health_file,
            on_ready=lambda _worker: click.echo(f"worker polling task queue {queue!r} at {where}"),
            graceful_shutdown_timeout=timedelta(seconds=grace),
        )
    click.echo("worker stopped")


def _parse_inputs(definition: ProgramDefinition, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``name=value`` pairs: the text itself for a ``str`` field, else JSON when it parses (``calls=3``)."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--input")
        parameter = definition.signature.parameters.get(name)
        if parameter is not None and parameter.annotation in (str, "str"):
            inputs[name] = raw
            continue
        try:
            inputs[name] = json.loads(raw)
        except ValueError:
            inputs[name] = raw
    return inputs


@cli.command()
@click.argument("target", metavar="APP:PROGRAM")
@click.option("--input", "-i", "pairs", multiple=True, metavar="NAME=VALUE", help="An input of forward(); repeat.")
@click.option("--id", "workflow_id", default=None, help="Workflow id (default: PROGRAM-<uuid>).")
@click.option("--no-wait", is_flag=True, help="Print the workflow id and return at once.")
@click.option(
    "--task-queue", "-q", default=None, help="Default: the program's, else $DURABLE_DSPY_TASK_QUEUE, else durable-dspy."
)
@click.option(
    "--address", default=None, help=f"Default: TEMPORAL_ADDRESS or Temporal's config file, else {LOCAL_ADDRESS}."
)
@click.option("--namespace", default=None)
def run(
    target: str,
    pairs: tuple[str, ...],
    workflow_id: str | None,
    no_wait: bool,
    task_queue: str | None,
    address: str | None,
    namespace: str | None,
) -> None:
    """Start a durable run, follow its progress on stderr, print its result as JSON on stdout.

    \b
    Example:
        durable-dspy run durable_dspy.demo:ResearchAgent --input question="When was the Eiffel Tower completed?"
        durable-dspy run myapp.agents:RAG -i question=Hi --id rag-42 --no-wait
    """
    definition = resolve_program(target)
    inputs = _parse_inputs(definition, pairs)
    from ._client import validate_inputs
    from ._errors import InputError

    try:
        validate_inputs(definition, inputs)
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--input") from None
    if address is None and connect_config(None, namespace=namespace) is None:
        address = LOCAL_ADDRESS
    asyncio.run(_run(definition, inputs, workflow_id, no_wait, task_queue, address, namespace))


async def _run(
    definition: ProgramDefinition,
    inputs: dict[str, Any],
    workflow_id: str | None,
    no_wait: bool,
    task_queue: str | None,
    address: str | None,
    namespace: str | None,
) -> None:
    from . import connect
    from ._client import default_task_queue, start
    from ._errors import ProgramFailedError

    try:
        client = await connect(address, namespace=namespace)
    except Exception as exc:
        where = address or "the configured address"
        raise click.ClickException(
            f"Cannot reach Temporal at {where}: {exc}. Start one with `durable-dspy dev APP`, or pass --address."
        ) from None
    queue = task_queue or definition.task_queue or default_task_queue()
    options: dict[str, Any] = {"task_queue": queue}
    if workflow_id:
        options["id"] = workflow_id
    handle = await start(definition, client, **inputs, **options)
    if no_wait:
        click.echo(json.dumps({"workflow_id": handle.id, "run_id": handle.run_id}))
        return
    printer = ProgressPrinter()
    printer.note(f"{definition.name} run {handle.id} on task queue {queue!r}")
    result = asyncio.ensure_future(handle.result())
    waited, warned = 0.0, False
    while not result.done():
        progress = await query_progress(handle)
        if progress is not None:
            printer.update(progress)
        elif not warned and waited > 5 and not await _has_pollers(client, queue):
            printer.note(
                f"  (no worker polls task queue {queue!r}: start one, e.g. `durable-dspy worker APP -q {queue}`)"
            )
            warned = True
        await asyncio.wait({result}, timeout=0.3)
        waited += 0.3
    try:
        prediction = result.result()
    except ProgramFailedError as exc:
        raise click.ClickException(str(exc)) from None
    final = await query_progress(handle)
    if final is not None:
        printer.update(final)
        printer.note(printer.summary(final))
    value = dict(prediction.items()) if hasattr(prediction, "items") else prediction
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


@cli.command()
@click.argument("app")
@click.argument("histories", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def replay(app: str, histories: tuple[Path, ...]) -> None:
    """Replay saved run histories against the current code: exits 1 if any run would now diverge.

    Save a history from the web UI (Download), with `temporal workflow show --workflow-id ID --output json`,
    or with `(await handle.fetch_history()).to_json()`.

    \b
    Example:
        durable-dspy replay myapp.agents histories/*.json
    """
    from .testing import check_histories

    load_app(app)
    reports = asyncio.run(check_histories(histories))
    failed = 0
    for report in reports:
        if report.ok:
            click.echo(f"ok      {report.source}")
        else:
            failed += 1
            click.echo(f"FAILED  {report.source}: {report.message}")
    click.echo(f"{len(reports) - failed} replayed cleanly, {failed} failed")
    if failed:
        sys.exit(1)


def main() -> None:
    """The console script: run the command, then exit without tearing the interpreter down.

    The Temporal SDK's Rust threads can call into a finalizing interpreter and abort it (SIGABRT) after a
    short-lived client command such as `run` (temporalio/sdk-python#300); every command has closed its servers,
    workers and files by the time it returns, so skipping teardown loses nothing.
    """
    try:
        cli.main(prog_name="durable-dspy")
        code: int | str | None = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        click.echo(code, err=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
