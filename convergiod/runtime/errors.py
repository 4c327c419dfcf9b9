"""Exceptions raised by the actor runtime."""

from __future__ import annotations

__all__ = [
    "ActorCrashed",
    "ActorError",
    "ActorKilled",
    "ActorNotFound",
    "ActorStopped",
    "AskTimeout",
    "ChildStartError",
    "MailboxFull",
    "SupervisorEscalation",
]


class ActorError(Exception):
    """Base class of the runtime's errors about an actor; ``actor`` names it."""

    def __init__(self, actor: str, message: str) -> None:
        super().__init__(message)
        self.actor = actor


class ActorNotFound(ActorError, LookupError):
    """No actor of that name exists in the system."""

    def __init__(self, actor: str) -> None:
        super().__init__(actor, f"no actor named {actor!r}")


class ActorStopped(ActorError):
    """The actor is stopped (normally, or by shutdown) and takes no more messages."""

    def __init__(self, actor: str, detail: str = "") -> None:
        super().__init__(actor, f"actor {actor!r} is stopped" + (f": {detail}" if detail else ""))


class ActorCrashed(ActorError):
    """The actor crashed while handling this message, or died for good before reaching it.

    ``error`` is the ``repr`` of the exception that crashed it.
    """

    def __init__(self, actor: str, error: str) -> None:
        super().__init__(actor, f"actor {actor!r} crashed: {error}")
        self.error = error


class MailboxFull(ActorError):
    """The actor's bounded mailbox is full (back-pressure: retry later or use ``tell``)."""

    def __init__(self, actor: str, size: int) -> None:
        super().__init__(actor, f"mailbox of actor {actor!r} is full ({size} messages)")
        self.size = size


class AskTimeout(ActorError, TimeoutError):
    """No reply to an ``ask`` arrived within its timeout."""

    def __init__(self, actor: str, timeout: float) -> None:
        super().__init__(actor, f"no reply from actor {actor!r} within {timeout:g}s")
        self.timeout = timeout


class ActorKilled(Exception):
    """The reason given to an actor or supervisor crashed on purpose by ``ActorSystem.kill``."""


class ChildStartError(ActorError):
    """A child's ``started()`` hook (or its factory) failed while it was being started."""

    def __init__(self, actor: str, error: BaseException) -> None:
        super().__init__(actor, f"child {actor!r} failed to start: {error!r}")
        self.error = error


class SupervisorEscalation(Exception):
    """The root supervisor failed (restart intensity exceeded, or it crashed): the system is down.

    Raised by ``open_actor_system`` so that the daemon exits non-zero.
    """

    def __init__(self, supervisor: str, reason: str) -> None:
        super().__init__(f"supervisor {supervisor!r} failed: {reason}")
        self.supervisor = supervisor
        self.reason = reason
