"""The memory actor: owns every tenant database and answers the messages of ``messages``.

Many messages are worked on at once (``concurrency``): that is what lets concurrent writes
meet in one group commit and reads run beside them. Expected failures are ``OpError`` replies
(``reply_errors``); a tenant whose database is corrupt or unreadable fails its own requests
with ``unavailable`` and is retried at its next request, while other tenants keep working.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import apsw
import outcome
import trio

from convergiod import native
from convergiod.config import MemoryConfig
from convergiod.errors import OpError
from convergiod.runtime import NOT_NOW, Actor

from . import facts, ledger, schema, transfer
from . import messages as m
from .store import TenantDB, check_tenant, db_error

log = logging.getLogger("convergiod.memory")

T = TypeVar("T")
MAX_LIMIT = 1000
MAX_LABEL = 200


def _check_text(value: str, what: str, limit: int) -> None:
    if not value.strip():
        raise OpError("bad_request", f"{what} is empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise OpError("bad_request", f"{what} is not valid UTF-8 (lone surrogate)") from None
    if size > limit:
        raise OpError("bad_request", f"{what} is {size} bytes; the limit is {limit}")


def _check_label(value: str | None, what: str) -> None:
    if value is not None and not 0 < len(value) <= MAX_LABEL:
        raise OpError("bad_request", f"{what} must have 1 to {MAX_LABEL} characters")


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise OpError("bad_request", f"limit must be between 1 and {MAX_LIMIT}, got {limit}")


class MemoryActor(Actor):
    concurrency: ClassVar[int] = 256
    reply_errors: ClassVar[tuple[type[Exception], ...]] = (OpError,)

    def __init__(
        self,
        root: Path,
        config: MemoryConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.config = config
        self.clock = clock
        self._tenants: dict[str, TenantDB] = {}
        self._opening: dict[str, trio.Event] = {}
        self._open_limiter = trio.CapacityLimiter(2)
        self._handlers: dict[type, Callable[[TenantDB, Any], Awaitable[Any]]] = {
            m.Remember: self._remember,
            m.Search: self._search,
            m.Forget: self._forget,
            m.AppendMessage: self._append_message,
            m.History: self._history,
            m.RecordUsage: self._record_usage,
            m.UsageQuery: self._usage,
            m.Spent: self._spent,
            m.LookupApproval: self._lookup_approval,
            m.RememberApproval: self._remember_approval,
            m.SaveTask: self._save_task,
            m.SaveStep: self._save_step,
            m.SaveSteps: self._save_steps,
            m.LoadTask: self._load_task,
            m.ListTasks: self._list_tasks,
            m.Stats: self._stats,
            m.Export: self._export,
            m.Import: self._import,
            m.Backup: self._backup,
        }
        #: Writes that ``handle_now`` submits to the group commit with no task: each makes
        #: the arguments of ``TenantDB.write`` (after checking the message).
        self._writes: dict[type, Callable[[TenantDB, Any], dict[str, Any]]] = {
            m.Remember: self._remember_write,
            m.AppendMessage: self._append_message_write,
            m.RecordUsage: self._record_usage_write,
            m.SaveTask: self._save_task_write,
            m.SaveStep: self._save_step_write,
            m.SaveSteps: self._save_steps_write,
        }

    # ------------------------------------------------------------------ lifecycle

    async def handle(self, msg: Any) -> Any:
        handler = self._handlers.get(type(msg))
        if handler is None:
            raise TypeError(f"memory actor cannot handle {type(msg).__name__}")
        db = await self.tenant(msg.tenant)
        return await handler(db, msg)

    async def stopping(self) -> None:
        tenants, self._tenants = list(self._tenants.values()), {}
        for db in tenants:
            await trio.to_thread.run_sync(db.close)

    def path_of(self, tenant: str) -> Path:
        return self.root / f"{check_tenant(tenant)}.db"

    async def tenant(self, name: str) -> TenantDB:
        """The open database of ``name``, opened (and migrated) on first use."""
        db = self._tenants.get(name)
        if db is not None and db.broken is None:
            return db  # the common case, first
        path = self.path_of(name)
        while True:
            db = self._tenants.get(name)
            if db is not None:
                if db.broken is None:
                    return db
                # Reopen: the operator may have fixed the file. The old connections close
                # when the requests still holding them finish.
                del self._tenants[name]
                continue
            opening = self._opening.get(name)
            if opening is None:
                break
            await opening.wait()
            if name not in self._tenants:
                break
        done = self._opening[name] = trio.Event()
        try:
            db = await trio.to_thread.run_sync(
                TenantDB.open, name, path, self.config, limiter=self._open_limiter
            )
        except apsw.Error as exc:
            error = db_error(exc, name, path)
            log.error("tenant %s: %s", name, error.message)
            raise error from exc
        except schema.SchemaTooNew as exc:
            raise OpError("unavailable", f"memory of tenant {name!r} ({path}): {exc}") from exc
        except OSError as exc:
            raise OpError("unavailable", f"memory of tenant {name!r}: {path}: {exc}") from exc
        finally:
            del self._opening[name]
            done.set()
        self._tenants[name] = db
        return db

    # ------------------------------------------------------------------ facts

    def handle_now(self, msg: Any) -> Any:
        """In a tenant whose database is open: a write (a fact to remember without
        ``supersedes``, a conversation message, a usage record, a task record or
        checkpoint) is submitted to the group commit at once and answered by a ``Pending``
        resolved after the COMMIT (no task waits for it); a search of a tenant that has no
        facts is answered at once (nothing to read). Everything else goes through the
        mailbox."""
        kind = type(msg)
        make = self._writes.get(kind)
        if make is None and kind is not m.Search:
            return NOT_NOW
        db = self._tenants.get(msg.tenant)
        if db is None or db.broken is not None:
            return NOT_NOW
        if make is not None:
            if kind is m.Remember and msg.supersedes is not None:
                return NOT_NOW
            pending = db.write_later(**make(db, msg))
            pending.on_done(self._crash_on_bug)
            return pending
        if len(db.index):
            return NOT_NOW
        self._check_search(msg)
        return []

    def _crash_on_bug(self, result: outcome.Outcome[Any]) -> None:
        """A deferred write that failed with anything but an expected error (a bug, e.g.
        in the vector index after the commit) crashes the actor, as it would from
        ``handle``: the restarted instance rebuilds its state from the database."""
        cell = self._cell
        bug = isinstance(result, outcome.Error) and not isinstance(result.error, OpError)
        if bug and cell is not None and cell.instance is self:
            assert isinstance(result, outcome.Error)
            cell.crash(result.error)

    def _remember_write(self, db: TenantDB, msg: m.Remember) -> dict[str, Any]:
        """Check a fact to remember; the write that stores it (``TenantDB.write``'s
        arguments). Without ``supersedes`` it is one INSERT, shared with the writes queued
        beside it."""
        _check_text(msg.text, "fact", self.config.max_fact_bytes)
        _check_label(msg.kind, "kind")
        _check_label(msg.source, "source")
        _check_label(msg.conversation, "conversation")
        if not 0.0 <= msg.importance <= 1.0:
            raise OpError("bad_request", "importance must be between 0 and 1")
        # The embedding here, not in the writer: a call into C releases the GIL, and the
        # writer would wait to get it back once per fact (see writer.py).
        now, index = self.clock(), db.index
        vector = native.embed_bytes(msg.text, index.dim)
        write: dict[str, Any] = {
            "fn": lambda con, post: facts.remember(con, post, msg, now, index, vector)
        }
        if msg.supersedes is None:
            write.update(
                atomic=True,
                many=facts.remember_many,
                arg=facts.RememberItem(msg, now, index, vector),
            )
        return write

    async def _remember(self, db: TenantDB, msg: m.Remember) -> m.Fact:
        fact: m.Fact = await db.write(**self._remember_write(db, msg))
        return fact

    async def _forget(self, db: TenantDB, msg: m.Forget) -> bool:
        return await db.write(
            lambda con, post: facts.forget(con, post, msg.id, db.index), atomic=True
        )

    def _check_search(self, msg: m.Search) -> None:
        _check_text(msg.query, "query", self.config.max_fact_bytes)
        _check_limit(msg.limit)

    async def _search(self, db: TenantDB, msg: m.Search) -> list[m.Hit]:
        self._check_search(msg)
        total = len(db.index)
        if not total:  # no facts at all (every fact is in the index): nothing to read
            return []
        filt = facts.Filter(
            at=self.clock() if msg.at is None else msg.at,
            kind=msg.kind,
            conversation=msg.conversation,
        )
        n = 2 * max(msg.limit, 10)
        words = facts.query_words(msg.query)
        last_id = db.index.last_id
        snapshot = db.index.snapshot()
        dim = db.index.dim
        min_similarity = self.config.min_similarity

        def vector(con: apsw.Connection) -> list[tuple[m.Fact, float]]:
            query = native.embed(msg.query, dim).tobytes()
            return facts.vector_candidates(con, snapshot, query, filt, n, min_similarity)

        keyword: list[m.Fact] = []
        similar: list[tuple[m.Fact, float]] = []
        errors: list[BaseException] = []

        async def run_keyword() -> None:
            nonlocal keyword
            try:
                keyword = await db.read(
                    facts.keyword_candidates, words, filt, n, db.terms, total, last_id
                )
            except OpError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            if words:
                nursery.start_soon(run_keyword)
            try:
                similar = await db.read(vector)
            except OpError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        hits = facts.fuse(keyword, similar, msg.limit)
        for hit in hits:
            db.pending_access[hit.fact.id] = db.pending_access.get(hit.fact.id, 0) + 1
        return hits

    async def _stats(self, db: TenantDB, msg: m.Stats) -> m.MemoryStats:
        counts = await db.read(facts.stats)
        return m.MemoryStats(
            tenant=db.tenant,
            vectors=len(db.index),
            dim=db.index.dim,
            writes=db.writer.writes,
            group_commits=db.writer.batches,
            **counts,
        )

    # ------------------------------------------------------------------ conversations

    def _check_message(self, msg: m.AppendMessage) -> None:
        _check_label(msg.conversation, "conversation")
        if msg.tokens < 0 or msg.cost < 0:
            raise OpError("bad_request", "tokens and cost must not be negative")

    def _append_message_write(self, db: TenantDB, msg: m.AppendMessage) -> dict[str, Any]:
        self._check_message(msg)
        now = self.clock()
        return {"fn": lambda con, post: ledger.append_message(con, post, msg, now)}

    async def _append_message(self, db: TenantDB, msg: m.AppendMessage) -> int:
        answer: int = await db.write(**self._append_message_write(db, msg))
        return answer

    async def _history(self, db: TenantDB, msg: m.History) -> list[m.StoredMessage]:
        _check_limit(msg.limit)
        return await db.read(ledger.history, msg.conversation, msg.limit)

    # ------------------------------------------------------------------ usage

    def _record_usage_write(self, db: TenantDB, msg: m.RecordUsage) -> dict[str, Any]:
        _check_label(msg.request_id, "request_id")
        now = self.clock()
        # One statement: atomic, no savepoint of its own.
        return {"fn": lambda con, post: ledger.record_usage(con, post, msg, now), "atomic": True}

    async def _record_usage(self, db: TenantDB, msg: m.RecordUsage) -> bool:
        answer: bool = await db.write(**self._record_usage_write(db, msg))
        return answer

    async def _usage(self, db: TenantDB, msg: m.UsageQuery) -> list[m.UsageRow]:
        return await db.read(ledger.usage, msg.by, msg.since)

    async def _spent(self, db: TenantDB, msg: m.Spent) -> float:
        return await db.read(ledger.spent, msg.agent, msg.since)

    # ------------------------------------------------------------------ approvals

    async def _lookup_approval(self, db: TenantDB, msg: m.LookupApproval) -> bool:
        return await db.read(ledger.lookup_approval, msg.tool, msg.key)

    async def _remember_approval(self, db: TenantDB, msg: m.RememberApproval) -> None:
        now = self.clock()
        await db.write(
            lambda con, post: ledger.remember_approval(con, post, msg.tool, msg.key, now)
        )

    # ------------------------------------------------------------------ tasks

    def _save_task_write(self, db: TenantDB, msg: m.SaveTask) -> dict[str, Any]:
        _check_label(msg.task, "task")
        now = self.clock()
        message = msg.message
        if message is None:
            # One statement: atomic, no savepoint of its own.
            return {"fn": lambda con, post: ledger.save_task(con, post, msg, now), "atomic": True}
        if message.tenant != msg.tenant:
            raise OpError("bad_request", "a task's message must be of the task's tenant")
        self._check_message(message)
        if message.parent is None:
            # The record and the message in one statement (schema version 4), its tokens
            # counted here (the C estimate, on the event loop: microseconds per kilobyte):
            # the writer's thread makes one SQLite call for it, no C call.
            tokens = message.tokens or native.estimate_tokens(message.content)
            return {
                "fn": lambda con, post: ledger.save_task_record(con, msg, message, tokens, now),
                "atomic": True,
            }

        def both(con: apsw.Connection, post: Any) -> None:
            ledger.save_task(con, post, msg, now)
            ledger.append_message(con, post, message, now)

        return {"fn": both}

    async def _save_task(self, db: TenantDB, msg: m.SaveTask) -> None:
        await db.write(**self._save_task_write(db, msg))

    def _save_step_write(self, db: TenantDB, msg: m.SaveStep) -> dict[str, Any]:
        _check_label(msg.step, "step")
        now = self.clock()
        return {"fn": lambda con, post: ledger.save_step(con, post, msg, now)}

    async def _save_step(self, db: TenantDB, msg: m.SaveStep) -> bool:
        answer: bool = await db.write(**self._save_step_write(db, msg))
        return answer

    def _save_steps_write(self, db: TenantDB, msg: m.SaveSteps) -> dict[str, Any]:
        if not msg.steps:
            raise OpError("bad_request", "no steps to save")
        for step, _, _ in msg.steps:
            _check_label(step, "step")
        now = self.clock()
        return {"fn": lambda con, post: ledger.save_steps(con, post, msg, now)}

    async def _save_steps(self, db: TenantDB, msg: m.SaveSteps) -> list[bool]:
        answer: list[bool] = await db.write(**self._save_steps_write(db, msg))
        return answer

    async def _load_task(self, db: TenantDB, msg: m.LoadTask) -> m.TaskRecord:
        return await db.read(ledger.load_task, msg.task)

    async def _list_tasks(self, db: TenantDB, msg: m.ListTasks) -> list[m.TaskRecord]:
        _check_limit(msg.limit)
        return await db.read(ledger.list_tasks, msg.status, msg.limit)

    # ------------------------------------------------------------------ transfer

    async def _export(self, db: TenantDB, msg: m.Export) -> m.Transferred:
        n = await transfer.export(db, msg.path, msg.progress or transfer._no_progress)
        return m.Transferred(path=msg.path, records=n)

    async def _import(self, db: TenantDB, msg: m.Import) -> m.Transferred:
        read, added = await transfer.import_(
            db, msg.path, self.config.max_fact_bytes, msg.progress or transfer._no_progress
        )
        return m.Transferred(path=msg.path, records=read, added=added)

    async def _backup(self, db: TenantDB, msg: m.Backup) -> m.Transferred:
        pages = await transfer.backup(db, msg.path, msg.progress or transfer._no_progress)
        return m.Transferred(path=msg.path, records=pages)
