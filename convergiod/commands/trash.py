"""``convergio trash list|restore``: what ``fs.delete`` removed and ``fs.edit`` replaced."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from convergiod import protocol
from convergiod.commands._common import client, json_option, print_json, timeout_option

if TYPE_CHECKING:
    from convergiod.actors.tool.trash import Trash
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


def _trash(daemon: Daemon) -> Trash:
    from convergiod.actors.tool.trash import Trash

    return Trash(daemon.paths.data_dir / "trash")


async def serve_list(
    daemon: Daemon, ctx: RequestContext, op: protocol.TrashList
) -> protocol.TrashListReply:
    import trio

    items = await trio.to_thread.run_sync(_trash(daemon).list, ctx.caller.tenant)
    return protocol.TrashListReply(
        items=[
            protocol.TrashEntry(
                id=i.id, path=i.path, kind=i.kind, time=i.time, size=i.size, is_dir=i.is_dir
            )
            for i in items
        ]
    )


async def serve_restore(
    daemon: Daemon, ctx: RequestContext, op: protocol.TrashRestore
) -> protocol.Ack:
    import functools

    import trio

    restore = functools.partial(_trash(daemon).restore, ctx.caller.tenant, op.id, force=op.force)
    item = await trio.to_thread.run_sync(restore)
    return protocol.Ack(message=f"restored {item.path}")


@click.group()
def cli() -> None:
    """List or restore what tools deleted (fs.delete) or replaced (fs.edit backups)."""


@cli.command("list")
@json_option
@timeout_option
def list_cmd(as_json: bool, timeout: float) -> None:
    """Items in the trash, newest first."""
    with client(timeout) as c:
        reply = c.call(protocol.TrashList())
    assert isinstance(reply, protocol.TrashListReply)
    if as_json:
        print_json(reply.items)
        return
    if not reply.items:
        click.echo("the trash is empty")
    for i in reply.items:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(i.time))
        kind = f"{i.kind}{'/' if i.is_dir else ''}"
        click.echo(f"{i.id}  {when}  {kind:<8}  {i.size:>10}  {i.path}")


@cli.command("restore")
@click.argument("item_id", metavar="ID")
@click.option("--force", is_flag=True, help="Replace what is there now (it goes to the trash).")
@json_option
@timeout_option
def restore_cmd(item_id: str, force: bool, as_json: bool, timeout: float) -> None:
    """Put trash item ID back where it was."""
    with client(timeout) as c:
        ack = c.call(protocol.TrashRestore(id=item_id, force=force))
    if as_json:
        print_json(ack)
    else:
        click.echo(ack.message)
