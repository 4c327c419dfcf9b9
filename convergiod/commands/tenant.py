"""``convergio tenant add|list|remove``: who shares this daemon.

Every op runs in its caller's tenant: its own memory database, usage ledger and budgets,
remembered approvals and trash. A tenant's clients (``convergio pair --tenant``) may use as
workspaces only the tenant's ``--root`` directories on the daemon's machine. Removing a tenant
revokes its clients; its data stays on disk.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from convergiod import protocol
from convergiod.commands._common import (
    call_ack,
    check_admin,
    client,
    format_table,
    json_option,
    print_json,
    timeout_option,
)

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext
    from convergiod.security.registry import TenantRecord


def _entry(daemon: Daemon, t: TenantRecord) -> protocol.TenantEntry:
    from convergiod.security.door import tenant_limits

    assert daemon.registry is not None
    limits = tenant_limits(daemon.config.gateway, daemon.registry, t.name)
    return protocol.TenantEntry(
        name=t.name,
        created=t.created,
        rate=limits.rate,
        burst=limits.burst,
        max_in_flight=limits.max_in_flight,
        roots=t.roots,
        clients=sum(1 for c in daemon.registry.clients() if c.tenant == t.name),
    )


async def serve_add(
    daemon: Daemon, ctx: RequestContext, op: protocol.TenantAdd
) -> protocol.TenantsReply:
    import trio

    from convergiod.errors import OpError
    from convergiod.security.registry import TenantRecord

    check_admin(ctx.caller.role)
    assert daemon.registry is not None
    for root in op.roots:
        if not os.path.isabs(root):
            raise OpError("bad_request", f"root {root!r} is not an absolute path")
    roots = await trio.to_thread.run_sync(lambda: [os.path.realpath(r) for r in op.roots])
    record = TenantRecord(
        name=op.name,
        created=time.time(),
        rate=op.rate,
        burst=op.burst,
        max_in_flight=op.max_in_flight,
        roots=roots,
    )
    async with daemon.access_lock:
        await trio.to_thread.run_sync(daemon.registry.add_tenant, record)
    return protocol.TenantsReply(tenants=[_entry(daemon, record)])


async def serve_list(
    daemon: Daemon, ctx: RequestContext, op: protocol.TenantList
) -> protocol.TenantsReply:
    check_admin(ctx.caller.role)
    assert daemon.registry is not None
    return protocol.TenantsReply(tenants=[_entry(daemon, t) for t in daemon.registry.tenants()])


async def serve_remove(
    daemon: Daemon, ctx: RequestContext, op: protocol.TenantRemove
) -> protocol.Ack:
    import trio

    check_admin(ctx.caller.role)
    assert daemon.registry is not None
    registry = daemon.registry
    async with daemon.access_lock:
        gone = await trio.to_thread.run_sync(registry.remove_tenant, op.name)
    if daemon.tcp is not None:
        for record in gone:
            daemon.tcp.drop_client(record.public_key)
    return protocol.Ack(
        message=f"removed tenant {op.name!r} and revoked {len(gone)} clients; its data stays"
    )


@click.group()
def cli() -> None:
    """Tenants: separate memory, budgets, usage and approvals on one daemon."""


@cli.command("add")
@click.argument("name")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, help="Requests/s (0: default).")
@click.option("--burst", type=click.IntRange(min=0), default=0, help="Burst size (0: default).")
@click.option(
    "--max-in-flight", type=click.IntRange(min=0), default=0, help="Concurrency (0: default)."
)
@click.option(
    "--root",
    "roots",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A directory the tenant's tools may work in (repeatable).",
)
@json_option
@timeout_option
def add_cli(
    name: str,
    rate: float,
    burst: int,
    max_in_flight: int,
    roots: tuple[Path, ...],
    as_json: bool,
    timeout: float,
) -> None:
    """Add tenant NAME."""
    op = protocol.TenantAdd(
        name=name,
        rate=rate,
        burst=burst,
        max_in_flight=max_in_flight,
        roots=[str(r.absolute()) for r in roots],
    )
    with client(timeout) as c:
        reply = c.call(op)
    assert isinstance(reply, protocol.TenantsReply)
    if as_json:
        print_json(reply.tenants[0])
    else:
        click.echo(f"added tenant {name!r}")


@cli.command("list")
@json_option
@timeout_option
def list_cli(as_json: bool, timeout: float) -> None:
    """Every tenant with its limits, workspace roots and number of paired clients."""
    with client(timeout) as c:
        reply = c.call(protocol.TenantList())
    assert isinstance(reply, protocol.TenantsReply)
    if as_json:
        print_json(reply.tenants)
        return
    rows = [("TENANT", "CLIENTS", "RATE/S", "BURST", "IN FLIGHT", "ROOTS")]
    for t in reply.tenants:
        rows.append(
            (
                t.name,
                str(t.clients),
                f"{t.rate:g}",
                str(t.burst),
                str(t.max_in_flight),
                ", ".join(t.roots) or "-",
            )
        )
    click.echo(format_table(rows))


@cli.command("remove")
@click.argument("name")
@json_option
@timeout_option
def remove_cli(name: str, as_json: bool, timeout: float) -> None:
    """Remove tenant NAME and revoke its clients (its data stays on disk)."""
    call_ack(protocol.TenantRemove(name=name), as_json, timeout)
