"""Errors raised by the client library. All derive from ``ConvergioError``; the CLI prints
their message on one line and exits non-zero."""

from __future__ import annotations


class ConvergioError(Exception):
    """Base class of every client error."""


class DaemonNotRunning(ConvergioError):
    """No daemon holds the lock of this ``CONVERGIO_HOME``."""


class ClientTimeout(ConvergioError):
    """The daemon did not answer in time."""


class RemoteError(ConvergioError):
    """The daemon answered with ``Failure(code, message)``."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after
