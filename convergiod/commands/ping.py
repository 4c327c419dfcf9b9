"""``convergio ping``: is the daemon alive, and how fast does it answer?"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from convergiod import protocol
from convergiod.commands._common import client, json_option, print_json, timeout_option

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


async def serve(daemon: Daemon, ctx: RequestContext, op: protocol.Ping) -> protocol.Pong:
    import os

    import trio

    from convergiod import __version__

    for n in range(1, op.count + 1):
        if op.interval:
            await trio.sleep(op.interval)
        await ctx.emit(protocol.Tick(n=n))
    return protocol.Pong(
        version=__version__, protocol=protocol.PROTOCOL_VERSION, pid=os.getpid(), echo=op.echo
    )


@click.command()
@click.option(
    "--count",
    type=click.IntRange(0, 100_000),
    default=0,
    help="Stream this many ticks before the pong.",
)
@click.option(
    "--interval", type=click.FloatRange(0, 60), default=0.0, help="Seconds between ticks."
)
@json_option
@timeout_option
def cli(count: int, interval: float, as_json: bool, timeout: float) -> None:
    """Check that the daemon answers; print its version, pid and the round-trip time."""
    with client(timeout) as c:
        start = time.perf_counter()
        stream = c.stream(protocol.Ping(count=count, interval=interval))
        for event in stream:
            if not as_json:
                click.echo(f"tick {event.n}" if isinstance(event, protocol.Tick) else str(event))
        elapsed = time.perf_counter() - start
    pong = stream.result
    assert isinstance(pong, protocol.Pong)
    if as_json:
        print_json({**protocol.to_builtins(pong), "rtt_ms": round(elapsed * 1e3, 3)})
    else:
        click.echo(
            f"pong from convergiod {pong.version} (pid {pong.pid}) in {elapsed * 1e3:.2f} ms"
        )
