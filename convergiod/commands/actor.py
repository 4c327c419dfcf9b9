"""``convergio actor restart|kill NAME``: operator control of one actor or supervisor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from convergiod import protocol
from convergiod.commands._common import (
    call_ack,
    check_admin,
    json_option,
    timeout_option,
)

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


async def serve_restart(
    daemon: Daemon, ctx: RequestContext, op: protocol.ActorRestart
) -> protocol.Ack:
    check_admin(ctx.caller.role)
    assert daemon.system is not None
    await daemon.system.restart(op.name)
    return protocol.Ack(message=f"restarted {op.name}")


async def serve_kill(daemon: Daemon, ctx: RequestContext, op: protocol.ActorKill) -> protocol.Ack:
    check_admin(ctx.caller.role)
    assert daemon.system is not None
    await daemon.system.kill(op.name)
    return protocol.Ack(message=f"killed {op.name}; its supervisor applies its strategy")


@click.group()
def cli() -> None:
    """Restart or kill an actor (admin)."""


@cli.command()
@click.argument("name")
@json_option
@timeout_option
def restart(name: str, as_json: bool, timeout: float) -> None:
    """Gracefully restart actor NAME (its mailbox is kept)."""
    call_ack(protocol.ActorRestart(name=name), as_json, timeout)


@cli.command()
@click.argument("name")
@json_option
@timeout_option
def kill(name: str, as_json: bool, timeout: float) -> None:
    """Make actor NAME crash abnormally, so its supervisor's strategy applies."""
    call_ack(protocol.ActorKill(name=name), as_json, timeout)
