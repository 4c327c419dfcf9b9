"""Group commit: one writer per database, many concurrent writes per transaction.

A write is a function of the connection run inside the current batch's transaction. Writes
queue up; one worker
thread at a time (the drainer, from trio's thread cache) takes every write queued so far,
commits them in one transaction, hands the batch back to the event loop, and goes on with
the writes queued meanwhile: under load it never waits for the event loop between batches
(a thread hop per batch cost about a millisecond of scheduling latency on a busy two-core
machine, more than the commit itself). When the queue is empty the drainer returns its
thread; the next write starts a new one, once the tasks running at that moment have run
(so the writes of a burst of requests share a commit instead of each having its own).

So concurrent writes share one COMMIT (and one fsync), the next batch gathers while the
current one commits, and each caller hears about its write only after its COMMIT: an
acknowledged write is a committed write. One write's failure fails that write alone: a
batch runs first in one savepoint with none per write (each statement is a trip for the
GIL, see below); if a write fails, the batch is rolled back to it and run again with a
savepoint per write of several statements, so the failing one rolls back alone (a write
of a single statement, ``atomic``, is its own savepoint). ``post`` callbacks that a write
registers run on the event loop after the COMMIT and before any caller of the batch is
woken (e.g. updating the vector matrix), batch after batch in commit order, so in-memory
state never runs ahead of the database.

Writes of the same kind that queue up together can also share their statements: a write
given a ``many`` function runs, with the writes next to it in the batch that name the same
function, as one call ``many(con, post, args)`` (e.g. one multi-row INSERT for a batch of
remembered facts). Each SQLite call releases the GIL, and under load the writer then waits
for the event loop to hand it back, so a batch's wall time grows with its number of SQLite
(and C) calls far more than with their work. When ``many`` cannot take the group it changes
nothing and each write runs alone through its own ``fn``.

Each caller waits parked on the event loop (no Event per write) and ``_finish`` wakes the
callers of a batch in one event-loop callback. A caller cancelled while its write is still
queued takes it out of the queue; once taken, the write completes (the caller just does not
wait for it).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import apsw
import outcome
import trio

from convergiod.runtime import Doorbell, Pending

log = logging.getLogger("convergiod.memory")

T = TypeVar("T")
Post = list[Callable[[], object]]
WriteFn = Callable[[apsw.Connection, Post], T]
#: ``many(con, post, args)``: the results of several writes' ``args`` in their order, or of
#: the first ones only (the others then run one by one through their own ``fn``; None: all
#: of them). It changes nothing when it raises; an ``apsw.Error`` then sends every write of
#: the group one by one, any other exception fails the batch. Its ``post`` callbacks are
#: for the writes it did.
ManyFn = Callable[[apsw.Connection, Post, list[Any]], list[Any] | None]


class _Retry(Exception):
    """A write of a batch run without savepoints failed: run the batch with them."""


class _Job(Generic[T]):
    __slots__ = (
        "abandoned",
        "arg",
        "atomic",
        "error",
        "exclusive",
        "fn",
        "many",
        "pending",
        "post",
        "result",
        "taken",
        "task",
        "translate",
    )

    def __init__(
        self,
        fn: Callable[..., T],
        exclusive: bool,
        atomic: bool = False,
        many: ManyFn | None = None,
        arg: Any = None,
        pending: Pending | None = None,
        translate: Callable[[BaseException], BaseException] | None = None,
    ) -> None:
        self.fn = fn
        #: For ``pending``: what a failure becomes (e.g. an apsw error, an ``OpError``).
        self.translate = translate
        self.exclusive = exclusive  # fn(con) outside any transaction, alone
        self.atomic = atomic  # needs no savepoint of its own
        self.many = many
        self.arg = arg
        self.post: Post = []
        self.result: T | None = None
        self.error: BaseException | None = None
        self.taken = False
        self.abandoned = False  # its caller was cancelled: nobody to wake
        #: Where the result goes: a parked task, or a ``Pending`` (``write_later``).
        self.pending: Pending | None = pending
        self.task = trio.lowlevel.current_task() if pending is None else None


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
        self._lock = threading.Lock()  # guards _queue, _running, job.taken
        self._queue: deque[_Job[Any]] = deque()
        self._running = False  # a drainer thread owns the connection
        self._idle = threading.Event()
        self._idle.set()
        self._token: trio.lowlevel.TrioToken | None = None
        #: The drainer is to be started by the kicker (``_schedule_kick``), not yet started.
        self._kick_pending = False
        self.batches = 0
        self.writes = 0

    async def write(
        self,
        fn: WriteFn[T],
        *,
        atomic: bool = False,
        many: ManyFn | None = None,
        arg: Any = None,
    ) -> T:
        """Run ``fn(con, post)`` in the next group commit; its result once committed.

        ``atomic``: ``fn`` changes the database with one statement at most and can fail
        only before or in it (SQLite undoes a failed statement by itself), so it runs
        without a savepoint. That matters: FTS5 writes its pending terms out as a new
        index segment at every savepoint, which made a savepoint per write cost more than
        the write.

        ``many`` (atomic writes only): run together with the neighbouring writes of the
        same ``many`` as ``many(con, post, [arg, ...])``; ``fn`` is the fallback."""
        if many is not None and not atomic:
            raise ValueError("only atomic writes can be grouped")
        return await self._submit(_Job(fn, exclusive=False, atomic=atomic, many=many, arg=arg))

    def write_later(
        self,
        fn: WriteFn[Any],
        *,
        atomic: bool = False,
        many: ManyFn | None = None,
        arg: Any = None,
        translate: Callable[[BaseException], BaseException] | None = None,
    ) -> Pending:
        """``write`` with no task waiting: the returned ``Pending`` is resolved with the
        result once committed (or failed, with ``translate(error)`` if given), on the Trio
        thread."""
        if many is not None and not atomic:
            raise ValueError("only atomic writes can be grouped")
        pending = Pending()
        self._enqueue(
            _Job(
                fn,
                exclusive=False,
                atomic=atomic,
                many=many,
                arg=arg,
                pending=pending,
                translate=translate,
            )
        )
        return pending

    async def exclusive(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run ``fn(con)`` on the writer's connection between group commits, outside any
        transaction (e.g. one step of an online backup)."""
        return await self._submit(_Job(fn, exclusive=True))

    async def _submit(self, job: _Job[T]) -> T:
        self._enqueue(job)

        def abort(_: Any) -> trio.lowlevel.Abort:
            with self._lock:
                if not job.taken:
                    self._queue.remove(job)
            job.abandoned = True  # on the event loop, like _finish: no race
            return trio.lowlevel.Abort.SUCCEEDED

        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def _enqueue(self, job: _Job[Any]) -> None:
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        with self._lock:
            self._queue.append(job)
            kick = not self._running
            if kick:
                self._running = True
                self._kick_pending = True
                self._idle.clear()
        if kick:
            self._schedule_kick()

    def _schedule_kick(self) -> None:
        """Start the drainer once the tasks that run now have run (the run's kicker, a task
        woken here, starts it): the writes they submit meanwhile join the same group
        commit. Started at once, the drainer would commit the first write alone while a
        burst of requests submits theirs one after another, each with its own COMMIT,
        fsync and wake-up of the event loop."""
        try:
            kicker = _KICKER.get()
        except LookupError:  # the first kick of this run
            kicker = _Kicker()
            try:
                trio.lowlevel.spawn_system_task(kicker.run, name="memory writer kicker")
            except RuntimeError:  # the run is ending: no more tasks, start it now
                self._kick()
                return
            _KICKER.set(kicker)
        if kicker.ended:  # cancelled with the run: nothing kicks any more, start it now
            self._kick()
            return
        kicker.schedule(self)

    def _kick(self) -> None:
        """Start the drainer if a kick is pending (any thread). If no thread can be started,
        the queued writes fail with that error (their callers hear it) and the writer stays
        usable."""
        with self._lock:
            if not self._kick_pending:
                return
            self._kick_pending = False
            if not self._queue:  # every queued write was withdrawn meanwhile
                self._running = False
                self._idle.set()
                return
        try:
            trio.lowlevel.start_thread_soon(self._drain, self._drained, name="memory writer")
        except Exception as exc:
            log.error("memory writer: cannot start its thread: %r", exc)
            with self._lock:
                jobs = list(self._queue)
                self._queue.clear()
                for job in jobs:
                    job.taken = True
                    job.error = exc
                self._running = False
                self._idle.set()
            if jobs and self._token is not None:
                self._token.run_sync_soon(self._finish, jobs)

    def wait_idle(self, timeout: float) -> bool:
        """Blocking: wait until no drainer runs (for closing the connection); a drainer
        that was about to start starts now."""
        self._kick()
        return self._idle.wait(timeout)

    # ------------------------------------------------------------------ the drainer thread

    def _take(self) -> list[_Job[Any]] | None:
        """The next batch (writes, or one exclusive job); None (and the drainer ends) when
        the queue is empty."""
        with self._lock:
            if not self._queue:
                self._running = False
                self._idle.set()
                return None
            if self._queue[0].exclusive:
                job = self._queue.popleft()
                job.taken = True
                return [job]
            batch: list[_Job[Any]] = []
            while self._queue and len(batch) < self.max_batch and not self._queue[0].exclusive:
                job = self._queue.popleft()
                job.taken = True
                batch.append(job)
            return batch

    def _drain(self) -> None:
        assert self._token is not None
        while (batch := self._take()) is not None:
            try:
                if batch[0].exclusive:
                    self._run_exclusive(batch[0])
                else:
                    self._run(batch)
            except BaseException as exc:  # a failed transaction fails its whole batch
                for job in batch:
                    job.error = exc
                    job.post.clear()
                if not isinstance(exc, Exception):
                    self._token.run_sync_soon(self._finish, batch)
                    raise
            self._token.run_sync_soon(self._finish, batch)

    def _drained(self, result: outcome.Outcome[None]) -> None:
        if isinstance(result, outcome.Error):  # pragma: no cover - _drain catches all
            log.error("memory writer thread failed: %r", result.error)
            with self._lock:
                self._running = False
                self._idle.set()

    def _run_exclusive(self, job: _Job[Any]) -> None:
        try:
            job.result = job.fn(self.con)
        except Exception as exc:
            job.error = exc

    def _run(self, batch: list[_Job[Any]]) -> None:
        # Plain statements, not apsw's "with con:": apsw runs the statements of its context
        # manager (COMMIT: the WAL writes and the fsync) holding the GIL, which would stall
        # the event loop; execute() releases it while SQLite works.
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        try:
            if self.before_commit is not None:
                self.before_commit(con)
            if all(job.atomic for job in batch) or not self._run_hopefully(batch):
                self._run_jobs(batch, self._run_one)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def _run_jobs(self, batch: list[_Job[Any]], run_one: Callable[[_Job[Any]], None]) -> None:
        i, n = 0, len(batch)
        while i < n:
            many = batch[i].many
            if many is not None:
                j = i + 1
                while j < n and batch[j].many is many:
                    j += 1
                if j - i > 1:
                    i += self._run_many(many, batch[i:j])
                for job in batch[i:j]:
                    run_one(job)
                i = j
                continue
            run_one(batch[i])
            i += 1

    def _run_hopefully(self, batch: list[_Job[Any]]) -> bool:
        """Run the batch in one savepoint, with none per write: True if every write
        succeeded. Otherwise nothing of the batch stays (rolled back to the savepoint) and
        False: the caller runs it again with a savepoint per write that needs one, so a
        failing write fails alone. Writes rarely fail (their input is checked before they
        are queued), and each statement costs the writer a trip for the GIL while the event
        loop holds it: two statements less per write. A write's ``fn`` must not have effects
        outside the database but through ``post`` (it may run twice)."""
        con = self.con
        con.execute("SAVEPOINT batch")
        try:
            self._run_jobs(batch, self._run_plain)
        except _Retry:
            if not con.in_transaction:  # SQLite rolled it all back (e.g. FULL)
                raise
            con.execute("ROLLBACK TO batch")
            con.execute("RELEASE batch")
            for job in batch:
                job.result = job.error = None
                job.post.clear()
            return False
        con.execute("RELEASE batch")
        return True

    def _run_plain(self, job: _Job[Any]) -> None:
        if job.atomic:  # a failing single statement leaves nothing: it fails alone here too
            self._run_one(job)
            return
        try:
            job.result = job.fn(self.con, job.post)
        except Exception as exc:
            if not self.con.in_transaction:
                raise
            raise _Retry() from exc

    def _run_many(self, many: ManyFn, group: list[_Job[Any]]) -> int:
        """The group as one call of ``many``: how many of its writes (from the first) it
        did; the caller runs the others one by one."""
        post: Post = []
        try:
            results = many(self.con, post, [job.arg for job in group])
        except apsw.Error:
            if not self.con.in_transaction:  # SQLite rolled it all back (e.g. FULL)
                raise
            return 0  # nothing changed: one by one, the failing write fails alone
        if not results:
            return 0
        if len(results) > len(group):  # a bug in many: the batch fails, its callers crash
            raise RuntimeError(f"{many!r} returned {len(results)} results for {len(group)}")
        for job, result in zip(group, results, strict=False):
            job.result = result
        group[0].post.extend(post)
        return len(results)

    def _run_one(self, job: _Job[Any]) -> None:
        con = self.con
        if job.atomic:
            try:
                job.result = job.fn(con, job.post)
            except Exception as exc:
                job.error = exc
                job.post.clear()
                if not con.in_transaction:  # SQLite rolled it all back (e.g. FULL)
                    raise
            return
        con.execute("SAVEPOINT job")
        try:
            job.result = job.fn(con, job.post)
        except Exception as exc:
            job.error = exc
            job.post.clear()
            con.execute("ROLLBACK TO job")
        con.execute("RELEASE job")

    # ------------------------------------------------------------------ back on the event loop

    def _finish(self, batch: list[_Job[Any]]) -> None:
        if not batch[0].exclusive:
            self.batches += 1
            self.writes += len(batch)
        for job in batch:
            if job.error is None:
                for callback in job.post:
                    try:
                        callback()
                    except Exception as exc:  # a bug: its caller raises it (and crashes)
                        job.error = exc
        reschedule = trio.lowlevel.reschedule
        for job in batch:
            if job.abandoned:
                continue
            pending = job.pending
            if pending is not None:
                if job.error is None:
                    pending.resolve(job.result)
                elif job.translate is not None:
                    pending.fail(job.translate(job.error))
                else:
                    pending.fail(job.error)
            else:
                assert job.task is not None
                if job.error is None:
                    reschedule(job.task, outcome.Value(job.result))
                else:
                    reschedule(job.task, outcome.Error(job.error))


class _Kicker:
    """One per Trio run: starts the drainers of the writers that have writes waiting for a
    kick, once the tasks that were running when they asked have run. Holds a writer only
    until its kick (a closed writer is not kept alive by it)."""

    def __init__(self) -> None:
        self._writers: list[Writer] = []
        self._bell = Doorbell()
        self.ended = False

    def schedule(self, writer: Writer) -> None:
        self._writers.append(writer)
        self._bell.ring()

    async def run(self) -> None:
        try:
            while True:
                self._kick_all()
                if not self._writers:
                    await self._bell.wait()
        finally:
            self.ended = True
            self._kick_all()  # what was scheduled meanwhile starts now

    def _kick_all(self) -> None:
        writers, self._writers = self._writers, []
        for writer in writers:
            writer._kick()  # never raises (a failure fails that writer's writes)


_KICKER: trio.lowlevel.RunVar[_Kicker] = trio.lowlevel.RunVar("memory writer kicker")
