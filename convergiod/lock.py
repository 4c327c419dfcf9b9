"""One daemon per ``CONVERGIO_HOME``: an exclusive ``flock`` on ``run/daemon.lock``.

The kernel drops the lock when the process dies, however it dies, so a lock "left" by a
SIGKILLed daemon is no lock at all: the next daemon takes it at once and removes the stale
socket files. Clients use the same lock to tell "no daemon" from "daemon busy" without
waiting for a timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None, lock_file: Path) -> None:
        where = lock_file.parent.parent if lock_file.parent.name == "run" else lock_file.parent
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"a convergio daemon is already running for {where} ({who})")
        self.pid = pid


class DaemonLock:
    """Held for the daemon's whole life; ``release`` (or process death) frees it."""

    def __init__(self, lock_file: Path, pid_file: Path) -> None:
        self.lock_file = lock_file
        self.pid_file = pid_file
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(read_pid(self.pid_file), self.lock_file) from None
        self._fd = fd
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.pid_file)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            if read_pid(self.pid_file) == os.getpid():
                self.pid_file.unlink()
        os.close(self._fd)
        self._fd = None


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(lock_file: Path, pid_file: Path) -> int | None:
    """The pid of the live daemon holding the lock, or None when no daemon holds it."""
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_pid(pid_file) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
