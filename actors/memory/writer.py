"""Group commit: one writer per database, many concurrent writes per transaction.

A write is a function of the connection run inside a savepoint of the current batch. The
first caller that finds no commit under way becomes the committer: it commits every write
queued by then in one transaction on a worker thread. Writes that arrive meanwhile queue up;
when the commit ends, their callers are woken (their write is done) and the committer role
passes to the owner of the oldest write still queued, which commits the next batch at once.
So concurrent writes share one COMMIT (and one fsync), the next batch gathers while the
current one commits, and each caller hears about its write only after its COMMIT: an
acknowledged write is a committed write.

One write's failure rolls back its own savepoint, not the batch. ``post`` callbacks that a
write registers run on the event loop after the COMMIT (e.g. updating the vector matrix), so
in-memory state never runs ahead of the database.

A write may also name a ``Group``: consecutive writes of the same group in a batch are done
by one call (e.g. one multi-row INSERT), inside one savepoint. If that call fails, its
savepoint is rolled back and each of its writes runs again on its own, so one bad write
still fails alone.

The commit itself is shielded from cancellation, so a caller's deadline never leaves a batch
half done; a caller cancelled while its write is queued takes it out of the queue.
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
#: Does many writes of one kind at once: ``fn(con, items, posts)`` returns one result per
#: item, in order, and may append to each item's post list. All or nothing: it raises if
#: any item fails (the writes are then retried one by one).
Group = Callable[[apsw.Connection, list[Any], list[Post]], list[Any]]


class _Job(Generic[T]):
    __slots__ = (
        "done",
        "error",
        "fn",
        "group",
        "item",
        "post",
        "promoted",
        "result",
        "taken",
        "wake",
    )

    def __init__(self, fn: WriteFn[T], group: Group | None, item: Any) -> None:
        self.fn = fn
        self.group = group
        self.item = item
        self.post: Post = []
        self.result: T | None = None
        self.error: BaseException | None = None
        self.taken = False
        self.done = False
        self.promoted = False
        self.wake = trio.Event()


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
        self._busy = False  # a committer runs, or has been handed the role
        self._exclusive = trio.Lock()  # held by the committer and by exclusive()
        self._limiter = trio.CapacityLimiter(1)
        self.batches = 0
        self.writes = 0

    async def write(self, fn: WriteFn[T], *, group: Group | None = None, item: Any = None) -> T:
        """Run ``fn(con, post)`` in the next group commit; its result once committed. With
        ``group``, the write may instead be done by ``group(con, [..., item, ...], posts)``
        together with other writes of that group."""
        job: _Job[T] = _Job(fn, group, item)
        self._queue.append(job)
        if self._busy:
            try:
                await job.wake.wait()
            except trio.Cancelled:
                if not job.taken:
                    self._queue.remove(job)
                if job.promoted:  # cannot happen once woken; never strand the role
                    self._hand_over()
                raise
        else:
            self._busy = True
        if not job.done:  # this caller commits
            with trio.CancelScope(shield=True):
                try:
                    async with self._exclusive:
                        while not job.done:
                            await self._commit_queued()
                finally:
                    self._hand_over()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def _hand_over(self) -> None:
        """Pass the committer role to the oldest queued write, or end it."""
        if self._queue:
            nxt = self._queue[0]
            nxt.promoted = True
            nxt.wake.set()
        else:
            self._busy = False

    async def exclusive(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn(con)`` on the writer's connection between group commits, outside any
        transaction (e.g. one step of an online backup)."""
        async with self._exclusive:
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
            job.wake.set()

    def _run(self, batch: list[_Job[Any]]) -> None:
        con = self.con
        with con:
            if self.before_commit is not None:
                self.before_commit(con)
            i = 0
            while i < len(batch):
                group = batch[i].group
                j = i + 1
                if group is not None:
                    while j < len(batch) and batch[j].group is group:
                        j += 1
                if j - i > 1 and group is not None and self._run_group(group, batch[i:j]):
                    i = j
                    continue
                for job in batch[i:j]:
                    self._run_one(job)
                i = j

    def _run_one(self, job: _Job[Any]) -> None:
        con = self.con
        try:
            with con:
                job.result = job.fn(con, job.post)
        except Exception as exc:
            job.error = exc
            job.post.clear()

    def _run_group(self, group: Group, jobs: list[_Job[Any]]) -> bool:
        """Do ``jobs`` with one call of ``group``; False (nothing done) if it failed."""
        con = self.con
        posts: list[Post] = [job.post for job in jobs]
        try:
            with con:
                results = group(con, [job.item for job in jobs], posts)
        except Exception:
            for post in posts:
                post.clear()
            return False
        for job, result in zip(jobs, results, strict=True):
            job.result = result
        return True
