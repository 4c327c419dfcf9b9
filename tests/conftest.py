"""Shared fixtures. Integration tests run a real daemon in a subprocess on a private
``CONVERGIO_HOME`` and talk to it over its real sockets."""

from __future__ import annotations

import collections.abc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from convergiod.paths import Paths, resolve


class DaemonProcess:
    """A ``convergio daemon run`` subprocess on its own home directory."""

    #: Lead a process group of its own, as a daemon in a terminal does (``make run``).
    new_session = False

    def __init__(self, home: Path, config: str | None = None) -> None:
        self.home = home
        self.env = {**os.environ, "CONVERGIO_HOME": str(home)}
        self.env.pop("NOTIFY_SOCKET", None)
        self.paths: Paths = resolve(self.env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home / "daemon-test.log"
        if config is not None:
            self.write_config(config)

    def write_config(self, text: str) -> None:
        self.paths.config_dir.mkdir(parents=True, exist_ok=True)
        self.paths.config_file.write_text(text)

    def spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "convergiod", "daemon", "run"],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=self.new_session,
            )
        return self.proc

    def start(self, timeout: float = 15.0) -> DaemonProcess:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        from convergio_client import Client, ConvergioError
        from convergiod.protocol import Ping

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.logs()}")
            if self.paths.api_socket.exists():
                try:
                    with Client(paths=self.paths, timeout=0.5, check=False) as c:
                        c.call(Ping())
                    return
                except ConvergioError:
                    pass
            time.sleep(0.02)
        raise AssertionError(f"daemon not ready after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def client(self, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        from convergio_client import Client

        return Client(paths=self.paths, timeout=timeout)

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "convergiod", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def terminate(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def ctx() -> collections.abc.Iterator[zmq.Context[Any]]:
    """A ZeroMQ context for socket-level tests, destroyed without lingering."""
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def ipc_dir() -> collections.abc.Iterator[str]:
    # tmp_path can exceed the ~107 byte limit of a unix socket path.
    path = tempfile.mkdtemp(prefix="zt", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def home() -> collections.abc.Iterator[Path]:
    # ipc:// paths must stay short (sun_path is ~104 bytes): a short directory under /tmp.
    path = Path(tempfile.mkdtemp(prefix="cvg-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon_factory(
    home: Path,
) -> collections.abc.Iterator[collections.abc.Callable[..., DaemonProcess]]:
    made: list[DaemonProcess] = []

    def make(config: str | None = None, *, start: bool = True) -> DaemonProcess:
        d = DaemonProcess(home, config)
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        d.kill()


@pytest.fixture
def daemon(daemon_factory: collections.abc.Callable[..., DaemonProcess]) -> DaemonProcess:
    return daemon_factory()
