"""The memory actor's fast paths: the group-commit writer, the int8 preselection of the vector
matrix, and the cost-bounded keyword plans. Each must give the same answers as the plain way
(or the documented approximation), only faster."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import apsw
import pytest
import trio
import trio.testing

from convergiod import native
from convergiod.actors.memory import facts, vectors
from convergiod.actors.memory import messages as m
from convergiod.actors.memory.actor import MemoryActor
from convergiod.actors.memory.store import TenantDB
from convergiod.actors.memory.terms import TermStats
from convergiod.actors.memory.writer import Writer
from convergiod.config import MemoryConfig
from convergiod.errors import OpError

# ----------------------------------------------------------------------------- writer


def _writer(tmp_path: Path, max_batch: int = 4) -> Writer:
    con = apsw.Connection(str(tmp_path / "w.db"))
    con.execute("CREATE TABLE t (v INTEGER UNIQUE)")
    return Writer(con, max_batch=max_batch)


def _insert(v: int) -> object:
    def fn(con: apsw.Connection, post: list[object]) -> int:
        con.execute("INSERT INTO t (v) VALUES (?)", (v,))
        return v

    return fn


async def test_writer_commits_every_write_once_in_batches(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    got: list[int] = []

    async def one(v: int) -> None:
        got.append(await w.write(_insert(v)))  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        for v in range(50):
            nursery.start_soon(one, v)
    assert sorted(got) == list(range(50))
    assert w.writes == 50 and w.batches < 50  # several writes per commit, max_batch 4
    assert await trio.to_thread.run_sync(w.wait_idle, 10.0)
    assert [r[0] for r in w.con.execute("SELECT v FROM t ORDER BY v")] == list(range(50))
    assert not w._running and not w._queue


async def test_writes_submitted_in_one_scheduler_pass_share_one_commit(tmp_path: Path) -> None:
    """A burst of writes (each request's task submitting one in turn, in the same pass of
    the scheduler) goes to one group commit: the drainer starts after them, not with the
    first one (which would then commit alone)."""
    w = _writer(tmp_path, max_batch=100)
    pendings = []
    for v in range(10):
        pendings.append(w.write_later(_insert(v)))  # type: ignore[arg-type]
        time.sleep(0.005)  # noqa: ASYNC251 (a busy step: a drainer started now would commit)
    assert w._running and not w._idle.is_set()
    await trio.testing.wait_all_tasks_blocked()
    assert await trio.to_thread.run_sync(w.wait_idle, 10.0)
    await trio.testing.wait_all_tasks_blocked()
    assert all(p.done for p in pendings)
    assert (w.batches, w.writes) == (1, 10)


async def test_closing_with_a_commit_about_to_start_runs_it(tmp_path: Path) -> None:
    """``wait_idle`` (closing the connection) on the event loop's own thread, right after a
    write: the drainer that was to start with the next pass starts now, no deadlock."""
    w = _writer(tmp_path)
    pending = w.write_later(_insert(7))  # type: ignore[arg-type]
    assert w.wait_idle(10.0)  # blocking, on the Trio thread
    assert [r[0] for r in w.con.execute("SELECT v FROM t")] == [7]
    await trio.testing.wait_all_tasks_blocked()  # the completion reaches the loop
    assert pending.done and w.batches == 1


async def test_a_writer_done_with_is_not_kept_alive_by_its_kicker(tmp_path: Path) -> None:
    import gc
    import weakref

    w = _writer(tmp_path)
    await w.write(_insert(1))  # type: ignore[arg-type]
    assert await trio.to_thread.run_sync(w.wait_idle, 10.0)
    await trio.testing.wait_all_tasks_blocked()
    gone = weakref.ref(w)
    w.con.close()
    del w
    gc.collect()
    assert gone() is None


async def test_no_thread_for_the_writer_fails_its_writes_and_it_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drainer's thread cannot be started (threads exhausted): the queued writes fail
    with that error, the event loop goes on, and the next write works."""
    w = _writer(tmp_path)
    real = trio.lowlevel.start_thread_soon

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(trio.lowlevel, "start_thread_soon", refuse)
    pending = w.write_later(_insert(1))  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="can't start new thread"):
        await w.write(_insert(2))  # type: ignore[arg-type]
    assert pending.done and w._idle.is_set() and not w._queue
    monkeypatch.setattr(trio.lowlevel, "start_thread_soon", real)
    assert await w.write(_insert(3)) == 3  # type: ignore[arg-type]
    assert [r[0] for r in w.con.execute("SELECT v FROM t")] == [3]


async def test_writes_after_the_runs_kicker_ended_still_commit(tmp_path: Path) -> None:
    """The kicker (a system task) is cancelled when the run ends; a write made after that
    (from another system task's cleanup) starts its drainer itself instead of waiting for
    a kick that will not come."""
    from convergiod.actors.memory.writer import _KICKER

    w = _writer(tmp_path)
    assert await w.write(_insert(1)) == 1  # type: ignore[arg-type]
    _KICKER.get().ended = True
    with trio.fail_after(10):
        assert await w.write(_insert(2)) == 2  # type: ignore[arg-type]


async def test_writer_failure_and_cancellation_stay_with_their_own_write(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    await w.write(_insert(1))  # type: ignore[arg-type]
    gate, entered = threading.Event(), threading.Event()
    results: dict[int, object] = {}

    def slow(con: apsw.Connection, post: list[object]) -> int:
        entered.set()
        gate.wait(10)
        con.execute("INSERT INTO t (v) VALUES (0)")
        return 0

    async def one(v: int) -> None:
        try:
            fn = slow if v == 0 else _insert(v)
            results[v] = await w.write(fn)  # type: ignore[arg-type]
        except apsw.ConstraintError as exc:
            results[v] = exc

    queued = trio.CancelScope()

    async def doomed() -> None:
        with queued:
            await w.write(_insert(999))  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0)  # its commit holds the writer until the gate opens
        assert await trio.to_thread.run_sync(entered.wait, 10.0)
        for v in (2, 1, 3):  # 1 is a duplicate: it fails alone
            nursery.start_soon(one, v)
        nursery.start_soon(doomed)
        await trio.testing.wait_all_tasks_blocked()
        assert len(w._queue) == 4
        queued.cancel()  # queued behind the running commit: taken out, never written
        await trio.testing.wait_all_tasks_blocked()
        assert len(w._queue) == 3
        gate.set()
        await trio.testing.wait_all_tasks_blocked()
        for v in (7, 8):  # later writes still find a committer
            nursery.start_soon(one, v)
    assert isinstance(results.pop(1), apsw.ConstraintError)
    assert results == {v: v for v in (0, 2, 3, 7, 8)}
    assert await trio.to_thread.run_sync(w.wait_idle, 10.0)
    values = {r[0] for r in w.con.execute("SELECT v FROM t")}
    assert values == {0, 1, 2, 3, 7, 8}
    assert not w._running and not w._queue


calls: list[int] = []


def _insert_many(con: apsw.Connection, post: list[object], values: list[int]) -> list[int]:
    """A ``many`` for ``_insert``: one INSERT of the values up to the first odd one above
    100 (for the test: the others go one by one)."""
    done = next((i for i, v in enumerate(values) if v > 100 and v % 2), len(values))
    if done:
        marks = ", ".join(["(?)"] * done)
        con.execute(f"INSERT INTO t (v) VALUES {marks}", values[:done])
    post.append(lambda: calls.append(done))
    return values[:done]


async def test_writer_groups_writes_that_share_a_many_function(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    w.max_batch = 64
    calls.clear()
    await w.write(_insert(0))  # type: ignore[arg-type]
    gate, entered = threading.Event(), threading.Event()

    def slow(con: apsw.Connection, post: list[object]) -> int:
        entered.set()
        gate.wait(10)
        return -1

    results: dict[int, object] = {}

    async def one(v: int) -> None:
        try:
            results[v] = await w.write(
                _insert(v),  # type: ignore[arg-type]
                atomic=True,
                many=_insert_many,  # type: ignore[arg-type]
                arg=v,
            )
        except apsw.ConstraintError as exc:
            results[v] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.write, slow)  # holds the writer while the next ones queue
        assert await trio.to_thread.run_sync(entered.wait, 10.0)
        for v in (1, 2, 3, 0, 4, 5):  # 0 is a duplicate: the group's INSERT fails
            nursery.start_soon(one, v)
            await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert isinstance(results.pop(0), apsw.ConstraintError)
    assert results == {v: v for v in (1, 2, 3, 4, 5)}
    assert calls == []  # the failed group ran one by one
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.write, slow)
        gate.clear()
        entered.clear()
        assert await trio.to_thread.run_sync(entered.wait, 10.0)
        for v in (102, 104, 105, 106, 108):  # 105: the many takes 102 and 104 only
            nursery.start_soon(one, v)
            await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert calls == [2]
    assert results == {v: v for v in (1, 2, 3, 4, 5, 102, 104, 105, 106, 108)}
    assert await trio.to_thread.run_sync(w.wait_idle, 10.0)
    values = {r[0] for r in w.con.execute("SELECT v FROM t")}
    assert values == {0, 1, 2, 3, 4, 5, 102, 104, 105, 106, 108}
    with pytest.raises(ValueError):
        await w.write(_insert(9), many=_insert_many)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- vectors


def _texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    words = [
        "owl",
        "river",
        "budget",
        "garden",
        "python",
        "server",
        "tea",
        "sky",
        "beach",
        "lamp",
        "rain",
        "fox",
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def test_quantized_search_matches_the_exact_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    dim = 64
    index = vectors.VectorIndex(dim)
    texts = _texts(3000)
    for i, text in enumerate(texts):
        index.add(10 + i, native.embed(text, dim).tobytes())
    for fid in range(10, 3010, 3):  # dead rows are masked out in both stages
        index.remove(fid)
    queries = [native.embed(q, dim).tobytes() for q in ["owl river", "tea", "python sky fox"]]
    monkeypatch.setattr(vectors, "QUANTIZED_MIN_ROWS", 10**9)
    exact = [index.snapshot().top_k(q, 25) for q in queries]
    monkeypatch.setattr(vectors, "QUANTIZED_MIN_ROWS", 0)
    quantized = [index.snapshot().top_k(q, 25) for q in queries]
    assert quantized == exact
    assert all(fid % 3 != 1 for hits in quantized for fid, _ in hits)


def test_index_rows_survive_growth_and_compaction() -> None:
    dim = 16
    index = vectors.VectorIndex(dim)
    rows = {i: native.embed(f"item {i} of {i % 7}", dim).tobytes() for i in range(1, 3001)}
    for fid, vec in rows.items():
        index.add(fid, vec)
    old = index.snapshot()
    for fid in range(1, 2001):
        index.remove(fid)  # past half dead: compacted into new buffers
    snap = index.snapshot()
    # compacted at the 1501st delete (more dead rows than live ones), 499 dead since
    assert (snap.n, len(index), index.rows, index.last_id) == (1499, 1000, 1499, 3000)
    assert old.n == 3000  # a reader's snapshot keeps its buffers
    q = native.embed("item 2500 of 1", dim).tobytes()
    assert snap.top_k(q, 1)[0][0] == 2500
    for row, fid in enumerate(snap.ids[: snap.n]):
        assert snap.alive[row] == (fid > 2000)
        assert bytes(snap.matrix[row * 4 * dim : (row + 1) * 4 * dim]) == rows[fid]
        qrow = bytes(snap.qmatrix[row * dim : (row + 1) * dim]) + bytes(
            snap.scales[4 * row : 4 * row + 4]
        )
        assert qrow == native.quantize_row(rows[fid])


# ----------------------------------------------------------------------------- keyword plans


def test_plan_keeps_the_exact_query_within_the_budget() -> None:
    plan = facts.plan_keywords(["owl", "tea"], {"owl": 10, "tea": 20}, 100_000, 100_000)
    assert plan == facts.KeywordPlan('"owl" OR "tea"')
    assert facts.plan_keywords([], {}, 10, 10) is None


def test_plan_bounds_the_work_of_common_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts, "KEYWORD_BUDGET", 1000)
    plan = facts.plan_keywords
    df = {"the": 90_000, "river": 30_000, "owl": 300, "lamp": 600, "fox": 900}
    # words in half the facts are dropped; the rarest that fit the budget are ranked
    assert plan(["the", "owl", "river", "lamp", "fox"], df, 100_000, 100_000) == (
        facts.KeywordPlan('"owl" OR "lamp"')
    )
    # only common words: bm25 over the most recent facts, as many as the budget allows
    got = plan(["the", "river"], df, 100_000, 100_000)
    assert got == facts.KeywordPlan('"river"', low=100_000 - 3333)
    # every word in half the facts or more: newest first, no bm25
    assert plan(["the"], df, 100_000, 100_000) == facts.KeywordPlan('"the"', recency=True)


async def test_keyword_plans_find_the_same_facts_on_a_real_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(facts, "KEYWORD_BUDGET", 40)
    db = await trio.to_thread.run_sync(TenantDB.open, "a", tmp_path / "a.db", MemoryConfig())
    try:
        now = time.time()
        for i in range(300):
            extra = " owl" if i in (5, 150, 290) else ""
            kind = "geo" if i % 50 == 0 else "note"
            msg = m.Remember(tenant="a", text=f"the common river flows {i}{extra}", kind=kind)
            await db.write(
                lambda con, post, msg=msg, i=i: facts.remember(con, post, msg, now + i, db.index)
            )  # type: ignore[misc]
        filt = facts.Filter(at=now + 1000)

        def search(words: list[str], n: int = 10, f: facts.Filter = filt) -> list[int]:
            return [
                x.id
                for x in facts.keyword_candidates(
                    db.readers._checkout(), words, f, n, db.terms, len(db.index), db.index.last_id
                )
            ]

        # a rare word ranks its facts, the common ones do not cost a full scan
        owls = await trio.to_thread.run_sync(search, ["common", "owl"])
        assert sorted(owls) == [6, 151, 291]
        # only common words: the newest matching facts, newest first
        assert await trio.to_thread.run_sync(search, ["river"], 5) == [300, 299, 298, 297, 296]
        # a filter that keeps few facts widens the window until it finds them
        geo = facts.Filter(at=now + 1000, kind="geo")
        got = await trio.to_thread.run_sync(lambda: search(["flows"], 10, geo))
        assert sorted(got) == [1, 51, 101, 151, 201, 251]
        # the past: facts not valid yet are skipped, older ones found
        old = facts.Filter(at=now + 20)
        assert await trio.to_thread.run_sync(lambda: search(["river"], 3, old)) == [21, 20, 19]
    finally:
        await trio.to_thread.run_sync(db.close)


def test_term_counts_are_looked_up_once_and_refreshed_as_facts_grow(tmp_path: Path) -> None:
    con = apsw.Connection(str(tmp_path / "t.db"))
    con.execute("CREATE VIRTUAL TABLE facts_fts USING fts5(text, tokenize='porter unicode61')")
    con.execute("CREATE VIRTUAL TABLE temp.facts_vocab USING fts5vocab(main, facts_fts, row)")
    for i in range(100):
        con.execute("INSERT INTO facts_fts (rowid, text) VALUES (?, ?)", (i + 1, f"running {i}"))
    stats = TermStats()
    assert stats.doc_freq(con, "runs", 100) == 100  # stemmed like the index: "run"
    assert stats.doc_freq(con, "nothing", 100) == 0
    for i in range(100, 300):
        con.execute("INSERT INTO facts_fts (rowid, text) VALUES (?, ?)", (i + 1, f"running {i}"))
    assert stats.doc_freq(con, "run", 110) == 100  # cached while the count barely moved
    assert stats.doc_freq(con, "run", 300) == 300  # looked up again after growth
    assert stats.doc_freq(con, "x_y", 300) == 0  # a phrase of two tokens
    stats.prefill(con, 300)
    assert stats._df["run"] == (300, 300)


async def test_search_through_the_actor_uses_both_fast_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectors, "QUANTIZED_MIN_ROWS", 0)
    monkeypatch.setattr(facts, "KEYWORD_BUDGET", 20)
    actor = MemoryActor(tmp_path, MemoryConfig())
    try:
        for text in _texts(200, seed=4):
            await actor.handle(m.Remember(tenant="a", text=text))
        lamp = await actor.handle(m.Remember(tenant="a", text="a brass lamp by the owl"))
        hits = await actor.handle(m.Search(tenant="a", query="owl lamp brass", limit=5))
        assert hits[0].fact.id == lamp.id
        assert hits[0].keyword_rank == 1 and hits[0].vector_rank is not None
        with pytest.raises(OpError):
            await actor.handle(m.Search(tenant="a", query="   ", limit=5))
    finally:
        await actor.stopping()


async def test_writer_runs_a_batch_without_a_savepoint_per_write_until_one_fails(
    tmp_path: Path,
) -> None:
    """A batch runs in one savepoint; when a write of several statements fails half-way,
    the batch runs again with a savepoint per write: the failing write leaves nothing (not
    even its first statement), the others commit once, and post callbacks run once each."""
    w = _writer(tmp_path)
    w.max_batch = 64
    w.con.execute("CREATE TABLE log (v INTEGER)")
    await w.write(_insert(0))  # type: ignore[arg-type]
    statements: list[str] = []

    def trace(cursor: object, sql: str, bindings: object) -> bool:
        statements.append(sql.split()[0] + (" " + sql.split()[1] if sql.startswith("SAVE") else ""))
        return True

    w.con.exec_trace = trace
    gate, entered = threading.Event(), threading.Event()
    posted: list[int] = []

    def slow(con: apsw.Connection, post: list[object]) -> int:
        entered.set()
        gate.wait(10)
        return -1

    def two(v: int) -> object:
        def fn(con: apsw.Connection, post: list[object]) -> int:
            con.execute("INSERT INTO log (v) VALUES (?)", (v,))
            con.execute("INSERT INTO t (v) VALUES (?)", (v,))  # fails for a duplicate
            post.append(lambda: posted.append(v))
            return v

        return fn

    results: dict[int, object] = {}

    async def one(v: int) -> None:
        try:
            results[v] = await w.write(two(v))  # type: ignore[arg-type]
        except apsw.ConstraintError as exc:
            results[v] = exc

    async def batch(values: tuple[int, ...]) -> None:
        gate.clear()
        entered.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.write, slow)  # holds the writer while the batch queues
            assert await trio.to_thread.run_sync(entered.wait, 10.0)
            statements.clear()
            for v in values:
                nursery.start_soon(one, v)
                await trio.testing.wait_all_tasks_blocked()
            gate.set()

    await batch((1, 2, 3))
    assert results == {1: 1, 2: 2, 3: 3}
    assert statements.count("SAVEPOINT batch") == 1 and "SAVEPOINT job" not in statements
    await batch((4, 0, 5))  # 0 is a duplicate: its second statement fails
    assert isinstance(results.pop(0), apsw.ConstraintError)
    assert results == {v: v for v in (1, 2, 3, 4, 5)}
    assert statements.count("SAVEPOINT batch") == 1 and statements.count("SAVEPOINT job") == 3
    assert sorted(posted) == [1, 2, 3, 4, 5]
    assert await trio.to_thread.run_sync(w.wait_idle, 10.0)
    assert sorted(r[0] for r in w.con.execute("SELECT v FROM log")) == [1, 2, 3, 4, 5]
    assert sorted(r[0] for r in w.con.execute("SELECT v FROM t")) == [0, 1, 2, 3, 4, 5]
