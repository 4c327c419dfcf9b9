"""Plugin tools are tools: an adapter from a manifest's tool to the ``Tool`` protocol of
``convergiod.actors.tool.base``, registered with the tool actor under ``plugin.tool``.

A plugin tool's arguments are described by a JSON schema from the manifest, not by a msgspec
Struct: the adapter carries it as ``schema`` (which the registry prefers over a schema
generated from ``args_type``) and receives the arguments as the dict they are; the plugin
actor validates them against the schema before the plugin runs.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from convergiod.actors.plugin.manifest import Manifest, ToolSpec
from convergiod.actors.plugin.messages import CallPlugin, CallResult
from convergiod.actors.tool.base import Policy, ToolContext, ToolOutput
from convergiod.runtime import ActorRef

#: What the tool output's ``content`` (what a model sees) may hold before it is cut.
MAX_CONTENT = 64 * 1024


class PluginArgs(msgspec.Struct):
    """The nominal ``args_type`` of every plugin tool; the real schema is ``schema``."""


class PluginTool:
    args_type = PluginArgs

    def __init__(self, manifest: Manifest, spec: ToolSpec, plugin_ref: ActorRef) -> None:
        self.plugin = manifest.name
        self.tool = spec.name
        self.name = f"{manifest.name}.{spec.name}"
        self.description = spec.description or f"{spec.name} (plugin {manifest.name})"
        self.schema: dict[str, Any] = spec.args
        self.default_policy: Policy = spec.policy
        self._ref = plugin_ref
        self._timeout = manifest.limits.timeout_ms / 1000 + 30.0

    async def run(self, ctx: ToolContext, args: Any) -> ToolOutput:
        if isinstance(args, msgspec.Struct):
            args = msgspec.to_builtins(args)
        result: CallResult = await self._ref.ask(
            CallPlugin(
                plugin=self.plugin,
                tool=self.tool,
                args=args,
                tenant=ctx.tenant,
                request_id=ctx.request_id,
            ),
            timeout=self._timeout,
        )
        content = json.dumps(result.value, ensure_ascii=False)
        truncated = len(content) > MAX_CONTENT
        return ToolOutput(content=content[:MAX_CONTENT], data=result.value, truncated=truncated)
