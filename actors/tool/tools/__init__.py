"""The built-in tools and what they share (``ToolEnv``: limits, protected paths, the trash,
a thread limiter, a way to reach other actors)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from convergiod.config import ToolsConfig
from convergiod.errors import OpError

from ..base import Tool, ToolContext
from ..sandbox import Sandbox
from ..trash import Trash


@dataclass(frozen=True, kw_only=True)
class ToolEnv:
    config: ToolsConfig
    protected: tuple[str, ...]
    trash: Trash
    #: Threads for blocking file work.
    limiter: trio.CapacityLimiter
    #: Environment variable names always removed from ``shell.exec`` (besides secret-looking
    #: ones): ``tools.shell.scrub_env`` plus the router's ``api_key_env`` names.
    scrub_env: frozenset[str] = frozenset()
    #: ``ask(actor_name, message, timeout)``: how the memory tools reach the memory actor.
    ask: Callable[[str, Any, float], Any] | None = None

    def sandbox(self, ctx: ToolContext) -> Sandbox:
        if not ctx.roots:
            raise OpError("sandbox_denied", "no workspace: give one, or configure tools.roots")
        return Sandbox(ctx.roots, workspace=ctx.workspace, protected=self.protected)

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self.limiter)


def builtin_tools(env: ToolEnv) -> list[Tool]:
    from .fs_read import FsGlob, FsGrep, FsList, FsRead
    from .fs_write import FsDelete, FsEdit, FsWrite
    from .memory import MemoryRemember, MemorySearch
    from .shell import ShellExec
    from .web import WebFetch

    return [
        FsRead(env),
        FsList(env),
        FsGlob(env),
        FsGrep(env),
        FsWrite(env),
        FsEdit(env),
        FsDelete(env),
        ShellExec(env),
        WebFetch(env),
        MemoryRemember(env),
        MemorySearch(env),
    ]
