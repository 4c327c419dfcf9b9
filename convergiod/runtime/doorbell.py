"""``Doorbell``: wake one parked task so it runs after the tasks running now."""

from __future__ import annotations

from typing import Any

from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

__all__ = ["Doorbell"]


class Doorbell:
    """A worker task parks at it (``wait``) when it has nothing to do; ``ring`` wakes it,
    and it runs in the scheduler's next pass, after the tasks running now: what they add
    meanwhile is there when it looks (e.g. frames to send together, writes to commit
    together). Ringing while the worker is busy does nothing, so the worker looks for work
    again before it parks. No Event or cancel scope per wake-up; cancelling the wait works.
    """

    __slots__ = ("_parked",)

    def __init__(self) -> None:
        self._parked: Task | None = None

    def ring(self) -> None:
        parked = self._parked
        if parked is not None:
            self._parked = None
            reschedule(parked)

    async def wait(self) -> None:
        self._parked = current_task()
        await wait_task_rescheduled(self._abort)

    def _abort(self, _: Any) -> Abort:
        self._parked = None
        return Abort.SUCCEEDED
