"""The ZAP handler (ZeroMQ RFC 27): libzmq asks it about every CURVE handshake on a socket
with a ZAP domain, and lets the handshake finish only on status ``200``.

It must be bound (``inproc://zeromq.zap.01``, same context) before the secured socket binds:
without a handler libzmq lets every CURVE client in. While it runs, it answers each request
from the live registry, so a revoked key is refused at its next handshake. The ``User-Id`` it
returns is the client's public key; the gateway reads it from every message's metadata and
looks the key up again, so a revocation also reaches connections already open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
import zmq
import zmq.utils.z85

from convergiod.security.registry import ClientRecord
from convergiod.zmqtrio import TrioSocket, open_socket

log = logging.getLogger("convergiod.security.zap")

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_VERSION = b"1.0"
#: The ZAP domain of the TCP door; other sockets (ipc, PUB) have none and never ask.
DOMAIN = b"convergio"


def answer(
    frames: list[bytes], lookup: Callable[[str], ClientRecord | None]
) -> tuple[list[bytes], str]:
    """The reply to one ZAP request (``frames`` as received on a ``ROUTER``: routing id,
    empty delimiter, then the request), and a line for the log."""
    if len(frames) < 8 or frames[1] != b"":
        return [], "malformed ZAP request dropped"
    ident, _, version, request_id, domain, address, _identity, mechanism = frames[:8]
    credentials = frames[8:]

    def reply(code: bytes, text: str, user: str = "") -> list[bytes]:
        return [ident, b"", ZAP_VERSION, request_id, code, text.encode(), user.encode(), b""]

    peer = address.decode(errors="replace")
    if version != ZAP_VERSION:
        return reply(b"500", "unsupported ZAP version"), f"ZAP version {version!r} from {peer}"
    if domain != DOMAIN or mechanism != b"CURVE" or len(credentials) != 1:
        why = f"mechanism {mechanism.decode(errors='replace')} domain {domain!r}"
        return reply(b"400", "CURVE required"), f"refused {peer}: {why}"
    key = zmq.utils.z85.encode(credentials[0]).decode("ascii")
    client = lookup(key)
    if client is None:
        return reply(b"400", "unknown client key"), f"refused {peer}: key {key[:8]}… not paired"
    return reply(b"200", "OK", key), f"accepted {peer}: client {client.name!r}"


async def serve_zap(
    ctx: zmq.Context[Any],
    lookup: Callable[[str], ClientRecord | None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind the handler, report started (then it is safe to bind the secured socket), and
    answer until cancelled."""
    async with open_socket(ctx, zmq.ROUTER) as sock:
        sock.zmq.bind(ZAP_ENDPOINT)
        task_status.started()
        await _answer_forever(sock, lookup)


async def _answer_forever(sock: TrioSocket, lookup: Callable[[str], ClientRecord | None]) -> None:
    while True:
        frames = await sock.recv_multipart()
        reply, line = answer(frames, lookup)
        log.info("zap: %s", line)
        if reply:
            await sock.send_multipart(reply)
