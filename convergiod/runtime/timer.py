"""Ask timeouts without a cancel scope per ask.

One task per system sleeps until the earliest pending ask deadline. Pending asks sit in one
FIFO per distinct timeout value; since deadlines in one FIFO only grow, the front is the
earliest, answered asks are popped from the front as new ones arrive, and only an empty FIFO
receiving an entry can move the next wake-up earlier.
"""

from __future__ import annotations

import math
from collections import deque

import trio

from .errors import AskTimeout
from .mailbox import Envelope

__all__ = ["AskTimer"]


class AskTimer:
    __slots__ = ("_queues", "_scope", "_wake_at")

    def __init__(self) -> None:
        self._queues: dict[float, deque[tuple[float, Envelope, str]]] = {}
        self._scope: trio.CancelScope | None = None
        self._wake_at = math.inf

    def add(self, env: Envelope, timeout: float, name: str) -> None:
        deadline = trio.current_time() + timeout
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        else:
            while queue and queue[0][1].task is None:
                queue.popleft()
        queue.append((deadline, env, name))
        if deadline < self._wake_at:
            self._wake_at = deadline
            if self._scope is not None:
                self._scope.deadline = deadline

    async def run(self) -> None:
        """The timer task: runs in the system's nursery until cancelled."""
        while True:
            with trio.CancelScope(deadline=self._wake_at) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            self._expire(trio.current_time())

    def _expire(self, now: float) -> None:
        wake_at = math.inf
        for timeout in list(self._queues):
            queue = self._queues[timeout]
            while queue:
                deadline, env, name = queue[0]
                if env.task is None:
                    queue.popleft()
                elif deadline <= now:
                    queue.popleft()
                    env.fail(AskTimeout(name, timeout))
                else:
                    wake_at = min(wake_at, deadline)
                    break
            if not queue:
                del self._queues[timeout]
        self._wake_at = wake_at
