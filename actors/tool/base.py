"""What a tool is: the contract between the tool actor, built-in tools, plugin tools and the
orchestrator.

A tool declares its arguments as a msgspec Struct; the JSON schema models see is generated
from it. Arguments arrive as untrusted JSON (a model chose them) and are decoded into that
Struct before ``run`` sees them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec

Policy = Literal["auto", "ask", "deny"]

#: Asks the user (through the client that made the request) to approve a call:
#: (tool name, one-line summary, arguments) -> "once" | "always" | "deny".
Approver = Callable[[str, str, dict[str, Any]], Awaitable[Literal["once", "always", "deny"]]]


@dataclass(frozen=True, kw_only=True)
class ToolContext:
    """Everything a tool may use for one call. Tools never read the environment directly."""

    tenant: str
    request_id: int
    workspace: Path
    roots: tuple[Path, ...]
    agent: str | None = None
    approver: Approver | None = None
    timeout: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict)


class ToolOutput(msgspec.Struct, frozen=True, kw_only=True):
    """What the model sees: ``content`` (text), plus structured ``data`` for clients."""

    content: str
    data: Any = None
    truncated: bool = False


class Tool(Protocol):
    """A tool. The attributes are read-only (plain class attributes satisfy them; a narrower
    ``args_type`` is fine). Optional hooks the tool actor uses when present:
    ``summarize(args) -> str`` (the one line an approval request shows) and
    ``approval_key(ctx, args) -> str`` (what an ``always`` approval covers; default: exactly
    these arguments in this workspace)."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def args_type(self) -> type[msgspec.Struct]: ...

    @property
    def default_policy(self) -> Policy: ...

    async def run(self, ctx: ToolContext, args: Any) -> ToolOutput: ...


def tool_schema(tool: Tool) -> dict[str, Any]:
    """The schema models see. A tool may carry its own JSON schema as a ``schema`` attribute
    (plugin tools: their schemas come from a manifest); otherwise it is generated from
    ``args_type``."""
    own = getattr(tool, "schema", None)
    return own if isinstance(own, dict) else json_schema(tool.args_type)


def decode_args(tool: Tool, args: dict[str, Any]) -> Any:
    """What ``run`` receives: ``args`` decoded into ``args_type`` (raises
    ``msgspec.ValidationError`` naming the field), or, for a tool with its own ``schema``,
    the dict itself (such a tool validates it)."""
    if isinstance(getattr(tool, "schema", None), dict):
        return args
    return msgspec.convert(args, tool.args_type)


def json_schema(args_type: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, inlined (no ``$defs`` references) as the
    OpenAI and Anthropic tool formats expect."""
    schema = msgspec.json.schema(args_type)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    out: dict[str, Any] = inline(schema)
    out.setdefault("type", "object")
    out.setdefault("properties", {})
    return out
