"""Start, stop, one daemon per home, SIGKILL recovery, bad config, client reconnect."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from convergio_client import Client, DaemonNotRunning
from convergiod import protocol as p
from tests.conftest import DaemonProcess

COMMANDS = [
    ["ping"],
    ["status"],
    ["actors"],
    ["events", "--count", "1"],
    ["actor", "kill", "health"],
    ["actor", "restart", "health"],
    ["daemon", "stop"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_commands_without_daemon_say_so_in_one_line(home, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    d = DaemonProcess(home)
    for extra in ([], ["--json"]):
        result = d.cli(*args, *extra)
        assert result.returncode != 0
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "not running" in lines[0]
        assert "Traceback" not in result.stderr


def test_second_daemon_refuses_with_clear_message(daemon: DaemonProcess) -> None:
    second = DaemonProcess(daemon.home)
    proc = second.spawn()
    assert proc.wait(15) == 1
    assert "already running" in second.logs()
    assert f"pid {daemon.proc.pid}" in second.logs()  # type: ignore[union-attr]
    with daemon.client() as c:
        assert c.call(p.Ping()).pid == daemon.proc.pid  # type: ignore[union-attr]


def test_sigkilled_daemon_is_replaced_at_once_by_daemon_start(daemon: DaemonProcess) -> None:
    assert daemon.paths.api_socket.exists()
    daemon.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    daemon.proc.wait(10)  # type: ignore[union-attr]
    assert daemon.paths.api_socket.exists()  # stale socket and pid file left behind
    start = time.monotonic()
    result = daemon.cli("daemon", "start", "--json")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 10
    info = json.loads(result.stdout)
    assert info["state"] == "running" and info["pid"] != daemon.proc.pid  # type: ignore[union-attr]
    assert daemon.cli("ping").returncode == 0
    stop = daemon.cli("daemon", "stop")
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout


def test_daemon_start_is_idempotent_and_stop_exits_cleanly(home) -> None:  # type: ignore[no-untyped-def]
    d = DaemonProcess(home)
    first = d.cli("daemon", "start")
    assert first.returncode == 0 and "started" in first.stdout, first.stderr
    again = d.cli("daemon", "start")
    assert again.returncode == 0 and "already running" in again.stdout
    assert d.cli("daemon", "status").returncode == 0
    assert d.cli("daemon", "stop").returncode == 0
    status = d.cli("daemon", "status")
    assert status.returncode == 3 and "not running" in status.stdout
    assert not d.paths.api_socket.exists()
    assert not d.paths.pid_file.exists()


def test_sigterm_lets_in_flight_requests_finish_and_exits_zero(daemon: DaemonProcess) -> None:
    results: list[object] = []

    def long_request() -> None:
        with daemon.client() as c:
            results.append(c.call(p.Ping(count=5, interval=0.1)))

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(0.15)
    assert daemon.terminate() == 0
    t.join(10)
    assert len(results) == 1 and isinstance(results[0], p.Pong)


def test_requests_still_running_after_drain_timeout_fail_unavailable(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory("[gateway]\ndrain_timeout = 0.3\n")
    errors: list[str] = []

    def long_request() -> None:
        with d.client() as c:
            try:
                c.call(p.Ping(count=100, interval=0.1))
            except Exception as exc:
                errors.append(getattr(exc, "code", repr(exc)))

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(0.2)
    assert d.terminate() == 0
    t.join(10)
    assert errors == ["unavailable"]


def test_invalid_config_is_refused_naming_the_key(home) -> None:  # type: ignore[no-untyped-def]
    d = DaemonProcess(home, "[gateway]\nmax_in_fligt = 3\n")
    proc = d.spawn()
    assert proc.wait(15) == 2
    assert "unknown key 'gateway.max_in_fligt'" in d.logs()
    assert not d.paths.api_socket.exists()


def test_client_reconnects_after_daemon_restart(daemon: DaemonProcess) -> None:
    with daemon.client(timeout=5) as c:
        first = c.call(p.Ping()).pid
        assert daemon.terminate() == 0
        with pytest.raises(DaemonNotRunning):
            Client(paths=daemon.paths)
        daemon.start()
        second = c.call(p.Ping()).pid
    assert first != second == daemon.proc.pid  # type: ignore[union-attr]


def test_runtime_dir_is_owner_only(daemon: DaemonProcess) -> None:
    assert os.stat(daemon.paths.runtime_dir).st_mode & 0o777 == 0o700
    assert os.stat(daemon.paths.api_socket).st_mode & 0o077 == 0


def test_json_output_of_every_command_parses(daemon: DaemonProcess) -> None:
    for args in (
        ["ping"],
        ["status"],
        ["actors"],
        ["actor", "restart", "system"],
        ["daemon", "status"],
    ):
        result = daemon.cli(*args, "--json")
        assert result.returncode == 0, result.stderr
        json.loads(result.stdout)
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert status["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    assert {a["name"] for a in status["actors"]} >= {"root", "core", "events", "health", "system"}
