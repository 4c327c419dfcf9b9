"""``convergio budget show|set``: daily spending limits of the tenant and its agents."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from convergiod import protocol
from convergiod.commands._common import (
    client,
    format_table,
    json_option,
    print_json,
    timeout_option,
)

if TYPE_CHECKING:
    from convergiod.actors.router.messages import BudgetLine
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


def _entry(line: BudgetLine) -> protocol.BudgetEntry:
    return protocol.BudgetEntry(
        scope=line.scope,
        limit=line.limit,
        spent=line.spent,
        fraction=line.fraction,
        state=line.state,
    )


async def serve_show(
    daemon: Daemon, ctx: RequestContext, op: protocol.BudgetShowOp
) -> protocol.BudgetsReply:
    from convergiod.actors.router.messages import BudgetShow

    assert daemon.system is not None
    lines = await daemon.system.ref("router").ask(BudgetShow(tenant=ctx.caller.tenant), timeout=10)
    return protocol.BudgetsReply(tenant=ctx.caller.tenant, budgets=[_entry(x) for x in lines])


async def serve_set(
    daemon: Daemon, ctx: RequestContext, op: protocol.BudgetSetOp
) -> protocol.BudgetsReply:
    from convergiod.actors.router.messages import BudgetSet
    from convergiod.commands._common import check_admin

    check_admin(ctx.caller.role)
    assert daemon.system is not None
    line = await daemon.system.ref("router").ask(
        BudgetSet(tenant=ctx.caller.tenant, limit=op.limit, agent=op.agent), timeout=10
    )
    return protocol.BudgetsReply(tenant=ctx.caller.tenant, budgets=[_entry(line)])


def _render(reply: protocol.BudgetsReply) -> str:
    rows = [("SCOPE", "LIMIT/DAY", "SPENT TODAY", "USED", "STATE")]
    for b in reply.budgets:
        rows.append(
            (
                b.scope,
                f"{b.limit:.4f}" if b.limit else "none",
                f"{b.spent:.6f}",
                f"{100 * b.fraction:.0f}%" if b.limit else "-",
                b.state,
            )
        )
    return format_table(rows)


@click.group()
def cli() -> None:
    """Daily spending limits: warn at 80%, cheaper models at 90%, refuse at 100%."""


@cli.command("show")
@json_option
@timeout_option
def show_cli(as_json: bool, timeout: float) -> None:
    """Show today's budgets and what was spent."""
    with client(timeout) as c:
        reply = c.call(protocol.BudgetShowOp())
    assert isinstance(reply, protocol.BudgetsReply)
    if as_json:
        print_json(reply)
    else:
        click.echo(_render(reply))


@cli.command("set")
@click.argument("limit", type=click.FloatRange(min=0))
@click.option("--agent", default=None, help="Set the limit of this agent, not the tenant's.")
@json_option
@timeout_option
def set_cli(limit: float, agent: str | None, as_json: bool, timeout: float) -> None:
    """Set the daily LIMIT (in the price table's currency; 0 removes it)."""
    with client(timeout) as c:
        reply = c.call(protocol.BudgetSetOp(limit=limit, agent=agent))
    assert isinstance(reply, protocol.BudgetsReply)
    if as_json:
        print_json(reply)
    else:
        click.echo(_render(reply))
