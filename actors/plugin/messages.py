"""The plugin actor's messages. Ask the actor named ``"plugin"``; a handler answers with the
protocol body named in each docstring or raises ``OpError`` in the asker."""

from __future__ import annotations

from typing import Any

import msgspec


class InstallPlugin(msgspec.Struct, kw_only=True):
    """Answered with ``protocol.PluginDetail``."""

    path: str
    grant_all: bool = False
    grants: list[str] = []


class ListPlugins(msgspec.Struct, kw_only=True):
    """Answered with ``protocol.PluginListReply``."""


class GetPlugin(msgspec.Struct, kw_only=True):
    """Answered with ``protocol.PluginDetail``."""

    name: str


class RemovePlugin(msgspec.Struct, kw_only=True):
    """Answered with ``protocol.Ack``."""

    name: str


class CallPlugin(msgspec.Struct, kw_only=True):
    """Run ``tool`` of ``plugin`` with ``args`` (validated against the manifest's schema);
    answered with ``CallResult``."""

    plugin: str
    tool: str
    args: dict[str, Any]
    tenant: str = "local"
    request_id: int = 0


class CallResult(msgspec.Struct, frozen=True, kw_only=True):
    value: Any
    elapsed: float
