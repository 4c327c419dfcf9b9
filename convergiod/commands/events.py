"""``convergio events``: tail the daemon's PUB stream (actor lifecycle, tasks, usage)."""

from __future__ import annotations

import time
from typing import Any

import click

from convergiod import protocol
from convergiod.commands._common import json_option, print_json


@click.command()
@click.option("--topic", "topics", multiple=True, help="Topic prefix to follow (repeatable).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after N events.")
@click.option(
    "--timeout", type=click.FloatRange(min=0.01), default=None, help="Exit after this many seconds."
)
@json_option
def cli(topics: tuple[str, ...], count: int | None, timeout: float | None, as_json: bool) -> None:
    """Print events as they happen, until interrupted."""
    import zmq

    from convergio_client.sync import check_running
    from convergiod.paths import resolve

    paths = resolve()
    check_running(paths)
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for topic in topics or ("",):
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(paths.events_endpoint)
    seen = 0
    end = None if timeout is None else time.monotonic() + timeout
    try:
        while count is None or seen < count:
            wait = None if end is None else max(0, int((end - time.monotonic()) * 1000))
            if not sock.poll(wait):
                break
            _topic, payload = sock.recv_multipart()
            event = protocol.decode_pub(payload)
            seen += 1
            if as_json:
                print_json(event)
            else:
                stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
                data = " ".join(f"{k}={v}" for k, v in event.data.items())
                click.echo(f"{stamp} {event.topic} {data}".rstrip(), nl=True)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        ctx.term()
