"""``convergio clients list|revoke``: the clients paired for the CURVE ``tcp://`` door.

Revoking takes effect at once: the key is refused at its next handshake, messages on
connections already open get no reply, and its requests in flight end silently.
"""

from __future__ import annotations

import datetime
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


async def serve_list(
    daemon: Daemon, ctx: RequestContext, op: protocol.ClientsList
) -> protocol.ClientsReply:
    check_admin(ctx.caller.role)
    assert daemon.registry is not None
    return protocol.ClientsReply(
        clients=[
            protocol.ClientEntry(
                name=c.name,
                tenant=c.tenant,
                role=c.role,
                public_key=c.public_key,
                created=c.created,
            )
            for c in daemon.registry.clients()
        ]
    )


async def serve_revoke(
    daemon: Daemon, ctx: RequestContext, op: protocol.ClientRevoke
) -> protocol.Ack:
    import trio

    check_admin(ctx.caller.role)
    assert daemon.registry is not None
    registry = daemon.registry
    async with daemon.access_lock:
        record = await trio.to_thread.run_sync(registry.revoke, op.name)
    dropped = daemon.tcp.drop_client(record.public_key) if daemon.tcp is not None else 0
    return protocol.Ack(message=f"revoked {op.name!r}; {dropped} requests in flight dropped")


@click.group()
def cli() -> None:
    """The clients paired for the tcp door (see `convergio pair`)."""


@cli.command("list")
@json_option
@timeout_option
def list_cli(as_json: bool, timeout: float) -> None:
    """Every paired client: name, tenant, role, key, when paired."""
    with client(timeout) as c:
        reply = c.call(protocol.ClientsList())
    assert isinstance(reply, protocol.ClientsReply)
    if as_json:
        print_json(reply.clients)
        return
    rows = [("NAME", "TENANT", "ROLE", "KEY", "PAIRED")]
    for e in reply.clients:
        when = datetime.datetime.fromtimestamp(e.created).strftime("%Y-%m-%d %H:%M")
        rows.append((e.name, e.tenant, e.role, e.public_key[:12] + "…", when))
    click.echo(format_table(rows))


@cli.command("revoke")
@click.argument("name")
@json_option
@timeout_option
def revoke_cli(name: str, as_json: bool, timeout: float) -> None:
    """Unlist client NAME (effective at once, no restart)."""
    call_ack(protocol.ClientRevoke(name=name), as_json, timeout)
