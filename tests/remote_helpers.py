"""Shared by the remote-access tests: a daemon with the CURVE tcp door on a free loopback
port, tenants and paired clients made through the real CLI, raw sockets for the attacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zmq

from convergiod import protocol
from convergiod.security.connection import ConnectionFile, load_connection
from tests.conftest import DaemonProcess

TCP_CONFIG = '[gateway]\ntcp = "tcp://127.0.0.1:*"\n'


def cli_json(d: DaemonProcess, *args: str) -> Any:
    out = d.cli(*args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def add_tenant(d: DaemonProcess, name: str, *options: str) -> None:
    cli_json(d, "tenant", "add", name, *options)


def pair(d: DaemonProcess, name: str, tenant: str = "local", role: str = "user") -> ConnectionFile:
    path = d.home / f"{name}.convergio.json"
    cli_json(d, "pair", name, "--tenant", tenant, "--role", role, "--out", str(path))
    return load_connection(path)


def raw_dealer(
    ctx: zmq.Context[Any],
    endpoint: str,
    *,
    server_key: str | None = None,
    keys: tuple[bytes, bytes] | None = None,
) -> zmq.Socket[Any]:
    """A DEALER that may speak CURVE with any key pair, or (no ``server_key``) no CURVE."""
    sock: zmq.Socket[Any] = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if server_key is not None:
        public, secret = keys or zmq.curve_keypair()
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.connect(endpoint)
    return sock


def gets_no_reply(sock: zmq.Socket[Any], wait: float = 1.5) -> bool:
    """Send a ping and a status; True when not a single frame comes back within ``wait``."""
    sock.send(protocol.encode(protocol.Request(id=1, op=protocol.Ping())))
    sock.send(protocol.encode(protocol.Request(id=2, op=protocol.Status())))
    return sock.poll(int(wait * 1000), zmq.POLLIN) == 0


def connection_path(d: DaemonProcess, name: str) -> Path:
    return d.home / f"{name}.convergio.json"
