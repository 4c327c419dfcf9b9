"""``convergio pair NAME``: let a frontend in through the CURVE ``tcp://`` door.

Makes a client key pair here, lists its public half with the daemon (tenant, role), and writes
a connection file (mode 0600) with the endpoint, the daemon's public key and the client's keys.
Hand that file to the frontend; ``convergio clients revoke NAME`` shuts it out again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from convergiod import protocol
from convergiod.commands._common import (
    check_admin,
    client,
    json_option,
    print_json,
    timeout_option,
)

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


async def serve(
    daemon: Daemon, ctx: RequestContext, op: protocol.ClientPair
) -> protocol.ClientPaired:
    import trio

    from convergiod.security.keys import ServerKeys, server_key_path

    check_admin(ctx.caller.role)
    assert daemon.registry is not None
    registry = daemon.registry
    async with daemon.access_lock:
        record = await trio.to_thread.run_sync(
            registry.pair, op.name, op.public_key, op.tenant, op.role
        )
    keys = ServerKeys(server_key_path(daemon.paths.data_dir))
    server_key = await trio.to_thread.run_sync(keys.public)
    return protocol.ClientPaired(
        name=record.name,
        tenant=record.tenant,
        role=record.role,
        endpoint=daemon.tcp.endpoint if daemon.tcp is not None else "",
        server_key=server_key,
    )


def connect_endpoint(bound: str, host: str | None) -> str:
    """The endpoint a client should dial: the bound one, with a wildcard address (or any
    address, when ``host`` is given) replaced."""
    m = re.fullmatch(r"tcp://(\[[^\]]*\]|[^:]*):(\d+)", bound)
    if m is None:
        return bound
    address, port = m.groups()
    if host is None:
        if address not in ("0.0.0.0", "*", "[::]", "[::0]"):
            return bound
        host = "127.0.0.1"
    return f"tcp://{host}:{port}"


@click.command()
@click.argument("name")
@click.option("--tenant", default="local", show_default=True, help="The client's tenant.")
@click.option(
    "--role",
    type=click.Choice(["user", "admin"]),
    default="user",
    show_default=True,
    help="admin may run daemon-wide ops (give it only to the owner's own devices).",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the connection file [default: ./NAME.convergio.json].",
)
@click.option("--host", default=None, help="Host name clients dial (default: as bound).")
@click.option(
    "--public-key", default=None, help="Pair a key made by the frontend (no secret is written)."
)
@click.option("--force", is_flag=True, help="Overwrite an existing connection file.")
@json_option
@timeout_option
def cli(
    name: str,
    tenant: str,
    role: str,
    out: Path | None,
    host: str | None,
    public_key: str | None,
    force: bool,
    as_json: bool,
    timeout: float,
) -> None:
    """Pair a client NAME and write its connection file (mode 0600)."""
    import zmq

    from convergiod.security.connection import ConnectionFile, write_connection

    out = out or Path(f"{name}.convergio.json")
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists; use --force to overwrite it")
    if public_key is None:
        pub, sec = (k.decode("ascii") for k in zmq.curve_keypair())
    else:
        pub, sec = public_key, ""
    role_: protocol.Role = "admin" if role == "admin" else "user"
    with client(timeout) as c:
        reply = c.call(protocol.ClientPair(name=name, public_key=pub, tenant=tenant, role=role_))
    assert isinstance(reply, protocol.ClientPaired)
    conn = ConnectionFile(
        name=reply.name,
        tenant=reply.tenant,
        role=reply.role,
        endpoint=connect_endpoint(reply.endpoint, host) if reply.endpoint else "",
        server_key=reply.server_key,
        public_key=pub,
        secret_key=sec,
    )
    write_connection(out, conn, overwrite=force)
    if as_json:
        print_json({"file": str(out.absolute()), "name": name, "tenant": tenant, "role": role})
        return
    click.echo(f"paired {name!r} (tenant {reply.tenant}, role {reply.role}); wrote {out}")
    if not reply.endpoint:
        click.echo(
            "note: the tcp door is off; set gateway.tcp in config.toml, restart the daemon, "
            "then put its address in the file's endpoint",
            err=True,
        )
