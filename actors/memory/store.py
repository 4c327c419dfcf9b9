"""One tenant's database: its connections, its writer, its vector matrix, its errors.

The writer connection belongs to the ``Writer`` (group commit); reads run on a small pool of
other connections in worker threads, so with WAL they never wait for the writer and the
writer never waits for them.
"""

from __future__ import annotations

import logging
import queue
import re
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import apsw
import trio

from convergiod.config import MemoryConfig
from convergiod.errors import OpError
from convergiod.runtime import Pending

from . import schema
from .terms import VOCAB_DDL, TermStats
from .vectors import VectorIndex
from .writer import ManyFn, WriteFn, Writer

log = logging.getLogger("convergiod.memory")

T = TypeVar("T")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def scalar(con: apsw.Connection, sql: str, params: Any = ()) -> Any:
    """The first column of the first row (queries that always return one row)."""
    row = con.execute(sql, params).fetchone()
    if row is None:
        raise LookupError(f"no row from {sql!r}")
    return row[0]


def check_tenant(tenant: str) -> str:
    """A tenant name that is safe as a file name: no separators, no ``..``, no hidden files."""
    if not _TENANT.fullmatch(tenant) or ".." in tenant:
        raise OpError("bad_request", f"invalid tenant name {tenant!r}")
    return tenant


def db_error(exc: apsw.Error, tenant: str, path: Path) -> OpError:
    """The client's view of a database failure: a code and a message that says what to do."""
    where = f"memory of tenant {tenant!r} ({path})"
    if isinstance(exc, apsw.FullError):
        return OpError("unavailable", f"{where}: the disk or the database size limit is full")
    if isinstance(exc, apsw.ReadOnlyError | apsw.PermissionsError):
        return OpError("unavailable", f"{where} is read-only: {exc}")
    if isinstance(exc, apsw.CantOpenError):
        return OpError("unavailable", f"{where} cannot be opened: {exc}")
    if isinstance(exc, apsw.CorruptError | apsw.NotADBError):
        return OpError(
            "unavailable", f"{where} is corrupt or not a database ({exc}); restore a backup"
        )
    if isinstance(exc, apsw.IOError):
        return OpError("unavailable", f"{where}: disk I/O error: {exc}")
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return OpError("unavailable", f"{where} is locked by another process: {exc}")
    return OpError("internal", f"{where}: {type(exc).__name__}: {exc}")


#: Errors after which the connections are not trusted any more: the tenant is reopened.
FATAL = (apsw.CorruptError, apsw.NotADBError, apsw.IOError, apsw.CantOpenError)


def _connect(path: Path, config: MemoryConfig) -> apsw.Connection:
    con = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
    con.set_busy_timeout(5000)
    con.config(apsw.SQLITE_DBCONFIG_DQS_DML, 0)
    con.config(apsw.SQLITE_DBCONFIG_DQS_DDL, 0)
    con.pragma("foreign_keys", True)
    con.pragma("synchronous", config.synchronous.upper())
    if config.max_db_mib:
        page = int(con.pragma("page_size"))
        con.pragma("max_page_count", config.max_db_mib * (1 << 20) // page)
    return con


def _connect_reader(path: Path, config: MemoryConfig) -> apsw.Connection:
    con = _connect(path, config)
    con.execute(VOCAB_DDL)  # temp schema: before the connection becomes query_only
    return con


class Readers:
    """A pool of read connections, each used by one worker thread at a time."""

    def __init__(self, opener: Callable[[], apsw.Connection], size: int) -> None:
        self._opener = opener
        self._free: queue.SimpleQueue[apsw.Connection] = queue.SimpleQueue()
        self._all: list[apsw.Connection] = []
        self.limiter = trio.CapacityLimiter(size)

    def _checkout(self) -> apsw.Connection:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            con = self._opener()
            con.pragma("query_only", True)
            self._all.append(con)
            return con

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        con = self._checkout()
        try:
            return fn(con, *args)
        finally:
            if con.in_transaction:
                con.execute("ROLLBACK")
            self._free.put(con)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(con, *args)`` on a worker thread with a read connection."""
        return await trio.to_thread.run_sync(self._call, fn, args, limiter=self.limiter)

    @asynccontextmanager
    async def hold(self) -> Any:
        """One connection for several thread calls (a long read such as an export), yielded
        as ``run(fn, *args)``."""
        async with self.limiter:
            con = await trio.to_thread.run_sync(self._checkout)
            solo = trio.CapacityLimiter(1)

            async def run(fn: Callable[..., T], *args: Any) -> T:
                return await trio.to_thread.run_sync(fn, con, *args, limiter=solo)

            try:
                yield run
            finally:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                self._free.put(con)

    def close(self) -> None:
        for con in self._all:
            con.close()
        self._all.clear()


class TenantDB:
    """An open tenant database. Make it with ``TenantDB.open`` (blocking: call in a thread)."""

    def __init__(self, tenant: str, path: Path, config: MemoryConfig) -> None:
        self.tenant = tenant
        self.path = path
        self.config = config
        self.index = VectorIndex(config.dim)
        self.terms = TermStats()
        self.pending_access: dict[int, int] = {}
        self.broken: str | None = None
        self.schema_found = 0
        self.con = _connect(path, config)
        self.writer = Writer(self.con, max_batch=config.max_batch, before_commit=self._flush)
        self.readers = Readers(lambda: _connect_reader(path, config), config.readers)

    @classmethod
    def open(cls, tenant: str, path: Path, config: MemoryConfig) -> TenantDB:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = cls(tenant, path, config)
        try:
            db._prepare()
        except BaseException:
            db.close()
            raise
        return db

    def _prepare(self) -> None:
        con = self.con
        mode = str(con.pragma("journal_mode", "wal")).lower()
        if mode != "wal":
            log.warning("tenant %s: journal_mode is %s, not wal", self.tenant, mode)
        self.schema_found = schema.migrate(con)
        if self.schema_found != schema.VERSION:
            log.info(
                "tenant %s: schema migrated from %d to %d",
                self.tenant,
                self.schema_found,
                schema.VERSION,
            )
        self._load_vectors()
        con.execute(VOCAB_DDL)
        self.terms.prefill(con, len(self.index))

    def _load_vectors(self) -> None:
        """Rebuild the in-memory matrix from the table, re-embedding rows whose stored
        vector does not have the configured dimension."""
        from convergiod import native

        want = 4 * self.config.dim
        stale: list[tuple[int, bytes]] = []
        for fid, text, blob in self.con.execute(
            "SELECT id, text, embedding FROM facts ORDER BY id"
        ):
            if blob is None or len(blob) != want:
                blob = native.embed(text, self.config.dim).tobytes()
                stale.append((fid, blob))
            self.index.add(fid, blob)
        if stale:
            with self.con:
                self.con.executemany(
                    "UPDATE facts SET embedding = ? WHERE id = ?", [(b, f) for f, b in stale]
                )

    def _flush(self, con: apsw.Connection) -> None:
        """Access counts of search hits, written with the next group commit."""
        if self.pending_access:
            pending, self.pending_access = self.pending_access, {}
            con.executemany(
                "UPDATE facts SET access_count = access_count + ? WHERE id = ?",
                [(n, fid) for fid, n in pending.items()],
            )

    # ------------------------------------------------------------------ async API

    async def write(
        self, fn: WriteFn[T], *, atomic: bool = False, many: ManyFn | None = None, arg: Any = None
    ) -> T:
        self._check()
        try:
            return await self.writer.write(fn, atomic=atomic, many=many, arg=arg)
        except apsw.Error as exc:
            raise self._failed(exc) from exc

    def write_later(
        self, fn: WriteFn[Any], *, atomic: bool = False, many: ManyFn | None = None, arg: Any = None
    ) -> Pending:
        """``write`` with no task waiting (see ``Writer.write_later``); database errors
        arrive as ``OpError``, as from ``write``."""
        self._check()
        return self.writer.write_later(
            fn, atomic=atomic, many=many, arg=arg, translate=self._translate
        )

    def _translate(self, exc: BaseException) -> BaseException:
        return self._failed(exc) if isinstance(exc, apsw.Error) else exc

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        self._check()
        try:
            return await self.readers.run(fn, *args)
        except apsw.Error as exc:
            raise self._failed(exc) from exc

    def _check(self) -> None:
        if self.broken is not None:
            raise OpError("unavailable", self.broken)

    def _failed(self, exc: apsw.Error) -> OpError:
        error = db_error(exc, self.tenant, self.path)
        if isinstance(exc, FATAL):
            self.broken = error.message
            log.error("tenant %s: %s", self.tenant, error.message)
        return error

    def close(self) -> None:
        """Blocking: flush pending access counts and close every connection."""
        if not self.writer.wait_idle(30.0):
            log.warning("tenant %s: the writer is still busy; closing anyway", self.tenant)
        try:
            if self.pending_access and self.broken is None:
                with self.con:
                    self._flush(self.con)
        except apsw.Error as exc:
            log.warning("tenant %s: access counts not saved: %s", self.tenant, exc)
        finally:
            self.readers.close()
            self.con.close()
