"""``ActorRef``: a stable, cheap handle to an actor by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trio.lowlevel import current_task, wait_task_rescheduled

from .actor import NOT_NOW
from .errors import ActorCrashed
from .mailbox import Envelope
from .timer import AskTimer

if TYPE_CHECKING:
    from .cell import ActorCell

__all__ = ["ActorRef"]


class ActorRef:
    """Talks to whichever instance of the named actor is current; survives restarts."""

    __slots__ = ("_cell", "_mailbox", "_timer", "name")

    def __init__(self, cell: ActorCell, timer: AskTimer) -> None:
        self.name = cell.name
        self._cell = cell
        self._mailbox = cell.mailbox
        self._timer = timer

    def __repr__(self) -> str:
        return f"ActorRef({self.name!r})"

    def send(self, msg: Any) -> None:
        """Fire and forget. Raises MailboxFull, or ActorStopped/ActorCrashed if gone for good."""
        self._mailbox.put_nowait(Envelope(msg, None))

    async def tell(self, msg: Any) -> None:
        """Fire and forget, waiting for mailbox space (back-pressure)."""
        await self._mailbox.put(Envelope(msg, None))

    async def ask(self, msg: Any, *, timeout: float | None = 5.0) -> Any:
        """Request/reply. Returns the reply, or raises ActorCrashed, AskTimeout, MailboxFull,
        ActorStopped. Never hangs past ``timeout`` (None: wait as long as the actor lives)."""
        env = Envelope(msg, current_task())
        self._mailbox.put_nowait(env)
        if timeout is not None:
            self._timer.add(env, timeout, self.name)
        return await wait_task_rescheduled(env.abort)

    def idle(self) -> bool:
        """Nothing in the mailbox and every worker waiting for a message: a message handled
        now (``ask_now``) overtakes none queued or in progress. For actors that decline in
        ``handle_now`` what must keep its order only because of those. Side tasks
        (``Actor.start_soon``) are not counted: an actor whose order depends on them must
        not rely on this."""
        instance = self._cell.instance
        mailbox = self._mailbox
        return (
            instance is not None
            and not mailbox.queue
            and mailbox.waiting >= max(1, instance.concurrency)
        )

    def ask_now(self, msg: Any) -> Any:
        """``Actor.handle_now`` on the running instance: its answer, or ``NOT_NOW`` when it
        declines or the actor is not running (then ``ask`` goes through the mailbox).
        Raises what ``handle_now`` raises; a crash there is ``ActorCrashed``, as for ``ask``."""
        cell = self._cell
        instance = cell.instance
        if instance is None or cell.state != "running" or cell._stop_requested:
            return NOT_NOW
        try:
            answer = instance.handle_now(msg)
        except instance.reply_errors:
            cell.handled += 1
            raise
        except Exception as exc:
            cell.handled += 1
            cell.crash(exc)
            raise ActorCrashed(self.name, repr(exc)) from None
        if answer is not NOT_NOW:
            cell.handled += 1
        return answer
