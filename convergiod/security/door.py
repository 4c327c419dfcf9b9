"""The CURVE-secured TCP front door (``gateway.tcp``).

Start-up order matters: the ZAP handler is bound and answering before the ``ROUTER`` binds
(libzmq lets every CURVE client in when no handler is there), and the ``ROUTER`` is a CURVE
server with a ZAP domain, so a client without CURVE, with an unlisted key or with a revoked
key never finishes its handshake and gets no reply at all. Every message's ``User-Id`` (the
client's public key, set by the ZAP handler) is looked up again in the live registry: a
revocation also silences connections that are already open.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import zmq

from convergiod.config import GatewayConfig
from convergiod.gateway import Caller, Gateway, Handler, ipc_router_options
from convergiod.security.keys import KeyPair
from convergiod.security.limits import TenantLimiter, TenantLimits
from convergiod.security.registry import Registry
from convergiod.security.zap import DOMAIN, serve_zap
from convergiod.zmqtrio import TrioSocket

log = logging.getLogger("convergiod.security.door")

_NOBLOCK = zmq.NOBLOCK


class IdentifiedSocket(TrioSocket):
    """A ``TrioSocket`` whose messages start with one extra frame: the ZAP ``User-Id`` of the
    connection the message came from (empty when it has none)."""

    __slots__ = ()

    def _recv_now(self) -> list[bytes]:
        recv = self._recv
        parts: list[bytes] = []
        while True:
            frame = recv(_NOBLOCK, False)
            parts.append(frame.bytes)
            if not frame.more:
                break
        try:
            user = frame.get("User-Id")
        except zmq.ZMQError:
            user = ""
        return [user.encode() if isinstance(user, str) else b"", *parts]


@asynccontextmanager
async def open_identified_socket(ctx: zmq.Context[Any]) -> AsyncIterator[IdentifiedSocket]:
    sock: zmq.Socket[Any] = ctx.socket(zmq.ROUTER)
    tsock = IdentifiedSocket(sock, linger=0)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(tsock._pump)
            try:
                yield tsock
            finally:
                tsock.close()
    finally:
        if not sock.closed:
            sock.close(linger=0)


def tenant_limits(config: GatewayConfig, registry: Registry, tenant: str) -> TenantLimits:
    record = registry.tenant(tenant)
    return TenantLimits(
        rate=(record.rate if record and record.rate else config.tenant_rate),
        burst=(record.burst if record and record.burst else config.tenant_burst),
        max_in_flight=(
            record.max_in_flight if record and record.max_in_flight else config.tenant_max_in_flight
        ),
    )


class TcpDoor:
    """Owns the ZAP handler, the CURVE ``ROUTER`` and the ``Gateway`` serving it."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        registry: Registry,
        server_keys: KeyPair,
        handlers: dict[type, Handler],
        pid: int,
        version: str,
        events_endpoint: str,
    ) -> None:
        self.config = config
        self.registry = registry
        self.server_keys = server_keys
        self.handlers = handlers
        self.pid = pid
        self.version = version
        self.events_endpoint = events_endpoint
        self.endpoint = ""
        self.gateway: Gateway | None = None
        self.limiter = TenantLimiter(
            limits_for=lambda t: tenant_limits(self.config, self.registry, t),
            clock=trio.current_time,
        )

    def identify(self, user_id: bytes, ident: bytes) -> Caller | None:
        if not user_id:
            return None  # defensive: every CURVE connection here went through ZAP
        key = user_id.decode("ascii", errors="replace")
        client = self.registry.lookup(key)
        if client is None:
            return None
        return Caller(tenant=client.tenant, role=client.role, client=ident, key=key)

    def drop_client(self, key: str) -> int:
        return self.gateway.drop_client(key) if self.gateway is not None else 0

    async def serve(
        self, ctx: zmq.Context[Any], *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind ZAP, then the CURVE socket; report the bound endpoint; serve until cancelled."""
        async with trio.open_nursery() as outer:
            await outer.start(serve_zap, ctx, self.registry.lookup)
            async with open_identified_socket(ctx) as router, trio.open_nursery() as nursery:
                raw = router.zmq
                ipc_router_options(raw, self.config.max_frame_bytes)
                raw.setsockopt(zmq.CURVE_SERVER, 1)
                raw.setsockopt(zmq.CURVE_SECRETKEY, self.server_keys.secret.encode("ascii"))
                raw.setsockopt(zmq.ZAP_DOMAIN, DOMAIN)
                # Refuse, rather than accept, a handshake when no ZAP handler answers.
                raw.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
                self.gateway = gateway = Gateway(
                    self.config,
                    router,
                    self.handlers,
                    endpoint="",
                    events_endpoint=self.events_endpoint,
                    pid=self.pid,
                    version=self.version,
                    identify=self.identify,
                    limiter=self.limiter,
                )
                await nursery.start(gateway.serve)
                raw.bind(self.config.tcp)
                self.endpoint = gateway.endpoint = bytes(raw.getsockopt(zmq.LAST_ENDPOINT)).decode()
                log.info("CURVE tcp door on %s", self.endpoint)
                task_status.started(self.endpoint)
                await trio.sleep_forever()
