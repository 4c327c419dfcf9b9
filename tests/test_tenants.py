"""Tenants over the tcp door: each sees and spends only its own (memory, export, usage,
budgets, tasks, remembered approvals), and one tenant flooding the daemon is limited while
the others are served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from convergio_client import Client, RemoteError
from convergio_client.trio_client import open_client
from convergiod import protocol as p
from tests.conftest import DaemonProcess
from tests.llm_server import LLMServer
from tests.remote_helpers import TCP_CONFIG, add_tenant, cli_json, pair


def _router(port: int) -> str:
    return f"""
[router]
default = "fake"
[router.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
[router.models.fake]
provider = "mock"
upstream = "text;chunks=3"
input_price = 1000.0
output_price = 2000.0
[tools.policy]
"fs.list" = "ask"
"""


def test_tenant_add_list_remove_and_removal_revokes_its_clients(daemon_factory: Any) -> None:
    d: DaemonProcess = daemon_factory(TCP_CONFIG)
    add_tenant(d, "acme", "--rate", "5", "--max-in-flight", "3", "--root", str(d.home))
    listed = {t["name"]: t for t in cli_json(d, "tenant", "list")}
    assert listed["acme"]["rate"] == 5 and listed["acme"]["max_in_flight"] == 3
    assert listed["acme"]["burst"] == 400 and listed["acme"]["roots"] == [str(d.home)]
    assert d.cli("tenant", "add", "acme").returncode != 0
    assert "invalid tenant name" in d.cli("tenant", "add", "../x").stderr
    assert "cannot be removed" in d.cli("tenant", "remove", "local").stderr
    assert "no tenant named" in d.cli("pair", "x", "--tenant", "nope").stderr
    conn = pair(d, "phone", "acme")
    with Client(connection=conn, timeout=5) as c:
        assert c.call(p.Status()).tenant == "acme"
    assert "revoked 1 clients" in cli_json(d, "tenant", "remove", "acme")["message"]
    assert cli_json(d, "clients", "list") == []
    assert [t["name"] for t in cli_json(d, "tenant", "list")] == ["local"]


async def test_tenant_a_cannot_read_search_export_or_spend_in_tenant_b(
    daemon_factory: Any,
    nursery: trio.Nursery,
) -> None:
    server = LLMServer()
    port = await nursery.start(server.serve)
    d: DaemonProcess = await trio.to_thread.run_sync(daemon_factory, TCP_CONFIG + _router(port))
    shared = d.home / "shared"
    shared.mkdir()
    conns: dict[str, Any] = {}

    def setup() -> None:
        for t in ("a", "b"):
            add_tenant(d, t, "--root", str(shared))
            conns[t] = pair(d, f"{t}-user", t, "user")
            conns[t + "-admin"] = pair(d, f"{t}-admin", t, "admin")

    await trio.to_thread.run_sync(setup)
    chat = p.ModelChat(messages=[p.ChatMessage(role="user", content="hi")])
    async with (
        open_client(connection=conns["a"], timeout=20) as a,
        open_client(connection=conns["b"], timeout=20) as b,
        open_client(connection=conns["a-admin"], timeout=20) as a_admin,
        open_client(connection=conns["b-admin"], timeout=20) as b_admin,
    ):
        # Memory: A's fact is invisible to B by search, stats, forget and export.
        fact = await a.call(p.MemoryRemember(text="the launch code is alpha-seven"))
        assert len((await a.call(p.MemorySearch(query="launch code"))).hits) == 1
        assert (await b.call(p.MemorySearch(query="launch code"))).hits == []
        assert (await b.call(p.MemoryStats())).facts == 0
        with pytest.raises(RemoteError) as info:
            await b.call(p.MemoryForget(id=fact.id))
        assert info.value.code == "not_found"
        for name, client in (("a", a_admin), ("b", b_admin)):
            await client.call(p.MemoryExport(path=str(d.home / f"{name}.jsonl")))
        exported = {
            n: [
                json.loads(line)["record"]["type"]
                for line in (d.home / f"{n}.jsonl").read_text().splitlines()
            ].count("fact")
            for n in ("a", "b")
        }
        assert exported == {"a": 1, "b": 0}

        # Spending: A's calls land in A's ledger; A's budget blocks A, never B.
        assert (await a.call(chat)).cost > 0
        # The router records usage just after it sends the answer: wait for the row.
        with trio.fail_after(10):
            while not (await a.call(p.UsageReport(by="model"))).rows:  # noqa: ASYNC110 - another process
                await trio.sleep(0.02)
        assert len((await a.call(p.UsageReport(by="model"))).rows) == 1
        assert (await b.call(p.UsageReport(by="model"))).rows == []
        blocked = await a_admin.call(p.BudgetSetOp(limit=1e-9))
        assert blocked.tenant == "a" and blocked.budgets[0].state == "block"
        with pytest.raises(RemoteError) as info:
            await a.call(chat)
        assert info.value.code == "budget_exceeded"
        assert (await b.call(chat)).cost > 0
        assert (await b.call(p.BudgetShowOp())).budgets[0].limit == 0

        # Tasks: B cannot list or open A's.
        await a_admin.call(p.BudgetSetOp(limit=0))
        answer = await a.call(p.Ask(prompt="hello"))
        assert [t.task for t in (await a.call(p.TaskListOp())).tasks] == [answer.task]
        assert (await b.call(p.TaskListOp())).tasks == []
        with pytest.raises(RemoteError) as info:
            await b.call(p.TaskShowOp(task=answer.task))
        assert info.value.code == "not_found"

        # Approvals: A's "always" is remembered for A only.
        async def list_shared(client: Any, decision: p.ApprovalDecision) -> int:
            asked = 0
            op = p.ToolRun(name="fs.list", args={"path": "."}, workspace=str(shared))
            async with client.stream(op) as events:
                async for event in events:
                    if isinstance(event, p.ApprovalRequest):
                        asked += 1
                        await events.answer(event.approval, decision)
            return asked

        assert await list_shared(a, "always") == 1
        assert await list_shared(a, "deny") == 0  # remembered: not asked again
        assert await list_shared(b, "once") == 1  # B was never asked: asked now

        # Workspaces: only the tenant's roots.
        with pytest.raises(RemoteError) as info:
            await a.call(p.ToolRun(name="fs.list", args={"path": "."}, workspace="/etc"))
        assert info.value.code == "sandbox_denied"

    # The owner's tenant over ipc sees none of it.
    async with open_client(paths=d.paths, timeout=20) as local:
        assert (await local.call(p.MemorySearch(query="launch code"))).hits == []
        assert (await local.call(p.UsageReport())).rows == []


async def _ping_latency(client: Any, count: int) -> float:
    worst = 0.0
    for _ in range(count):
        start = trio.current_time()
        await client.call(p.Ping())
        worst = max(worst, trio.current_time() - start)
    return worst


async def test_a_flooding_tenant_gets_overloaded_with_a_hint_while_others_are_served(
    daemon_factory: Any,
) -> None:
    d: DaemonProcess = await trio.to_thread.run_sync(daemon_factory, TCP_CONFIG)

    def setup() -> dict[str, Any]:
        add_tenant(d, "flood", "--rate", "20", "--burst", "20")
        add_tenant(d, "calm")
        return {"flood": pair(d, "f", "flood"), "calm": pair(d, "c", "calm")}

    conns = await trio.to_thread.run_sync(setup)
    outcomes: list[float | None] = []
    async with (
        open_client(connection=conns["flood"], timeout=20) as flood,
        open_client(connection=conns["calm"], timeout=20) as calm,
    ):

        async def one() -> None:
            try:
                await flood.call(p.Ping())
                outcomes.append(None)
            except RemoteError as exc:
                assert exc.code == "overloaded"
                outcomes.append(exc.retry_after)

        async with trio.open_nursery() as n:
            for _ in range(400):
                n.start_soon(one)
            worst = await _ping_latency(calm, 50)
        assert worst < 1.0
    admitted = sum(1 for o in outcomes if o is None)
    refused = [o for o in outcomes if o is not None]
    assert 20 <= admitted < 200 and len(refused) == 400 - admitted
    assert all(r > 0 for r in refused)


async def test_a_tenant_at_its_concurrency_limit_gets_overloaded_and_others_continue(
    daemon_factory: Any,
) -> None:
    d: DaemonProcess = await trio.to_thread.run_sync(daemon_factory, TCP_CONFIG)

    def setup() -> dict[str, Any]:
        add_tenant(d, "busy", "--max-in-flight", "2")
        add_tenant(d, "calm")
        return {"busy": pair(d, "b", "busy"), "calm": pair(d, "c", "calm")}

    conns = await trio.to_thread.run_sync(setup)
    long = p.Ping(count=1000, interval=0.05)
    async with (
        open_client(connection=conns["busy"], timeout=20) as busy,
        open_client(connection=conns["calm"], timeout=20) as calm,
    ):
        async with busy.stream(long) as s1, busy.stream(long) as s2:
            for s in (s1, s2):  # both running
                assert isinstance(await s.__anext__(), p.Tick)
            with pytest.raises(RemoteError) as info:
                await busy.call(long)
            assert info.value.code == "overloaded" and info.value.retry_after
            async with calm.stream(long) as c1, calm.stream(long) as c2, calm.stream(long) as c3:
                for s in (c1, c2, c3):
                    assert isinstance(await s.__anext__(), p.Tick)
            assert await _ping_latency(calm, 20) < 1.0
        # Cancelled on leaving the blocks: the slots come free again (retrying on the hint).
        with trio.fail_after(5):
            while True:
                try:
                    assert (await busy.call(p.Ping(count=1))).pid
                    break
                except RemoteError as exc:
                    assert exc.code == "overloaded" and exc.retry_after
                    await trio.sleep(exc.retry_after)


def test_registry_file_is_json_the_operator_can_read(tmp_path: Path) -> None:
    from convergiod.security.registry import Registry, TenantRecord

    reg = Registry(tmp_path / "security" / "registry.json")
    reg.add_tenant(TenantRecord(name="acme", created=1.0))
    key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    reg.pair("phone", key, "acme", "user")
    data = json.loads((tmp_path / "security" / "registry.json").read_text())
    assert data["clients"]["phone"]["public_key"] == key
    again = Registry(tmp_path / "security" / "registry.json")
    assert again.lookup(key) is not None and again.lookup(key).tenant == "acme"  # type: ignore[union-attr]
    again.revoke("phone")
    assert again.lookup(key) is None
