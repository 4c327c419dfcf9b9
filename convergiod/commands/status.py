"""``convergio status``: version, pid, uptime, gateway counters and every actor's state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from convergiod import protocol
from convergiod.commands._common import client, json_option, print_json, timeout_option

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


async def serve(daemon: Daemon, ctx: RequestContext, op: protocol.Status) -> protocol.StatusReply:
    from convergiod.actors.system import StatusQuery

    assert daemon.system is not None
    reply: protocol.StatusReply = await daemon.system.ref("system").ask(
        StatusQuery(tenant=ctx.caller.tenant, role=ctx.caller.role), timeout=5.0
    )
    return reply


def fetch(timeout: float) -> protocol.StatusReply:
    with client(timeout) as c:
        reply = c.call(protocol.Status())
    assert isinstance(reply, protocol.StatusReply)
    return reply


def render_actors(actors: list[protocol.ActorStatus]) -> str:
    rows = [("NAME", "KIND", "PARENT", "STATE", "RESTARTS", "MAILBOX", "HANDLED", "LAST ERROR")]
    for a in actors:
        rows.append(
            (
                a.name,
                a.kind,
                a.parent or "-",
                a.state,
                str(a.restarts),
                str(a.mailbox_depth),
                str(a.handled),
                a.last_error or "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ).rstrip()


@click.command()
@json_option
@timeout_option
def cli(as_json: bool, timeout: float) -> None:
    """Show the daemon's version, pid, uptime, health and the state of every actor."""
    s = fetch(timeout)
    if as_json:
        print_json(s)
        return
    g = s.gateway
    click.echo(
        f"convergiod {s.version} (protocol {s.protocol}), pid {s.pid}, up {s.uptime:.1f} s, "
        f"{'healthy' if s.healthy else 'UNHEALTHY'} (loop lag {s.loop_lag_ms:.1f} ms)\n"
        f"home {s.home}; you are {s.role} of tenant {s.tenant}\n"
        f"gateway {g.endpoint}: {g.in_flight} in flight, {g.requests} requests, "
        f"{g.failures} failures; events on {g.events_endpoint}\n"
    )
    click.echo(render_actors(s.actors))
