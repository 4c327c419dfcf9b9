"""Asking the memory actor with no task on its side: ``MemoryActor.handle_now`` submits a
write to the group commit at once and answers with a ``Pending`` resolved after the COMMIT
(or answers a search of an empty tenant at once). The asker waits for the ``Pending``
parked on the event loop, with no task, nursery or mailbox trip in between::

    answer = await asks.ask(memory, SaveStep(...), timeout=30.0)

Writes submitted one after the other on the Trio thread reach the tenant's writer in that
order and commit in that order (in one group commit or in consecutive ones): a write
submitted after another never commits before it.
"""

from __future__ import annotations

from typing import Any

import outcome
from trio.lowlevel import Abort, current_task, reschedule, wait_task_rescheduled

from convergiod.runtime import NOT_NOW, ActorRef, Pending

__all__ = ["ask", "settle"]


class _Waiter:
    """The callback of one wait: wakes the waiting task, or keeps the outcome when it
    comes before anyone waits (or after the wait was cancelled)."""

    __slots__ = ("result", "task")

    def __init__(self) -> None:
        self.result: outcome.Outcome[Any] | None = None
        self.task: Any = None

    def __call__(self, result: outcome.Outcome[Any]) -> None:
        task, self.task = self.task, None
        if task is None:
            self.result = result
        else:
            reschedule(task, result)


async def settle(pending: Pending) -> Any:
    """Wait for ``pending``: its value, or raise its error. Cancelling the wait does not
    withdraw the write (it still commits). No checkpoint when it is already resolved."""
    waiter = _Waiter()
    pending.on_done(waiter)
    if waiter.result is not None:
        return waiter.result.unwrap()
    waiter.task = current_task()

    def abort(_: Any) -> Abort:
        waiter.task = None
        return Abort.SUCCEEDED

    return await wait_task_rescheduled(abort)


async def ask(ref: ActorRef, msg: Any, *, timeout: float | None = 30.0) -> Any:
    """``ref.ask(msg)``, through ``handle_now`` when the actor answers that way. The
    ``timeout`` applies to the mailbox path only: a submitted write is answered when its
    group commit ends."""
    answer = ref.ask_now(msg)
    if answer is NOT_NOW:
        return await ref.ask(msg, timeout=timeout)
    if type(answer) is Pending:
        return await settle(answer)
    return answer
