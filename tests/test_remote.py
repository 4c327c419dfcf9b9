"""The CURVE tcp door through real sockets on loopback: only listed keys get a single reply,
each gets exactly its tenant and role, revocation works at once, and the ipc socket stays the
owner's admin door."""

from __future__ import annotations

import os
import stat
import time
from typing import Any

import pytest
import zmq

from convergio_client import Client, ClientTimeout, RemoteError
from convergiod import protocol as p
from tests.conftest import DaemonProcess
from tests.remote_helpers import (
    TCP_CONFIG,
    add_tenant,
    cli_json,
    connection_path,
    gets_no_reply,
    pair,
    raw_dealer,
)


@pytest.fixture
def zctx() -> Any:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_tcp_door_is_off_by_default_and_pairing_says_so(daemon: DaemonProcess) -> None:
    conn = pair(daemon, "phone")
    assert conn.endpoint == ""
    with daemon.client() as c:
        status = c.call(p.Status())
    assert (status.tenant, status.role) == ("local", "admin")
    assert "tcp" not in status.gateway.endpoint


def test_a_paired_client_gets_its_tenant_and_role_and_ipc_stays_local_admin(
    daemon_factory: Any,
) -> None:
    d: DaemonProcess = daemon_factory(TCP_CONFIG)
    add_tenant(d, "acme")
    conn = pair(d, "phone", "acme", "user")
    assert conn.endpoint.startswith("tcp://127.0.0.1:")
    with Client(connection=conn, timeout=5) as c:
        assert c.call(p.Ping(echo=b"x")).echo == b"x"
        status = c.call(p.Status())
        assert (status.tenant, status.role) == ("acme", "user")
        ticks = [e.n for e in c.stream(p.Ping(count=3, interval=0.01))]
        assert ticks == [1, 2, 3]
    with d.client() as c:
        status = c.call(p.Status())
    assert (status.tenant, status.role) == ("local", "admin")


def test_unlisted_key_no_curve_wrong_server_key_or_stolen_public_key_get_no_reply(
    daemon_factory: Any, zctx: Any
) -> None:
    d: DaemonProcess = daemon_factory(TCP_CONFIG)
    conn = pair(d, "phone")
    other_server, _ = zmq.curve_keypair()
    _, wrong_secret = zmq.curve_keypair()
    attackers = {
        "unlisted key": raw_dealer(zctx, conn.endpoint, server_key=conn.server_key),
        "no CURVE": raw_dealer(zctx, conn.endpoint),
        "wrong server key": raw_dealer(
            zctx,
            conn.endpoint,
            server_key=other_server.decode(),
            keys=(conn.public_key.encode(), conn.secret_key.encode()),
        ),
        "listed public key, wrong secret": raw_dealer(
            zctx,
            conn.endpoint,
            server_key=conn.server_key,
            keys=(conn.public_key.encode(), wrong_secret),
        ),
    }
    silent = {name: gets_no_reply(sock, wait=0.5) for name, sock in attackers.items()}
    assert all(silent.values()), silent
    # The listed key on the same door is answered, and the daemon is unharmed.
    with Client(connection=conn, timeout=5) as c:
        assert c.call(p.Status()).tenant == "local"
    assert "refused 127.0.0.1" in d.logs()


def test_revoking_silences_open_connections_and_inflight_requests_without_restart(
    daemon_factory: Any, zctx: Any
) -> None:
    d: DaemonProcess = daemon_factory(TCP_CONFIG)
    conn = pair(d, "laptop")
    sock = raw_dealer(
        zctx,
        conn.endpoint,
        server_key=conn.server_key,
        keys=(conn.public_key.encode(), conn.secret_key.encode()),
    )
    sock.send(p.encode(p.Request(id=9, op=p.Ping(count=1000, interval=0.02))))
    assert sock.poll(5000), "no tick before the revocation"
    first = p.decode_server(sock.recv())
    assert isinstance(first, p.Event)

    assert (
        "revoked 'laptop'; 1 requests in flight dropped"
        in cli_json(d, "clients", "revoke", "laptop")["message"]
    )
    # Frames already on the wire may still land; then nothing, not even a terminal frame.
    late: list[Any] = []
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline and sock.poll(50):
        late.append(p.decode_server(sock.recv()))
    assert all(isinstance(m, p.Event) for m in late) and len(late) < 10
    assert gets_no_reply(sock, wait=0.7)
    with pytest.raises(ClientTimeout), Client(connection=conn, timeout=0.7) as c:
        c.call(p.Ping())
    assert cli_json(d, "clients", "list") == []


def test_connection_registry_and_server_key_files_are_owner_only(daemon_factory: Any) -> None:
    d: DaemonProcess = daemon_factory(TCP_CONFIG)
    pair(d, "phone")
    security = d.paths.data_dir / "security"
    files = [connection_path(d, "phone"), security / "registry.json", security / "server_key.json"]
    for f in files:
        assert stat.S_IMODE(os.stat(f).st_mode) == 0o600, f
    assert stat.S_IMODE(os.stat(security).st_mode) == 0o700
    assert d.cli("pair", "phone", "--out", str(d.home / "again.json")).returncode != 0


#: Every admin-only op, with arguments that would otherwise be valid enough to run.
ADMIN_OPS: list[p.Op] = [
    p.ActorKill(name="health"),
    p.ActorRestart(name="health"),
    p.DaemonReload(),
    p.Shutdown(),
    p.BudgetSetOp(limit=1.0),
    p.PluginInstall(path="/nonexistent"),
    p.PluginRemove(name="x"),
    p.PluginCall(plugin="x", tool="y"),
    p.MemoryExport(path="/tmp/cvg-export.jsonl"),
    p.MemoryImport(path="/tmp/cvg-export.jsonl"),
    p.MemoryBackup(path="/tmp/cvg-backup.db"),
    p.ClientPair(name="evil", public_key="0" * 40, tenant="local", role="admin"),
    p.ClientsList(),
    p.ClientRevoke(name="phone"),
    p.TenantAdd(name="evil"),
    p.TenantList(),
    p.TenantRemove(name="acme"),
]


def test_a_user_client_is_forbidden_every_admin_op(daemon_factory: Any) -> None:
    d: DaemonProcess = daemon_factory(TCP_CONFIG)
    add_tenant(d, "acme")
    conn = pair(d, "phone", "acme", "user")
    with Client(connection=conn, timeout=5) as c:
        for op in ADMIN_OPS:
            with pytest.raises(RemoteError) as info:
                c.call(op)
            assert info.value.code == "forbidden", (op, info.value)
        assert c.call(p.Status()).healthy
    with d.client() as c:
        health = next(a for a in c.call(p.Status()).actors if a.name == "health")
    assert health.restarts == 0
    assert [t["name"] for t in cli_json(d, "tenant", "list")] == ["acme", "local"]


def test_an_admin_client_runs_admin_ops_in_its_own_tenant(daemon_factory: Any) -> None:
    d: DaemonProcess = daemon_factory(TCP_CONFIG)
    add_tenant(d, "acme")
    conn = pair(d, "owner-tablet", "acme", "admin")
    with Client(connection=conn, timeout=5) as c:
        assert [t.name for t in c.call(p.TenantList()).tenants] == ["acme", "local"]
        assert c.call(p.BudgetSetOp(limit=3.0)).tenant == "acme"
    with d.client() as c:
        assert c.call(p.BudgetShowOp()).budgets[0].limit != 3.0
