"""``memory.remember`` and ``memory.search``: the agent's long-term memory, through the memory
actor (facts of the calling tenant only)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from convergiod.errors import OpError

from ..base import Policy, ToolContext, ToolOutput
from . import ToolEnv
from .fs_read import _Args

ASK_TIMEOUT = 10.0


class RememberArgs(_Args):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20_000)]
    kind: Annotated[str, msgspec.Meta(max_length=40)] = "note"
    importance: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5


class SearchArgs(_Args):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5
    kind: str | None = None


class _MemoryTool:
    #: Memory is the daemon's own state, not the user's machine: no approval needed.
    default_policy: Policy = "auto"

    def __init__(self, env: ToolEnv) -> None:
        self.env = env

    async def _ask(self, msg: Any) -> Any:
        from convergiod.runtime import ActorNotFound, ActorStopped

        if self.env.ask is None:
            raise OpError("unavailable", "the memory actor is not running")
        try:
            return await self.env.ask("memory", msg, ASK_TIMEOUT)
        except (ActorNotFound, ActorStopped):
            raise OpError("unavailable", "the memory actor is not running") from None


class MemoryRemember(_MemoryTool):
    name = "memory.remember"
    description = "Remember a fact for later conversations (kept in long-term memory)."
    args_type: type[msgspec.Struct] = RememberArgs

    def summarize(self, args: RememberArgs) -> str:
        return f"remember: {args.text[:200]}"

    def approval_key(self, ctx: ToolContext, args: RememberArgs) -> str:
        return ""

    async def run(self, ctx: ToolContext, args: RememberArgs) -> ToolOutput:
        from convergiod.actors.memory.messages import Remember

        fact = await self._ask(
            Remember(
                tenant=ctx.tenant,
                text=args.text,
                kind=args.kind,
                source=f"agent:{ctx.agent}" if ctx.agent else "tool",
                importance=args.importance,
            )
        )
        return ToolOutput(content=f"remembered (fact {fact.id})", data={"id": fact.id})


class MemorySearch(_MemoryTool):
    name = "memory.search"
    description = "Search long-term memory for facts relevant to a query, best first."
    args_type: type[msgspec.Struct] = SearchArgs

    def summarize(self, args: SearchArgs) -> str:
        return f"search memory for {args.query[:200]!r}"

    def approval_key(self, ctx: ToolContext, args: SearchArgs) -> str:
        return ""

    async def run(self, ctx: ToolContext, args: SearchArgs) -> ToolOutput:
        from convergiod.actors.memory.messages import Search

        hits = await self._ask(
            Search(tenant=ctx.tenant, query=args.query, limit=args.limit, kind=args.kind)
        )
        lines = [f"[{h.fact.id}] ({h.fact.kind}) {h.fact.text}" for h in hits]
        return ToolOutput(
            content="\n".join(lines) or "(nothing found)",
            data={"ids": [h.fact.id for h in hits], "scores": [h.score for h in hits]},
        )
