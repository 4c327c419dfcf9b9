"""The memory actor in-process: facts, search, isolation, bad input, ledger, tasks, migrations."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import apsw
import pytest
import trio

from convergiod.actors.memory import messages as m
from convergiod.actors.memory import schema
from convergiod.actors.memory.actor import MemoryActor
from convergiod.actors.memory.store import TenantDB
from convergiod.config import MemoryConfig
from convergiod.errors import OpError
from convergiod.runtime import ActorRef, ChildSpec, SupervisorSpec, open_actor_system


@asynccontextmanager
async def memory(
    root: Path, config: MemoryConfig | None = None, clock: Callable[[], float] = time.time
) -> AsyncIterator[ActorRef]:
    cfg = config or MemoryConfig()
    spec = SupervisorSpec(
        name="root",
        children=[
            ChildSpec(
                name="memory", start=lambda: MemoryActor(root, cfg, clock=clock), mailbox_size=8192
            )
        ],
    )
    async with open_actor_system(spec) as system:
        yield system.ref("memory")


async def code_of(ref: ActorRef, msg: object) -> str:
    with pytest.raises(OpError) as info:
        await ref.ask(msg)
    return info.value.code


# ----------------------------------------------------------------------------- facts and search


async def test_search_fuses_keyword_and_vector_ranks_with_scores(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        sky = await mem.ask(m.Remember(tenant="a", text="The sky is blue on a clear day"))
        await mem.ask(m.Remember(tenant="a", text="Alice drinks green tea every morning"))
        await mem.ask(m.Remember(tenant="a", text="Paris is the capital of France", kind="geo"))
        hits = await mem.ask(m.Search(tenant="a", query="sky colour"))
        assert hits[0].fact.id == sky.id
        assert hits[0].keyword_rank == 1 and hits[0].vector_rank == 1
        assert hits[0].score > 0
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        geo = await mem.ask(m.Search(tenant="a", query="capital sky tea", kind="geo"))
        assert [h.fact.kind for h in geo] == ["geo"]


async def test_supersedes_closes_validity_without_erasing_history(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        old = await mem.ask(m.Remember(tenant="a", text="Bob lives in Rome"))
        before = time.time()
        await trio.sleep(0.01)
        new = await mem.ask(m.Remember(tenant="a", text="Bob lives in Milan", supersedes=old.id))
        now = await mem.ask(m.Search(tenant="a", query="where does Bob live"))
        assert [h.fact.id for h in now] == [new.id]
        past = await mem.ask(m.Search(tenant="a", query="where does Bob live", at=before))
        assert [h.fact.id for h in past] == [old.id]
        assert past[0].fact.valid_to is not None
        assert await code_of(mem, m.Remember(tenant="a", text="x", supersedes=999)) == "not_found"


async def test_forget_removes_from_keyword_and_vector_search(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        ids: list[int] = []

        async def add(i: int) -> None:
            f = await mem.ask(m.Remember(tenant="a", text=f"pebble {i} lies on the beach"))
            ids.append(f.id)

        async def forget(fid: int) -> None:
            assert await mem.ask(m.Forget(tenant="a", id=fid)) is True

        async with trio.open_nursery() as nursery:
            for i in range(1500):  # enough to make the matrix compact after the deletes
                nursery.start_soon(add, i)
        ids.sort()
        keep = await mem.ask(m.Remember(tenant="a", text="a lighthouse on the beach"))
        async with trio.open_nursery() as nursery:
            for fid in ids[:1400]:
                nursery.start_soon(forget, fid)
        assert await mem.ask(m.Forget(tenant="a", id=ids[0])) is False
        hits = await mem.ask(m.Search(tenant="a", query="pebble beach lighthouse", limit=200))
        found = {h.fact.id for h in hits}
        assert keep.id in found
        assert found <= {keep.id, *ids[1400:]}
        stats = await mem.ask(m.Stats(tenant="a"))
        assert stats.facts == stats.vectors == 101


async def test_concurrent_writes_share_group_commits(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(mem.ask, m.Remember(tenant="a", text=f"fact {i}"))
        stats = await mem.ask(m.Stats(tenant="a"))
        assert stats.facts == stats.writes == 500
        assert stats.group_commits < 100


async def test_grouped_remembers_get_their_own_rows(tmp_path: Path) -> None:
    """Concurrent remembers share one multi-row INSERT (facts.remember_many): each caller
    gets its own fact and id; the very same fact at the very same instant, in one group or
    stored before, gets the stored row; the vector matrix holds each fact once."""
    async with memory(tmp_path, clock=lambda: 5000.0) as mem:
        before = await mem.ask(m.Remember(tenant="a", text="fact 3 of the group"))
        got: dict[int, m.Fact] = {}

        async def remember(i: int) -> None:
            got[i] = await mem.ask(m.Remember(tenant="a", text=f"fact {i % 40} of the group"))

        async with trio.open_nursery() as nursery:
            for i in range(120):
                nursery.start_soon(remember, i)
        stats = await mem.ask(m.Stats(tenant="a"))
        assert stats.group_commits < 60  # they were grouped
        assert stats.facts == stats.vectors == 40
        for i, fact in got.items():
            assert fact.text == f"fact {i % 40} of the group" and fact.valid_from == 5000.0
            assert fact.id == got[i % 40].id
        assert got[3].id == before.id
        assert len({f.id for f in got.values()}) == 40
        for i in (0, 17, 39):
            hits = await mem.ask(m.Search(tenant="a", query=f"fact {i} of the group", limit=40))
            assert [h.fact for h in hits].count(got[i]) == 1
    async with memory(tmp_path) as mem:  # the table agrees: the same facts after a reopen
        stats = await mem.ask(m.Stats(tenant="a"))
        assert stats.facts == stats.vectors == 40


async def test_a_group_that_fails_falls_back_to_one_write_at_a_time(tmp_path: Path) -> None:
    """When the multi-row INSERT fails, each write of the group runs alone: only the bad one
    fails."""
    async with memory(tmp_path) as mem:
        await mem.ask(m.Remember(tenant="a", text="first"))
    con = apsw.Connection(str(tmp_path / "a.db"))
    con.execute(
        "CREATE TRIGGER no_poison BEFORE INSERT ON facts WHEN new.text LIKE '%poison%'"
        " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    con.close()
    async with memory(tmp_path) as mem:
        results: dict[int, object] = {}

        async def remember(i: int) -> None:
            text = f"poison {i}" if i == 7 else f"good fact {i}"
            try:
                results[i] = await mem.ask(m.Remember(tenant="a", text=text))
            except OpError as exc:
                results[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(remember, i)
        failed = [i for i, r in results.items() if not isinstance(r, m.Fact)]
        assert failed == [7]
        stats = await mem.ask(m.Stats(tenant="a"))
        assert stats.facts == stats.vectors == 30
        assert stats.group_commits < 15  # the poisoned write was in a group


async def test_matrix_is_rebuilt_from_the_table_at_open(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        for i in range(50):
            await mem.ask(m.Remember(tenant="a", text=f"note number {i} about owls"))
        await mem.ask(m.Forget(tenant="a", id=3))
        first = await mem.ask(m.Search(tenant="a", query="owls note", limit=20))
    async with memory(tmp_path) as mem:
        stats = await mem.ask(m.Stats(tenant="a"))
        assert stats.vectors == stats.facts == 49
        again = await mem.ask(m.Search(tenant="a", query="owls note", limit=20))
        assert [h.fact.id for h in again] == [h.fact.id for h in first]


# ----------------------------------------------------------------------------- tenants


async def test_a_search_never_returns_another_tenants_rows(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        for i in range(20):
            await mem.ask(m.Remember(tenant="alice", text=f"alice secret {i} about the moon"))
            await mem.ask(m.Remember(tenant="bob", text=f"bob secret {i} about the moon"))
        for tenant in ("alice", "bob"):
            for query in ("secret moon", "alice", "bob", "moon secret about"):
                hits = await mem.ask(m.Search(tenant=tenant, query=query, limit=100))
                assert all(h.fact.text.startswith(tenant) for h in hits)
                assert hits or query in ("alice", "bob")
        assert (await mem.ask(m.Stats(tenant="alice"))).facts == 20
        names = await trio.to_thread.run_sync(lambda: sorted(tmp_path.glob("*.db")))
        assert [p.name for p in names] == ["alice.db", "bob.db"]


@pytest.mark.parametrize("tenant", ["../x", "a/b", "", ".hidden", "x" * 100, "a\x00b"])
async def test_tenant_names_that_could_escape_are_refused(tmp_path: Path, tenant: str) -> None:
    async with memory(tmp_path) as mem:
        assert await code_of(mem, m.Stats(tenant=tenant)) == "bad_request"


# ----------------------------------------------------------------------------- bad input


async def test_bad_facts_and_queries_are_bad_requests_not_crashes(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        await mem.ask(m.Remember(tenant="a", text='a "quoted" fact AND OR NOT'))
        for text in ["", "   \n", "x" * (10 << 20), "bad \ud800 surrogate"]:
            assert await code_of(mem, m.Remember(tenant="a", text=text)) == "bad_request"
        for query in ['"unbalanced', "AND OR", "NEAR(", "*", "a:b", "(((", "^x -y +"]:
            await mem.ask(m.Search(tenant="a", query=query))  # never raises
        assert await code_of(mem, m.Search(tenant="a", query="")) == "bad_request"
        assert await code_of(mem, m.Search(tenant="a", query="x", limit=0)) == "bad_request"
        hits = await mem.ask(m.Search(tenant="a", query='"quoted AND'))
        assert hits[0].keyword_rank == 1
        assert (await mem.ask(m.Stats(tenant="a"))).facts == 1


async def test_corrupt_database_fails_its_tenant_only(tmp_path: Path) -> None:
    (tmp_path / "broken.db").write_bytes(b"this is not a database " * 500)
    async with memory(tmp_path) as mem:
        with pytest.raises(OpError) as info:
            await mem.ask(m.Remember(tenant="broken", text="hello"))
        assert info.value.code == "unavailable"
        assert "corrupt" in info.value.message and "broken.db" in info.value.message
        assert await code_of(mem, m.Search(tenant="broken", query="hello")) == "unavailable"
        fact = await mem.ask(m.Remember(tenant="fine", text="hello"))
        assert (await mem.ask(m.Search(tenant="fine", query="hello")))[0].fact.id == fact.id


async def test_size_limit_full_fails_with_unavailable_and_others_keep_working(
    tmp_path: Path,
) -> None:
    async with memory(tmp_path, MemoryConfig(max_db_mib=1)) as mem:
        with pytest.raises(OpError) as info:
            for i in range(10_000):
                await mem.ask(m.Remember(tenant="full", text=f"{i} " + "filler words " * 400))
        assert info.value.code == "unavailable" and "full" in info.value.message
        await mem.ask(m.Search(tenant="full", query="filler"))  # reads still work
        await mem.ask(m.Remember(tenant="other", text="still fine"))


@pytest.fixture
def small_mount(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 2 MiB tmpfs: a real full disk, and remountable read-only (needs root)."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ok = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if ok.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


async def test_full_and_read_only_disk_give_unavailable(tmp_path: Path, small_mount: Path) -> None:
    root = tmp_path / "tenants"
    root.mkdir()
    (root / "disk.db").symlink_to(small_mount / "disk.db")
    async with memory(root) as mem:
        with pytest.raises(OpError) as info:
            for i in range(10_000):
                await mem.ask(m.Remember(tenant="disk", text=f"{i} " + "filler words " * 400))
        assert info.value.code == "unavailable" and "full" in info.value.message
        await mem.ask(m.Remember(tenant="other", text="still fine"))
    await trio.run_process(["mount", "-o", "remount,ro", str(small_mount)])
    async with memory(root) as mem:
        with pytest.raises(OpError) as info:
            await mem.ask(m.Remember(tenant="disk", text="more"))
        assert info.value.code == "unavailable"
        await mem.ask(m.Remember(tenant="other", text="still fine"))


# ----------------------------------------------------------------------------- migrations


def test_a_version_1_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = apsw.Connection(str(path))
    with con:
        con.execute(schema.V1)
        con.pragma("user_version", 1)
        for text in ["the first fact", "the second fact about trains"]:
            con.execute(
                "INSERT INTO facts (text, kind, source, valid_from) VALUES (?, 'note', 'user', ?)",
                (text, 1000.0),
            )
    con.close()
    db = TenantDB.open("old", path, MemoryConfig())
    try:
        assert db.schema_found == 1
        assert int(db.con.pragma("user_version")) == schema.VERSION == 4
        rows = list(db.con.execute("SELECT uid, length(embedding) FROM facts"))
        assert all(uid and size == 4 * 384 for uid, size in rows)
        assert len(db.index) == 2
        db.con.execute("INSERT INTO facts_fts(facts_fts) VALUES ('integrity-check')")
    finally:
        db.close()


def _indexes(con: apsw.Connection) -> set[str]:
    return {
        name
        for (name,) in con.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'facts'"
        )
    }


async def test_a_version_2_database_is_upgraded(tmp_path: Path) -> None:
    """Version 3 keeps a uid unique with an index on (valid_from, uid): remembering the same
    fact at the same instant twice, importing or remembering after the upgrade all work."""
    root = tmp_path / "tenants"
    root.mkdir()
    path = root / "old.db"
    con = apsw.Connection(str(path))
    schema.migrate(con, target=2)
    with con:
        for text, at in [("the first fact", 1000.0), ("the second fact about trains", 1001.0)]:
            con.execute(
                "INSERT INTO facts (text, kind, source, valid_from, uid, embedding)"
                " VALUES (?, 'note', 'user', ?, ?, ?)",
                (text, at, schema.fact_uid(text, "note", "user", None, at), None),
            )
    assert "facts_by_uid" in _indexes(con)
    con.close()
    async with memory(root, clock=lambda: 1001.0) as mem:
        again = await mem.ask(m.Remember(tenant="old", text="the second fact about trains"))
        assert again.id == 2  # the very same fact at the very same instant: the stored one
        new = await mem.ask(m.Remember(tenant="old", text="a third fact", supersedes=1))
        assert new.id == 3
        stats = await mem.ask(m.Stats(tenant="old"))
        assert (stats.facts, stats.current_facts, stats.schema_version) == (3, 2, schema.VERSION)
        hits = await mem.ask(m.Search(tenant="old", query="trains", at=2000.0))
        assert [h.fact.id for h in hits][:1] == [2]
    db = TenantDB.open("old", path, MemoryConfig())
    try:
        assert db.schema_found == int(db.con.pragma("user_version")) == schema.VERSION
        assert _indexes(db.con) == {"facts_by_time_uid", "facts_superseded"}
        with pytest.raises(apsw.ConstraintError):
            db.con.execute(
                "INSERT INTO facts (text, kind, source, valid_from, uid) SELECT text, kind,"
                " source, valid_from, uid FROM facts WHERE id = 1"
            )
        assert len(db.index) == 3
        assert db.con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    con = apsw.Connection(str(path))
    con.pragma("user_version", 99)
    con.close()
    with pytest.raises(schema.SchemaTooNew):
        TenantDB.open("new", path, MemoryConfig())


# ----------------------------------------------------------------------------- ledger


async def test_usage_is_recorded_once_per_request_and_summed(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:

        def usage(rid: str, cost: float, agent: str = "chief", **kw: object) -> m.RecordUsage:
            return m.RecordUsage(
                tenant="a", request_id=rid, model="gpt", provider="openai", agent=agent,
                input_tokens=10, output_tokens=5, cost=cost, **kw,  # type: ignore[arg-type]
            )  # fmt: skip

        assert await mem.ask(usage("r1", 0.5)) is True
        assert await mem.ask(usage("r1", 0.5)) is False
        assert await mem.ask(usage("r2", 0.25, agent="coder")) is True
        assert await mem.ask(usage("old", 9.0, time=time.time() - 3 * 86400)) is True
        assert await mem.ask(m.Spent(tenant="a")) == pytest.approx(0.75)
        assert await mem.ask(m.Spent(tenant="a", agent="coder")) == pytest.approx(0.25)
        assert await mem.ask(m.Spent(tenant="a", since=0)) == pytest.approx(9.75)
        by_agent = await mem.ask(m.UsageQuery(tenant="a", by="agent"))
        assert {(r.key, r.calls) for r in by_agent} == {("chief", 2), ("coder", 1)}
        by_day = await mem.ask(m.UsageQuery(tenant="a", by="day", since=time.time() - 86400))
        assert sum(r.calls for r in by_day) == 2
        assert await mem.ask(m.Spent(tenant="b")) == 0.0


async def test_approvals_are_remembered_per_tenant(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        assert await mem.ask(m.LookupApproval(tenant="a", tool="shell", key="ls")) is False
        await mem.ask(m.RememberApproval(tenant="a", tool="shell", key="ls"))
        await mem.ask(m.RememberApproval(tenant="a", tool="shell", key="ls"))
        assert await mem.ask(m.LookupApproval(tenant="a", tool="shell", key="ls")) is True
        assert await mem.ask(m.LookupApproval(tenant="b", tool="shell", key="ls")) is False


async def test_task_checkpoints_keep_steps_in_order_and_once(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        await mem.ask(m.SaveTask(tenant="a", task="t1", status="running", request="r", agent="c"))
        assert await mem.ask(
            m.SaveStep(tenant="a", task="t1", step="s1", kind="model", payload=b"1")
        )
        assert await mem.ask(
            m.SaveStep(tenant="a", task="t1", step="s2", kind="tool", payload=b"2")
        )
        assert not await mem.ask(
            m.SaveStep(tenant="a", task="t1", step="s1", kind="model", payload=b"x")
        )
        await mem.ask(
            m.SaveTask(tenant="a", task="t1", status="done", request="r", agent="c", result="ok")
        )
        await mem.ask(m.SaveTask(tenant="a", task="t2", status="running", request="q", agent="c"))
        record = await mem.ask(m.LoadTask(tenant="a", task="t1"))
        assert record.status == "done" and record.result == "ok"
        assert record.steps == [("s1", "model", b"1"), ("s2", "tool", b"2")]
        running = await mem.ask(m.ListTasks(tenant="a", status="running"))
        assert [t.task for t in running] == ["t2"] and running[0].steps == []
        assert await code_of(mem, m.LoadTask(tenant="a", task="nope")) == "not_found"
        assert (
            await code_of(
                mem, m.SaveStep(tenant="a", task="no", step="s", kind="tool", payload=b"")
            )
            == "not_found"
        )


async def test_conversations_keep_messages_in_order(tmp_path: Path) -> None:
    async with memory(tmp_path) as mem:
        first = await mem.ask(
            m.AppendMessage(tenant="a", conversation="c1", role="user", content="hello there")
        )
        await mem.ask(
            m.AppendMessage(
                tenant="a", conversation="c1", role="assistant", content="hi", parent=first
            )
        )
        for i in range(5):
            await mem.ask(
                m.AppendMessage(tenant="a", conversation="c1", role="user", content=f"{i}")
            )
        history = await mem.ask(m.History(tenant="a", conversation="c1", limit=3))
        assert [h.content for h in history] == ["2", "3", "4"]
        full = await mem.ask(m.History(tenant="a", conversation="c1"))
        assert full[0].tokens > 0 and full[1].parent == first
        bad = m.AppendMessage(tenant="a", conversation="c2", role="user", content="x", parent=first)
        assert await code_of(mem, bad) == "not_found"


# ----------------------------------------------------------------------------- deferred writes


async def deferred(ref: ActorRef, msg: m.Remember) -> Any:
    """``ask_now`` a remember (the gateway's path) and wait for its ``Pending``."""
    from convergiod.runtime import NOT_NOW, Pending

    pending = ref.ask_now(msg)
    assert isinstance(pending, Pending), pending
    done = trio.Event()
    box: list[Any] = []
    pending.on_done(lambda o: (box.append(o), done.set()))
    with trio.fail_after(10):
        await done.wait()
    # Only remembers are answered that way.
    assert ref.ask_now(m.Search(tenant="a", query="x")) is NOT_NOW
    return box[0]


async def test_deferred_remember_is_committed_and_searchable(tmp_path: Path) -> None:
    async with memory(tmp_path) as ref:
        await ref.ask(m.Remember(tenant="a", text="opens the tenant's database"))
        msg = m.Remember(tenant="a", text="the deploy key rotates every Monday")
        result = await deferred(ref, msg)
        fact = result.unwrap()
        assert isinstance(fact, m.Fact) and fact.text.startswith("the deploy key")
        hits = await ref.ask(m.Search(tenant="a", query="deploy key rotation"))
        assert [h.fact.id for h in hits][:1] == [fact.id]
        with pytest.raises(OpError) as info:  # checked before anything is queued
            ref.ask_now(m.Remember(tenant="a", text="ok", importance=2.0))
        assert info.value.code == "bad_request"


async def test_a_bug_after_a_deferred_commit_crashes_the_actor_like_handle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convergiod.actors.memory.vectors import VectorIndex

    async with memory(tmp_path) as ref:
        await ref.ask(m.Remember(tenant="a", text="opens the tenant's database"))

        def broken(self: Any, *args: Any) -> None:
            raise RuntimeError("vector index bug")

        monkeypatch.setattr(VectorIndex, "add", broken)
        monkeypatch.setattr(VectorIndex, "add_many", broken)
        result = await deferred(ref, m.Remember(tenant="a", text="committed, then the index fails"))
        assert isinstance(result.error, RuntimeError)
        monkeypatch.undo()
        # Restarted: the new instance rebuilt its matrix from the table, fact included.
        with trio.fail_after(10):
            while True:
                try:
                    hits = await ref.ask(m.Search(tenant="a", query="committed index fails"))
                    break
                except Exception:
                    await trio.sleep(0.05)
        assert any(h.fact.text == "committed, then the index fails" for h in hits)


# ----------------------------------------------------------------------------- writes with no task


async def test_writes_asked_now_commit_in_the_order_they_were_submitted(tmp_path: Path) -> None:
    """The orchestrator's path: a task's record, then its checkpoints, submitted in one go
    with ``ask_now``; each answer comes after its COMMIT, and a write submitted after
    another never commits before it (the checkpoint needs the task's row)."""
    from convergiod.actors.memory import asks
    from convergiod.runtime import NOT_NOW, Pending

    async with memory(tmp_path) as mem:
        task = m.SaveTask(tenant="a", task="t1", status="running", request="r", agent="c")
        assert mem.ask_now(task) is NOT_NOW  # the tenant's database is not open yet
        await mem.ask(task)
        pendings = [
            mem.ask_now(
                m.SaveTask(tenant="a", task="t2", status="running", request="q", agent="c")
            ),
            mem.ask_now(m.AppendMessage(tenant="a", conversation="c1", role="user", content="q")),
            mem.ask_now(
                m.SaveSteps(
                    tenant="a", task="t2", steps=[("s1", "model", b"1"), ("s2", "tool", b"2")]
                )
            ),
            mem.ask_now(m.SaveStep(tenant="a", task="t2", step="s3", kind="tool", payload=b"3")),
            mem.ask_now(
                m.RecordUsage(tenant="a", request_id="r1", model="x", provider="p", cost=0.5)
            ),
        ]
        assert all(type(p) is Pending for p in pendings)
        answers = [await asks.settle(p) for p in pendings]
        assert answers[0] is None and isinstance(answers[1], int)
        assert answers[2:] == [[True, True], True, True]
        record = await mem.ask(m.LoadTask(tenant="a", task="t2"))
        assert record.steps == [("s1", "model", b"1"), ("s2", "tool", b"2"), ("s3", "tool", b"3")]
        history = await mem.ask(m.History(tenant="a", conversation="c1"))
        assert [h.content for h in history] == ["q"]
        assert await mem.ask(m.Spent(tenant="a", since=0.0)) == 0.5
        # Saving a step again keeps the first; one batch is all or none.
        again = m.SaveSteps(
            tenant="a", task="t2", steps=[("s2", "tool", b"x"), ("s4", "final", b"4")]
        )
        assert await asks.ask(mem, again) == [False, True]
        record = await mem.ask(m.LoadTask(tenant="a", task="t2"))
        assert [s[2] for s in record.steps] == [b"1", b"2", b"3", b"4"]
        with pytest.raises(OpError) as info:
            await asks.ask(mem, m.SaveSteps(tenant="a", task="nope", steps=[("s", "tool", b"")]))
        assert info.value.code == "not_found"
        with pytest.raises(OpError) as info:  # refused before anything is submitted
            mem.ask_now(m.SaveSteps(tenant="a", task="t2", steps=[("s" * 201, "tool", b"")]))
        assert info.value.code == "bad_request"
        assert await code_of(mem, m.SaveSteps(tenant="a", task="t2", steps=[])) == "bad_request"


async def test_a_cancelled_wait_does_not_withdraw_the_write(tmp_path: Path) -> None:
    from convergiod.actors.memory import asks

    async with memory(tmp_path) as mem:
        await mem.ask(m.SaveTask(tenant="a", task="t1", status="running", request="r", agent="c"))
        msg = m.SaveStep(tenant="a", task="t1", step="s1", kind="model", payload=b"1")
        with trio.CancelScope() as scope:
            scope.cancel()
            await asks.ask(mem, msg)
        # Submitted after it, so committed after it.
        later = m.SaveStep(tenant="a", task="t1", step="s2", kind="tool", payload=b"2")
        assert await asks.ask(mem, later) is True
        record = await mem.ask(m.LoadTask(tenant="a", task="t1"))
        assert [s[0] for s in record.steps] == ["s1", "s2"]


async def test_a_search_of_a_tenant_without_facts_is_answered_at_once(tmp_path: Path) -> None:
    from convergiod.runtime import NOT_NOW

    async with memory(tmp_path) as mem:
        search = m.Search(tenant="a", query="anything")
        assert await mem.ask(search) == []  # opens the database
        assert mem.ask_now(search) == []
        with pytest.raises(OpError) as info:
            mem.ask_now(m.Search(tenant="a", query="x", limit=0))
        assert info.value.code == "bad_request"
        await mem.ask(m.Remember(tenant="a", text="now there is a fact"))
        assert mem.ask_now(search) is NOT_NOW  # a real search reads: through the mailbox


async def test_a_task_record_with_its_message_is_one_write(tmp_path: Path) -> None:
    from convergiod.actors.memory import asks

    async with memory(tmp_path) as mem:
        await mem.ask(m.Stats(tenant="a"))  # opens the database: the next writes go at once
        said = m.AppendMessage(tenant="a", conversation="c1", role="user", content="hello")
        task = m.SaveTask(
            tenant="a", task="t1", status="running", request="hello", agent="c", message=said
        )
        assert await asks.ask(mem, task) is None
        assert (await mem.ask(m.LoadTask(tenant="a", task="t1"))).status == "running"
        history = await mem.ask(m.History(tenant="a", conversation="c1"))
        assert [(h.role, h.content) for h in history] == [("user", "hello")]
        # Both or neither: a message that cannot be appended leaves the task as it was.
        orphan = m.AppendMessage(
            tenant="a", conversation="c1", role="assistant", content="x", parent=10**6
        )
        done = m.SaveTask(
            tenant="a", task="t1", status="done", request="hello", agent="c", message=orphan
        )
        with pytest.raises(OpError) as info:
            await asks.ask(mem, done)
        assert info.value.code == "not_found"
        assert (await mem.ask(m.LoadTask(tenant="a", task="t1"))).status == "running"
        other = m.AppendMessage(tenant="b", conversation="c1", role="user", content="x")
        wrong = m.SaveTask(
            tenant="a", task="t2", status="running", request="x", agent="c", message=other
        )
        assert await code_of(mem, wrong) == "bad_request"


async def test_task_records_queued_together_commit_in_order_and_fail_alone(
    tmp_path: Path,
) -> None:
    """Records of tasks (with or without a message) queued together, as the orchestrator
    submits them: they commit in their order (a task recorded twice ends as the later record
    says; messages keep their order), and one that cannot be written fails alone."""
    from convergiod.actors.memory import asks
    from convergiod.runtime import Pending

    async with memory(tmp_path) as mem:
        first = m.SaveTask(tenant="a", task="t0", status="running", request="r", agent="c")
        await mem.ask(first)  # opens the tenant's database
        kept = await mem.ask(
            m.AppendMessage(tenant="a", conversation="c9", role="user", content="earlier")
        )

        def said(conversation: str, role: str, text: str, **extra: Any) -> m.AppendMessage:
            return m.AppendMessage(
                tenant="a", conversation=conversation, role=role, content=text, **extra
            )

        def record(task: str, status: str = "running", **extra: Any) -> m.SaveTask:
            return m.SaveTask(
                tenant="a", task=task, status=status, request=f"q {task}", agent="c", **extra
            )

        writes = [
            record("t1", conversation="c1", message=said("c1", "user", "question")),
            record("t2"),
            record("t3", message=said("c3", "bogus", "x")),  # the schema refuses the role
            record(
                "t1",
                "done",
                result="ok",
                conversation="c1",
                message=said("c1", "assistant", "answer", agent="c"),
            ),
            record("t4", message=said("c9", "user", "reply", parent=kept)),  # a reply
        ]
        pendings = [mem.ask_now(w) for w in writes]
        assert all(type(p) is Pending for p in pendings)
        outcomes = []
        for pending in pendings:
            try:
                outcomes.append(await asks.settle(pending))
            except OpError as exc:
                outcomes.append(exc.code)
        assert outcomes[:2] == [None, None] and outcomes[3:] == [None, None]
        assert outcomes[2] is not None  # the bogus role: refused by the schema
        t1 = await mem.ask(m.LoadTask(tenant="a", task="t1"))
        assert (t1.status, t1.result) == ("done", "ok")
        assert (await mem.ask(m.LoadTask(tenant="a", task="t2"))).status == "running"
        assert await code_of(mem, m.LoadTask(tenant="a", task="t3")) == "not_found"
        assert (await mem.ask(m.LoadTask(tenant="a", task="t4"))).status == "running"
        history = await mem.ask(m.History(tenant="a", conversation="c1"))
        assert [(h.role, h.content) for h in history] == [
            ("user", "question"),
            ("assistant", "answer"),
        ]
        assert [h.content for h in await mem.ask(m.History(tenant="a", conversation="c9"))] == [
            "earlier",
            "reply",
        ]
        assert await mem.ask(m.History(tenant="a", conversation="c3")) == []


# ----------------------------------------------------------------------------- task records


def _task_tables(con: apsw.Connection) -> list[list[tuple[Any, ...]]]:
    return [
        list(con.execute(f"SELECT * FROM {table} ORDER BY 1, 2"))
        for table in ("tasks", "conversations", "messages")
    ]


def test_a_task_record_in_one_statement_writes_what_the_three_did(tmp_path: Path) -> None:
    """``save_task_record`` (the ``task_writes`` view, version 4) against ``save_task`` then
    ``append_message``: the same rows, for a new task, its update, a second conversation, a
    message with an agent and a cost; and a failing message (a role the schema refuses)
    leaves nothing of the record either."""
    from convergiod import native
    from convergiod.actors.memory import ledger

    cons = []
    for name in ("one", "three"):
        con = apsw.Connection(str(tmp_path / f"{name}.db"))
        con.pragma("foreign_keys", True)
        schema.migrate(con)
        cons.append(con)
    one, three = cons

    def task(name: str, status: str, conversation: str, **kw: Any) -> m.SaveTask:
        return m.SaveTask(
            tenant="t",
            task=name,
            status=status,
            request=kw.pop("request", "q"),
            agent=kw.pop("agent", "a"),
            conversation=conversation,
            **kw,
        )

    def said(conversation: str, role: str, content: str, **kw: Any) -> m.AppendMessage:
        return m.AppendMessage(
            tenant="t", conversation=conversation, role=role, content=content, **kw
        )  # type: ignore[arg-type]

    writes = [
        (task("t1", "running", "c1"), said("c1", "user", "hello")),
        (task("t1", "done", "c1", result="r"), said("c1", "assistant", "r", agent="a", cost=0.5)),
        (
            task("t2", "running", "c2", request="é 漢字", agent="b"),
            said("c2", "user", "é 漢字", tokens=7),
        ),
    ]
    for i, (task, message) in enumerate(writes):
        now = 1000.0 + i
        with one:
            ledger.save_task_record(
                one, task, message, message.tokens or native.estimate_tokens(message.content), now
            )
        with three:
            ledger.save_task(three, [], task, now)
            ledger.append_message(three, [], message, now)
    assert _task_tables(one) == _task_tables(three)
    assert len(_task_tables(one)[2]) == 3
    before = _task_tables(one)
    # Structs are checked when decoded, not when built: a role the schema's CHECK refuses.
    bad = m.AppendMessage(tenant="t", conversation="c3", role="narrator", content="x")  # type: ignore[arg-type]
    new_task = m.SaveTask(
        tenant="t", task="t3", status="running", request="x", agent="a", conversation="c3"
    )
    # Inside a transaction that goes on (as in a group commit): the failing statement
    # undoes its own writes, the trigger's included, and nothing else.
    one.execute("BEGIN")
    with pytest.raises(apsw.ConstraintError):
        ledger.save_task_record(one, new_task, bad, 1, 2000.0)
    assert _task_tables(one) == before
    one.execute("COMMIT")


async def test_a_version_3_database_with_tasks_is_upgraded(tmp_path: Path) -> None:
    root = tmp_path / "tenants"
    root.mkdir()
    con = apsw.Connection(str(root / "old.db"))
    schema.migrate(con, target=3)
    with con:
        con.execute("INSERT INTO conversations VALUES ('c1', 1.0, 1.0)")
        con.execute("INSERT INTO tasks VALUES ('t1', 'running', 'q', 'a', 'c1', NULL, 1.0, 1.0)")
    con.close()
    async with memory(root, clock=lambda: 5.0) as mem:
        await mem.ask(
            m.SaveTask(
                tenant="old",
                task="t1",
                status="done",
                request="q",
                agent="a",
                conversation="c1",
                result="r",
                message=m.AppendMessage(
                    tenant="old", conversation="c1", role="assistant", content="r"
                ),
            )
        )
        record = await mem.ask(m.LoadTask(tenant="old", task="t1"))
        assert (record.status, record.result, record.created, record.updated) == (
            "done",
            "r",
            1.0,
            5.0,
        )
        history = await mem.ask(m.History(tenant="old", conversation="c1"))
        assert [(h.role, h.content, h.created) for h in history] == [("assistant", "r", 5.0)]
