"""One control command per module: the daemon half (``serve``) and the click half (``cli``)
side by side, as in circus. The daemon imports the ``serve`` functions through ``registry``;
the CLI imports one module per invocation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from convergiod import protocol

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext

Serve = Callable[["Daemon", "RequestContext", Any], Awaitable[protocol.ResultBody]]


def registry() -> dict[type, Serve]:
    from convergiod.commands import actor, daemon, ping, status

    return {
        protocol.Ping: ping.serve,
        protocol.Status: status.serve,
        protocol.ActorRestart: actor.serve_restart,
        protocol.ActorKill: actor.serve_kill,
        protocol.Shutdown: daemon.serve_shutdown,
    }
