"""The tool actor: decodes a call's arguments, applies the approval policy, runs the tool in
its sandbox with a timeout, and answers with its ``ToolOutput`` or an ``OpError``.

Many calls run at once (one worker each, ``tools.max_concurrent``): a call waiting for the
user's approval or a long command does not hold up the others.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from convergiod.config import Config
from convergiod.errors import OpError
from convergiod.runtime import NOT_NOW, Actor

from .base import Tool, ToolContext, ToolOutput, decode_args
from .messages import CancelTool, ListTools, RegisterTool, RunTool, UnregisterOwner
from .registry import Registry
from .sandbox import protected_paths
from .tools import ToolEnv, builtin_tools
from .trash import Trash

if TYPE_CHECKING:
    from convergiod.daemon import Daemon

log = logging.getLogger("convergiod.tool")

#: Extra seconds past a call's timeout before the actor cuts it off, so that a tool's own
#: timeout (with its nicer message) fires first.
GRACE = 2.0
MEMORY_TIMEOUT = 5.0
#: Longest string shown per argument in an approval request.
MAX_SHOWN_ARG = 16_384


@dataclass
class ToolState:
    """What outlives an instance of the actor: the registry (plugin registrations, cached
    ``always`` approvals) and the tools' shared environment."""

    config: Config
    registry: Registry
    env: ToolEnv
    ask: Callable[[str, Any, float], Any]
    #: Workspace as sent -> its real path (bounded; see ``ToolActor._workspace``).
    real_paths: dict[str, Path] = field(default_factory=dict)

    def roots(self) -> tuple[Path, ...]:
        """The configured roots as real paths."""
        return tuple(Path(os.path.realpath(os.path.expanduser(r))) for r in self.env.config.roots)

    @classmethod
    def for_daemon(cls, daemon: Daemon) -> ToolState:
        async def ask(name: str, msg: Any, timeout: float) -> Any:
            from convergiod.runtime import ActorStopped

            if daemon.system is None:
                raise ActorStopped(name, "the daemon is not running")
            return await daemon.system.ref(name).ask(msg, timeout=timeout)

        paths = daemon.paths
        return cls.create(
            daemon.config,
            data_dir=paths.data_dir,
            own_dirs=(paths.data_dir, paths.config_dir, paths.runtime_dir),
            ask=ask,
        )

    @classmethod
    def create(
        cls,
        config: Config,
        *,
        data_dir: Path,
        own_dirs: tuple[Path, ...] = (),
        ask: Callable[[str, Any, float], Any],
    ) -> ToolState:
        tcfg = config.tools
        providers = getattr(getattr(config, "router", None), "providers", {}) or {}
        key_vars = {p.api_key_env for p in providers.values() if getattr(p, "api_key_env", None)}
        env = ToolEnv(
            config=tcfg,
            protected=protected_paths([*own_dirs, *tcfg.protected]),
            trash=Trash(data_dir / "trash"),
            limiter=trio.CapacityLimiter(8),
            scrub_env=frozenset({*tcfg.shell.scrub_env, *key_vars}),
            ask=ask,
        )
        registry = Registry(dict(tcfg.policy))
        for tool in builtin_tools(env):
            registry.add(tool, "builtin")
        return cls(config=config, registry=registry, env=env, ask=ask)


class ToolActor(Actor):
    reply_errors = (OpError,)

    def __init__(self, state: ToolState) -> None:
        self.state = state
        self.concurrency = state.config.tools.max_concurrent  # type: ignore[misc]
        self._running: dict[tuple[str, int], set[trio.CancelScope]] = {}

    def handle_now(self, msg: object) -> Any:
        if type(msg) is ListTools:
            return self.state.registry.infos()
        return NOT_NOW

    async def handle(self, msg: object) -> Any:
        kind = type(msg)
        if kind is RunTool:
            assert isinstance(msg, RunTool)
            return await self.run(msg)
        if kind is ListTools:
            return self.state.registry.infos()
        if kind is RegisterTool:
            assert isinstance(msg, RegisterTool)
            self.state.registry.add(msg.tool, msg.owner)
            return None
        if kind is UnregisterOwner:
            assert isinstance(msg, UnregisterOwner)
            return self.state.registry.remove_owner(msg.owner)
        if kind is CancelTool:
            assert isinstance(msg, CancelTool)
            for scope in self._running.get((msg.tenant, msg.request_id), ()):
                scope.cancel()
            return None
        raise TypeError(f"tool actor cannot handle {kind.__name__}")

    # ------------------------------------------------------------------ one call

    async def run(self, msg: RunTool) -> ToolOutput:
        tools_cfg = self.state.config.tools
        tool = self.state.registry.get(msg.name)
        try:
            args = decode_args(tool, msg.args)
        except msgspec.ValidationError as exc:
            raise OpError("bad_request", f"{msg.name}: invalid arguments: {exc}") from None
        workspace, roots = self._workspace(msg.workspace)
        timeout = min(msg.timeout or tools_cfg.timeout, tools_cfg.max_timeout)
        ctx = ToolContext(
            tenant=msg.tenant,
            request_id=msg.request_id,
            workspace=workspace,
            roots=roots,
            agent=msg.agent,
            approver=msg.approver,
            timeout=timeout,
        )
        key = (msg.tenant, msg.request_id)
        scope = trio.CancelScope()
        self._running.setdefault(key, set()).add(scope)
        try:
            with scope:
                await self._approve(tool, ctx, args)
                # The call's time limit (not the wait for approval): the same scope, which
                # ``CancelTool`` cancels too; its deadline tells which of the two ended it.
                scope.deadline = trio.current_time() + timeout + GRACE
                return await self._call(tool, ctx, args)
            if trio.current_time() >= scope.deadline:
                raise OpError("timeout", f"{msg.name} did not finish within {timeout:g} s")
            raise OpError("cancelled", f"{msg.name} was cancelled")
        finally:
            running = self._running[key]
            running.discard(scope)
            if not running:
                del self._running[key]

    async def _call(self, tool: Tool, ctx: ToolContext, args: Any) -> ToolOutput:
        try:
            out = await tool.run(ctx, args)
        except OpError:
            raise
        except OSError as exc:
            log.warning("tool %s failed: %r", tool.name, exc)
            raise OpError("internal", f"{tool.name} failed: {exc.strerror or exc}") from None
        except Exception as exc:
            # A tool's bug (plugins included) fails its call, not every call in flight.
            log.exception("tool %s raised", tool.name)
            raise OpError("internal", f"{tool.name} failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(out, ToolOutput):
            raise OpError("internal", f"{tool.name} returned {type(out).__name__}, not ToolOutput")
        return out

    def _workspace(self, raw: str) -> tuple[Path, tuple[Path, ...]]:
        """The workspace's real path and the sandbox roots. Real paths are cached: the
        sandbox's walk, not this canonical form, is what keeps a call inside."""
        cache = self.state.real_paths
        roots = self.state.roots()
        if raw:
            real = cache.get(raw)
            if real is None:
                real = self._check_workspace(raw)
                if len(cache) >= 1024:
                    cache.clear()
                cache[raw] = real
            return real, (real, *roots)
        if roots:
            return roots[0], roots
        raise OpError("sandbox_denied", "no workspace: give one, or configure tools.roots")

    def _check_workspace(self, raw: str) -> Path:
        if not os.path.isabs(raw):
            raise OpError("bad_request", f"workspace {raw!r} is not an absolute path")
        real = os.path.realpath(raw)
        if not os.path.isdir(real):
            raise OpError("not_found", f"workspace {raw!r} is not a directory")
        for p in self.state.env.protected:
            if real == p or real.startswith(p.rstrip("/") + "/") or p == "/":
                raise OpError("sandbox_denied", f"workspace {real} is a protected path ({p})")
        return Path(real)

    # ------------------------------------------------------------------ approval

    async def _approve(self, tool: Tool, ctx: ToolContext, args: Any) -> None:
        registry = self.state.registry
        policy = registry.policy(tool.name)
        if policy == "auto":
            return
        summary = _summary(tool, args)
        if policy == "deny":
            raise OpError("sandbox_denied", f"{tool.name} is denied by policy (tools.policy)")
        key = _approval_key(tool, ctx, args)
        remembered = (ctx.tenant, tool.name, key)
        if remembered in registry.approved or await self._lookup(ctx.tenant, tool.name, key):
            registry.approved.add(remembered)
            return
        if ctx.approver is None:
            raise OpError(
                "sandbox_denied", f"{tool.name} needs approval ({summary}) and no one can give it"
            )
        decision = await ctx.approver(tool.name, summary, _shown(args))
        if decision == "once":
            return
        if decision == "always":
            registry.approved.add(remembered)
            await self._remember(ctx.tenant, tool.name, key)
            return
        raise OpError("sandbox_denied", f"{tool.name} was not approved: {summary}")

    async def _lookup(self, tenant: str, tool: str, key: str) -> bool:
        from convergiod.actors.memory.messages import LookupApproval

        try:
            return bool(
                await self.state.ask(
                    "memory", LookupApproval(tenant=tenant, tool=tool, key=key), MEMORY_TIMEOUT
                )
            )
        except Exception as exc:  # memory down or absent: only this process's approvals count
            log.debug("approval lookup in memory failed: %r", exc)
            return False

    async def _remember(self, tenant: str, tool: str, key: str) -> None:
        from convergiod.actors.memory.messages import RememberApproval

        try:
            await self.state.ask(
                "memory", RememberApproval(tenant=tenant, tool=tool, key=key), MEMORY_TIMEOUT
            )
        except Exception as exc:  # kept in this process; lost at restart
            log.warning("could not remember the approval of %s in memory: %r", tool, exc)


def _summary(tool: Tool, args: Any) -> str:
    summarize = getattr(tool, "summarize", None)
    if summarize is not None:
        return str(summarize(args))
    text = msgspec.json.encode(args).decode()
    return f"{tool.name} {text[:300]}"


def _approval_key(tool: Tool, ctx: ToolContext, args: Any) -> str:
    """What ``always`` covers: the tool's own notion, else exactly these arguments in this
    workspace."""
    fn = getattr(tool, "approval_key", None)
    if fn is not None:
        return str(fn(ctx, args))
    return msgspec.json.encode([str(ctx.workspace), msgspec.to_builtins(args)]).decode()


def _shown(args: Any) -> dict[str, Any]:
    data = msgspec.to_builtins(args)
    if not isinstance(data, dict):
        return {"args": data}
    return {
        k: (v[:MAX_SHOWN_ARG] + f"... [{len(v)} characters]")
        if isinstance(v, str) and len(v) > MAX_SHOWN_ARG
        else v
        for k, v in data.items()
    }
