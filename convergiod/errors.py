"""Exceptions inside the daemon that become protocol ``Failure`` codes at the boundary."""

from __future__ import annotations

from convergiod.protocol import ErrorCode


class OpError(Exception):
    """An operation failed in a way the client should see as ``Failure(code, message)``."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.retry_after = retry_after


def classify(exc: BaseException) -> tuple[ErrorCode, str]:
    """Map an exception escaping an op handler to a stable error code and a message."""
    from convergiod import runtime

    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        # A lone failure from inside a nursery: report the failure, not the group.
        exc = exc.exceptions[0]
    if isinstance(exc, OpError):
        return exc.code, exc.message
    if isinstance(exc, runtime.ActorNotFound):
        return "not_found", str(exc)
    if isinstance(exc, runtime.MailboxFull):
        return "overloaded", str(exc)
    if isinstance(exc, runtime.AskTimeout):
        return "timeout", str(exc)
    if isinstance(exc, runtime.ActorStopped):
        return "unavailable", str(exc)
    if isinstance(exc, runtime.ActorCrashed):
        return "internal", str(exc)
    return "internal", f"{type(exc).__name__}: {exc}"
