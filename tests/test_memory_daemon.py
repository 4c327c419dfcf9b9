"""The memory ops through a real daemon: crash safety, bad input, export/import, backup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import apsw
import msgspec
import pytest
import trio
import zmq

from convergio_client import ConvergioError, RemoteError
from convergio_client.trio_client import open_client
from convergiod import protocol as p
from tests.conftest import DaemonProcess

CLIENTS = 32


def db_path(d: DaemonProcess, tenant: str = "local") -> Path:
    return d.paths.data_dir / "tenants" / f"{tenant}.db"


def check_database(path: Path) -> apsw.Connection:
    con = apsw.Connection(str(path))
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.execute("INSERT INTO facts_fts(facts_fts) VALUES ('integrity-check')")
    facts = con.execute("SELECT count(*) FROM facts").fetchone()[0]
    indexed = con.execute("SELECT count(*) FROM facts_fts_docsize").fetchone()[0]
    assert facts == indexed
    return con


async def test_every_acknowledged_fact_survives_sigkill(daemon: DaemonProcess) -> None:
    acked: dict[int, str] = {}
    enough = trio.Event()

    async def writer(n: int) -> None:
        async with open_client(paths=daemon.paths, timeout=3.0) as client:
            for i in range(100_000):
                text = f"client {n} remembers fact {i}"
                try:
                    fact = await client.call(p.MemoryRemember(text=text))
                except (ConvergioError, RemoteError):
                    return
                acked[fact.id] = text
                if len(acked) >= 1500:
                    enough.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for n in range(CLIENTS):
                nursery.start_soon(writer, n)
            await enough.wait()
            assert daemon.proc is not None
            os.kill(daemon.proc.pid, signal.SIGKILL)  # mid-stream: writes are in flight
            daemon.proc.wait(10)
            snapshot = dict(acked)
            nursery.cancel_scope.cancel()
    daemon.start()
    async with open_client(paths=daemon.paths) as client:
        stats = await client.call(p.MemoryStats())
        assert stats.facts >= len(snapshot) and stats.vectors == stats.facts
        hits = await client.call(p.MemorySearch(query=snapshot[max(snapshot)]))
        assert hits.hits[0].fact.id == max(snapshot)
    assert daemon.terminate() == 0
    con = check_database(db_path(daemon))
    stored = dict(con.execute("SELECT id, text FROM facts"))
    missing = [fid for fid, text in snapshot.items() if stored.get(fid) != text]
    assert not missing, f"{len(missing)} acknowledged facts lost"


def _raw_request(d: DaemonProcess, frame: bytes) -> p.ServerMessage:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    try:
        sock.connect(d.paths.api_endpoint)
        sock.send(frame)
        return p.decode_server(sock.recv())
    finally:
        sock.close()
        ctx.term()


async def test_bad_input_gets_clear_errors_and_the_daemon_keeps_serving(
    daemon: DaemonProcess,
) -> None:
    marker = "X" * 11
    frame = p.encode(p.Request(id=77, op=p.MemoryRemember(text=marker)))
    bad_utf8 = frame.replace(b"\xab" + marker.encode(), b"\xab" + b"\xff\xfe\xc3(" + b"a" * 7)
    assert bad_utf8 != frame
    reply = _raw_request(daemon, bad_utf8)
    assert isinstance(reply, p.Failure) and reply.code == "bad_request"
    huge = p.encode(p.Request(id=78, op=p.MemoryRemember(text="x" * (10 << 20))))
    reply = _raw_request(daemon, huge)
    assert isinstance(reply, p.Failure) and reply.code == "bad_request"  # never decoded
    async with open_client(paths=daemon.paths) as client:
        for text in ["", "  "]:
            with pytest.raises(RemoteError) as info:
                await client.call(p.MemoryRemember(text=text))
            assert info.value.code == "bad_request"
        await client.call(p.MemoryRemember(text='an "odd" fact AND OR'))
        for query in ['"unbalanced', "AND OR", "NEAR(", "*"]:
            await client.call(p.MemorySearch(query=query))
        with pytest.raises(RemoteError) as info:
            await client.call(p.MemoryForget(id=12345))
        assert info.value.code == "not_found"
        for path in ["relative.jsonl", "../x.jsonl"]:
            with pytest.raises(RemoteError) as info:
                await client.call(p.MemoryExport(path=path))
            assert info.value.code == "bad_request"
        assert (await client.call(p.MemoryStats())).facts == 1
        status = await client.call(p.Status())
        memory = next(a for a in status.actors if a.name == "memory")
        assert memory.restarts == 0 and memory.state == "running"


async def test_corrupt_database_file_fails_memory_ops_but_not_the_daemon(
    daemon_factory,  # type: ignore[no-untyped-def]
) -> None:
    d: DaemonProcess = daemon_factory(start=False)
    db_path(d).parent.mkdir(parents=True)
    db_path(d).write_bytes(os.urandom(64 << 10))
    d.start()
    async with open_client(paths=d.paths) as client:
        for op in (p.MemoryRemember(text="hello"), p.MemorySearch(query="hello"), p.MemoryStats()):
            with pytest.raises(RemoteError) as info:
                await client.call(op)
            assert info.value.code == "unavailable"
            assert "local.db" in info.value.message and "corrupt" in info.value.message
        assert (await client.call(p.Ping())).pid == d.proc.pid  # type: ignore[union-attr]


QUERIES = ["green tea", "capital city", "river bridge night", "owl", "number 7"]


async def _searches(d: DaemonProcess) -> list[list[tuple[str, float, int | None, int | None]]]:
    async with open_client(paths=d.paths) as client:
        out = []
        for q in QUERIES:
            hits = (await client.call(p.MemorySearch(query=q, limit=8))).hits
            out.append([(h.fact.text, h.score, h.keyword_rank, h.vector_rank) for h in hits])
        return out


async def test_export_then_import_into_a_fresh_home_gives_the_same_search_results(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    words = ["green tea", "capital city", "river", "bridge at night", "owl", "forest"]
    async with open_client(paths=daemon.paths) as client:
        for i in range(60):
            text = f"note number {i} about {words[i % len(words)]} and {words[(i * 7) % 6]}"
            await client.call(p.MemoryRemember(text=text, kind="k" + str(i % 3)))
        await client.call(p.MemoryForget(id=5))
    before = await _searches(daemon)
    export = tmp_path / "memory.jsonl"
    out = daemon.cli("memory", "export", str(export), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["records"] == 59
    lines = export.read_text().splitlines()
    assert len(lines) == 60 and all("sha256" in json.loads(line) for line in lines)

    other = Path(tempfile.mkdtemp(prefix="cvg-", dir="/tmp"))
    fresh = DaemonProcess(other)
    try:
        fresh.start()
        for added in (59, 0):  # importing twice adds nothing
            out = fresh.cli("memory", "import", str(export), "--json")
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout) == {
                "type": "memory.transfer",
                "path": str(export),
                "records": 59,
                "added": added,
            }
        assert await _searches(fresh) == before
        # a corrupted line is refused, naming it
        lines[3] = lines[3].replace("note number", "note NUMBER")
        bad = tmp_path / "bad.jsonl"
        bad.write_text("\n".join(lines) + "\n")
        out = fresh.cli("memory", "import", str(bad))
        assert out.returncode == 1 and "line 4" in out.stderr and "checksum" in out.stderr
    finally:
        fresh.kill()
        shutil.rmtree(other, ignore_errors=True)


async def test_backup_runs_while_the_daemon_keeps_serving(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    async with open_client(paths=daemon.paths) as client:
        async with trio.open_nursery() as nursery:
            for i in range(400):
                nursery.start_soon(client.call, p.MemoryRemember(text=f"base fact {i} " * 40))
        target = tmp_path / "backup.db"
        written = 0

        async def keep_writing() -> None:
            nonlocal written
            while True:
                await client.call(p.MemoryRemember(text=f"during backup {written}"))
                written += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_writing)
            events = []
            async with client.stream(p.MemoryBackup(path=str(target))) as stream:
                async for event in stream:
                    events.append(event)
            nursery.cancel_scope.cancel()
        assert isinstance(stream.result, p.MemoryTransfer) and stream.result.records > 0
        assert any(isinstance(e, p.Progress) and e.total for e in events)
        assert written > 0
    con = check_database(target)
    assert con.execute("SELECT count(*) FROM facts").fetchone()[0] >= 400


def test_cli_commands_print_json(daemon: DaemonProcess) -> None:
    out = daemon.cli("memory", "remember", "the kettle is in the cupboard", "--kind", "home",
                     "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    fact = msgspec.json.decode(out.stdout)
    assert fact["type"] == "memory.fact" and fact["kind"] == "home"
    out = daemon.cli("memory", "search", "where is the kettle", "--json")
    hits = msgspec.json.decode(out.stdout)["hits"]
    assert hits[0]["fact"]["id"] == fact["id"] and hits[0]["score"] > 0
    out = daemon.cli("memory", "stats", "--json")
    assert msgspec.json.decode(out.stdout)["facts"] == 1
    out = daemon.cli("memory", "forget", str(fact["id"]), "--json")
    assert msgspec.json.decode(out.stdout)["type"] == "ack"
    out = daemon.cli("memory", "search", "kettle")
    assert out.stdout.strip() == "no matching facts"
