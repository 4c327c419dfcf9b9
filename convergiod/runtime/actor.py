"""The ``Actor`` base class that application actors subclass."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .cell import ActorCell
    from .ref import ActorRef
    from .system import ActorSystem

__all__ = ["NOT_NOW", "Actor"]


class _NotNow:
    """The answer of ``Actor.handle_now`` for "send it through the mailbox"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_NOW"


NOT_NOW: Any = _NotNow()


class Actor:
    """Subclass this; state lives in the instance. A fresh instance is made for each (re)start.

    ``handle`` runs in one of ``concurrency`` worker tasks that share the actor's mailbox.
    Its return value is the reply to ``ask``; an exception raised from it (or from ``started``)
    crashes the actor, and its supervisor applies its strategy. ``stopping`` runs on an
    orderly stop, inside the child's shutdown timeout.
    """

    concurrency: ClassVar[int] = 1
    #: Exceptions from ``handle`` that are the reply to the message (raised in the asker)
    #: instead of a crash, e.g. ``(convergiod.errors.OpError,)``.
    reply_errors: ClassVar[tuple[type[Exception], ...]] = ()
    name: str  # set by the runtime before started()
    system: ActorSystem  # set by the runtime before started()
    _cell: ActorCell | None = None

    async def started(self) -> None:
        """Runs before the first message; raising here is a crash."""

    async def handle(self, msg: Any) -> Any:
        """Handle one message; the result is the reply to ``ask``."""
        raise NotImplementedError(f"{type(self).__name__}.handle is not implemented")

    def handle_now(self, msg: Any) -> Any:
        """Answer ``msg`` at once, on the asker's task, or return ``NOT_NOW``.

        For answers that need no waiting (a lookup, a bounded computation of a few hundred
        microseconds). It runs between the actor's own awaits, so it sees the state its
        handlers leave at their suspension points, never half of a synchronous update; it
        must not block. It bypasses the mailbox: there is no order against queued messages,
        so decline what must be ordered. ``reply_errors`` are raised to the asker; any other
        exception crashes the actor, as from ``handle``.
        """
        return NOT_NOW

    async def stopping(self) -> None:
        """Runs on an orderly shutdown, within the child's shutdown timeout."""

    def stop(self) -> None:
        """Ask for a *normal* exit: in-flight messages finish, then ``stopping()`` runs.

        A normal exit is restarted only for ``Restart.PERMANENT`` children.
        """
        if self._cell is not None:
            self._cell.request_self_stop(self)

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: Any) -> bool:
        """Run ``fn(*args)`` in a task of this instance, beside its workers: work that must
        not hold up whoever triggered it (usage written after the answer went out). An
        orderly stop waits for it (within the shutdown timeout); a crash cancels it; an
        exception from it crashes the actor, as from ``handle``. Callable from any task of
        the Trio run (``handle_now`` included); ``False`` if the instance is not running
        (starting, stopping or gone), and then nothing runs."""
        if self._cell is None:
            return False
        return self._cell.start_soon(self, fn, args)

    def ref(self, name: str) -> ActorRef:
        """Shortcut for ``self.system.ref(name)``."""
        return self.system.ref(name)
