"""Group commit: one writer per database, many concurrent writes per transaction.

A write is a function of the connection run inside a savepoint of the current batch. The
first waiting caller takes the writer's lock and commits every write queued by then in one
transaction on a worker thread; the others wait for the lock, find their write done and
return. So concurrent writes share one COMMIT (and one fsync), and each caller hears about
its write only after that COMMIT: an acknowledged write is a committed write.

One write's failure rolls back its own savepoint, not the batch. ``post`` callbacks that a
write registers run on the event loop after the COMMIT (e.g. updating the vector matrix), so
in-memory state never runs ahead of the database.

The writer is a role, not a task: whoever holds the lock commits. The commit itself is
shielded from cancellation, so a caller's deadline never leaves a batch half done.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import apsw
import trio

T = TypeVar("T")
Post = list[Callable[[], object]]
WriteFn = Callable[[apsw.Connection, Post], T]


class _Job(Generic[T]):
    __slots__ = ("done", "error", "fn", "post", "result", "taken")

    def __init__(self, fn: WriteFn[T]) -> None:
        self.fn = fn
        self.post: Post = []
        self.result: T | None = None
        self.error: BaseException | None = None
        self.taken = False
        self.done = False


class Writer:
    def __init__(
        self,
        con: apsw.Connection,
        *,
        max_batch: int,
        before_commit: Callable[[apsw.Connection], None] | None = None,
    ) -> None:
        self.con = con
        self.max_batch = max_batch
        self.before_commit = before_commit
        self._queue: deque[_Job[Any]] = deque()
        self._lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)
        self.batches = 0
        self.writes = 0

    async def write(self, fn: WriteFn[T]) -> T:
        """Run ``fn(con, post)`` in the next group commit; its result once committed."""
        job: _Job[T] = _Job(fn)
        self._queue.append(job)
        try:
            async with self._lock:
                if not job.done:
                    with trio.CancelScope(shield=True):
                        await self._commit_queued()
        except trio.Cancelled:
            if not job.taken:
                self._queue.remove(job)
            raise
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    async def exclusive(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn(con)`` on the writer's connection between group commits, outside any
        transaction (e.g. one step of an online backup)."""
        async with self._lock:
            return await trio.to_thread.run_sync(fn, self.con, limiter=self._limiter)

    async def _commit_queued(self) -> None:
        batch: list[_Job[Any]] = []
        while self._queue and len(batch) < self.max_batch:
            job = self._queue.popleft()
            job.taken = True
            batch.append(job)
        try:
            await trio.to_thread.run_sync(self._run, batch, limiter=self._limiter)
        except apsw.Error as exc:
            for job in batch:
                job.error = exc
        else:
            for job in batch:
                if job.error is None:
                    for callback in job.post:
                        callback()
        self.batches += 1
        self.writes += len(batch)
        for job in batch:
            job.done = True

    def _run(self, batch: list[_Job[Any]]) -> None:
        con = self.con
        with con:
            if self.before_commit is not None:
                self.before_commit(con)
            for job in batch:
                try:
                    with con:
                        job.result = job.fn(con, job.post)
                except Exception as exc:
                    job.error = exc
                    job.post.clear()
