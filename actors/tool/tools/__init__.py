"""The built-in tools and what they share (``ToolEnv``: limits, protected paths, the trash,
a thread limiter, a way to reach other actors)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import outcome
import trio
from trio.lowlevel import (
    Abort,
    current_task,
    current_trio_token,
    reschedule,
    start_thread_soon,
    wait_task_rescheduled,
)

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
    #: Sandboxes by (roots, workspace): a sandbox is immutable, and its real paths are the
    #: ones the tool actor already resolved (and caches) for the call's workspace.
    _sandboxes: dict[tuple[Any, Any], Sandbox] = field(
        default_factory=dict, compare=False, repr=False
    )

    def sandbox(self, ctx: ToolContext) -> Sandbox:
        if not ctx.roots:
            raise OpError("sandbox_denied", "no workspace: give one, or configure tools.roots")
        key = (ctx.roots, ctx.workspace)
        sandbox = self._sandboxes.get(key)
        if sandbox is None:
            sandbox = Sandbox(ctx.roots, workspace=ctx.workspace, protected=self.protected)
            if len(self._sandboxes) >= 256:
                self._sandboxes.clear()
            self._sandboxes[key] = sandbox
        return sandbox

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``trio.to_thread.run_sync(fn, *args, limiter=self.limiter)``, on the same thread
        cache with the same semantics for these calls (a cancelled caller waits for the
        thread to finish; the context variables are copied), at about two thirds of its
        event-loop time: no thread names set and reset per call, no ``trio.from_thread``
        support (file work in a sandbox does not call back into Trio)."""
        limiter = self.limiter
        task = current_task()
        await limiter.acquire_on_behalf_of(task)
        try:
            token = current_trio_token()
            context = contextvars.copy_context()

            def deliver(result: outcome.Outcome[Any]) -> None:
                token.run_sync_soon(reschedule, task, result)

            start_thread_soon(lambda: context.run(fn, *args), deliver)
            return await wait_task_rescheduled(_not_abortable)
        finally:
            limiter.release_on_behalf_of(task)


def _not_abortable(_: Any) -> Abort:
    return Abort.FAILED


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
