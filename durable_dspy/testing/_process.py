"""A worker in a process of its own, for crash tests: start it, wait until it polls, SIGKILL or SIGTERM it.

Example:
    >>> worker = WorkerProcess([sys.executable, "-m", "myapp.worker"]).start()  # prints READY once it polls
    >>> ...
    >>> worker.kill()  # SIGKILL to its whole process group, mid-run
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

READY = "READY"


class WorkerProcess:
    """``args`` run in a new session (its own process group); ready once it prints a line ``READY``.

    ``serve(on_ready=lambda _: print("READY", flush=True))`` is such a worker. Its output (stdout and stderr) is
    kept in ``output``. ``kill()`` SIGKILLs the group and reaps it, ``terminate()`` sends SIGTERM; a
    ``with`` block starts it and kills it on exit.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        ready_line: str = READY,
    ) -> None:
        self.args = list(args)
        self.cwd = cwd
        self.env = dict(env or {})
        self.ready_line = ready_line
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.ready_seconds: float | None = None
        self._ready = threading.Event()

    def start(self, timeout: float = 60.0) -> WorkerProcess:
        """Start the process and wait until it prints the ready line (it is killed if it does not in time)."""
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            self.args, cwd=self.cwd, env={**os.environ, **self.env}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._read, name="worker-output", daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"worker {self.args} did not become ready:\n" + "".join(self.output[-40:]))
        self.ready_seconds = time.perf_counter() - started
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.strip() == self.ready_line:
                self._ready.set()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL the worker's process group (a crash), and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def terminate(self) -> None:
        """SIGTERM the worker's process group (a graceful shutdown); ``wait()`` for it to exit."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit status, once the process has exited (``subprocess.TimeoutExpired`` after ``timeout``)."""
        assert self.proc is not None, "not started"
        return self.proc.wait(timeout)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
