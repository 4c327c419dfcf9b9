"""Bounded mailbox and reply slots.

The mailbox belongs to the actor's stable name (its cell), not to an instance: messages queued
when an instance crashes are handled by the next one. A waiting ``ask`` parks its own task and
the handler reschedules it directly with the reply (no event or channel object per ask).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import outcome
import trio
from trio.lowlevel import Abort, ParkingLot, Task, current_task, reschedule, wait_task_rescheduled

from .errors import ActorError, MailboxFull

__all__ = ["Envelope", "Mailbox"]


class Envelope:
    """A message in a mailbox plus, for an ``ask``, the task waiting for its reply."""

    __slots__ = ("msg", "task")

    def __init__(self, msg: Any, task: Task | None) -> None:
        self.msg = msg
        self.task = task  # None for send/tell, or once answered/abandoned

    def reply(self, value: Any) -> None:
        task = self.task
        if task is not None:
            self.task = None
            reschedule(task, outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        task = self.task
        if task is not None:
            self.task = None
            reschedule(task, outcome.Error(error))

    def abort(self, _raise_cancel: object) -> Abort:
        # The asker was cancelled (timeout or outer cancel): drop any later reply.
        self.task = None
        return Abort.SUCCEEDED


class Mailbox:
    """A bounded FIFO of envelopes with parking lots for idle workers and blocked tellers."""

    __slots__ = ("_closed", "_getters", "_putters", "name", "queue", "size")

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.queue: deque[Envelope] = deque()
        self._getters: deque[Task] = deque()  # parked workers
        self._putters = ParkingLot()
        self._closed: Callable[[], ActorError] | None = None

    def __len__(self) -> int:
        return len(self.queue)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def waiting(self) -> int:
        """Workers parked for the next message (none of them is handling one)."""
        return len(self._getters)

    def put_nowait(self, env: Envelope) -> None:
        if self._closed is not None:
            raise self._closed()
        queue = self.queue
        if len(queue) >= self.size:
            raise MailboxFull(self.name, self.size)
        queue.append(env)
        if self._getters:
            reschedule(self._getters.popleft())

    async def put(self, env: Envelope) -> None:
        """Enqueue, waiting while the mailbox is full (back-pressure)."""
        await trio.lowlevel.checkpoint()
        while True:
            if self._closed is not None:
                raise self._closed()
            if len(self.queue) < self.size:
                self.queue.append(env)
                if self._getters:
                    reschedule(self._getters.popleft())
                return
            await self._putters.park()

    def get_nowait(self) -> Envelope | None:
        queue = self.queue
        if not queue:
            return None
        env = queue.popleft()
        if self._putters:
            self._putters.unpark()
        return env

    async def wait_nonempty(self) -> None:
        """Park until something is put (or ``wake_all``); callers re-check the queue."""
        task = current_task()
        getters = self._getters
        getters.append(task)

        def abort(_raise_cancel: object) -> Abort:
            try:
                getters.remove(task)
            except ValueError:  # pragma: no cover - already woken
                pass
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def wake_all(self) -> None:
        """Wake every parked worker so it can notice that its instance is stopping."""
        getters = self._getters
        while getters:
            reschedule(getters.popleft())

    def close(self, error: Callable[[], ActorError]) -> None:
        """Refuse new messages and fail every queued ``ask`` with ``error()``."""
        self._closed = error
        queue = self.queue
        while queue:
            queue.popleft().fail(error())
        self._putters.unpark_all()

    def reopen(self) -> None:
        self._closed = None
