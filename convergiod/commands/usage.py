"""``convergio usage``: tokens and cost from the usage ledger, by agent, model or day."""

from __future__ import annotations

import time
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
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


async def serve(
    daemon: Daemon, ctx: RequestContext, op: protocol.UsageReport
) -> protocol.UsageReply:
    from convergiod.actors.memory.messages import UsageQuery

    assert daemon.system is not None
    rows = await daemon.system.ref("router").ask(
        UsageQuery(tenant=ctx.caller.tenant, by=op.by, since=op.since), timeout=10
    )
    return protocol.UsageReply(
        by=op.by,
        rows=[
            protocol.UsageRowEntry(
                key=r.key,
                calls=r.calls,
                input_tokens=r.input_tokens,
                output_tokens=r.output_tokens,
                cost=r.cost,
            )
            for r in rows
        ],
    )


@click.command()
@click.option(
    "--by", type=click.Choice(["agent", "model", "day"]), default="day", show_default=True
)
@click.option("--days", type=click.IntRange(min=1), default=None, help="Only the last N days.")
@json_option
@timeout_option
def cli(by: str, days: int | None, as_json: bool, timeout: float) -> None:
    """Show model calls, tokens and cost, grouped by agent, model or day."""
    since = time.time() - days * 86400 if days else None
    with client(timeout) as c:
        reply = c.call(protocol.UsageReport(by=by, since=since))  # type: ignore[arg-type]
    assert isinstance(reply, protocol.UsageReply)
    if as_json:
        print_json(reply)
        return
    rows = [(by.upper(), "CALLS", "INPUT", "OUTPUT", "COST")]
    for row in reply.rows:
        rows.append(
            (
                row.key,
                str(row.calls),
                str(row.input_tokens),
                str(row.output_tokens),
                f"{row.cost:.6f}",
            )
        )
    total_cost = sum(r.cost for r in reply.rows)
    rows.append(
        (
            "total",
            str(sum(r.calls for r in reply.rows)),
            str(sum(r.input_tokens for r in reply.rows)),
            str(sum(r.output_tokens for r in reply.rows)),
            f"{total_cost:.6f}",
        )
    )
    click.echo(format_table(rows))
