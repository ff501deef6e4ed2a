"""The ``durable-dspy`` command: demo, dev, worker, run, replay.

APP is a module path (``myproject.agents``, importable from the current directory) or a file (``agents.py``);
importing it registers its durable programs and tools. This module holds the click group, the commands and the
console script; loading APP is in ``_cli_app``, serving in ``_cli_serve``, running in ``_cli_run``, progress in
``_cli_progress``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

import click

from ._cli_app import load_app, resolve_program
from ._cli_run import LOCAL_ADDRESS, parse_inputs, start_and_follow
from ._cli_serve import SCRIPTED, serve_dev, serve_worker
from ._connect import connect_config

__all__ = ["cli", "main"]


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
        asyncio.run(serve_dev(app, programs, task_queue, model, port, ui_port, db))


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
        asyncio.run(serve_worker(task_queue, config, profile, model, health_file, graceful_timeout))


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
    inputs = parse_inputs(definition, pairs)
    from ._client import validate_inputs
    from ._errors import InputError

    try:
        validate_inputs(definition, inputs)
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="--input") from None
    if address is None and connect_config(None, namespace=namespace) is None:
        address = LOCAL_ADDRESS
    asyncio.run(start_and_follow(definition, inputs, workflow_id, no_wait, task_queue, address, namespace))


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
