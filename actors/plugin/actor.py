"""The plugin actor: installs, lists and removes plugins, registers their tools with the tool
actor, and runs calls through a runner (threads, or worker processes with
``isolation = "process"``).

Calls run concurrently (``concurrency``); the runner's limiter bounds how many execute at
once. Install and remove are serialized by a lock so the registry and the disk agree.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, cast

import msgspec
import outcome
import trio

from convergiod import protocol
from convergiod.actors.plugin import schema
from convergiod.actors.plugin.messages import (
    CallPlugin,
    CallResult,
    GetPlugin,
    InstallPlugin,
    ListPlugins,
    RemovePlugin,
)
from convergiod.actors.plugin.runner import Job, JobDir, Runner, ThreadRunner
from convergiod.actors.plugin.sandbox import (
    CallGrants,
    CallLimits,
    Program,
    RunResult,
    Sandbox,
    SandboxError,
    SpareKey,
    interpret,
    spare_key,
)
from convergiod.actors.plugin.store import Installed, PluginStore
from convergiod.config import PluginConfig
from convergiod.errors import OpError
from convergiod.runtime import NOT_NOW, Actor, ActorNotFound, ActorStopped, AskTimeout

log = logging.getLogger("convergiod.plugin")

_encode = msgspec.json.Encoder().encode
#: Two inline runs in a row that take more CPU than this send the tool to threads for a while.
INLINE_SLOW = 0.002
INLINE_BACKOFF = 30.0
#: Stores made ahead per kind of inline call (refilled when half are used), and how many
#: kinds of call have them.
SPARES = 8
POOLS = 8
_EMPTY_ARGS = {"type": "object", "properties": {}}


class PluginActor(Actor):
    concurrency: ClassVar[int] = 64
    reply_errors: ClassVar[tuple[type[Exception], ...]] = (OpError,)

    def __init__(
        self,
        *,
        data_dir: Path,
        runtime_dir: Path,
        config: PluginConfig,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.root = data_dir / "plugins"
        self.cache_dir = data_dir / "plugin-cache"
        self.runtime_dir = runtime_dir
        self.config = config
        self.environ = os.environ if environ is None else environ
        self.store = PluginStore(self.root)
        self.plugins: dict[str, Installed] = {}
        self._lock = trio.Lock()
        self.sandbox: Sandbox | None = None
        self.runner: Runner | None = None
        #: Calls running on threads now; inline runs are only tried while it is 0.
        self._running = 0
        #: (plugin, tool) -> monotonic time before which no inline run is tried.
        self._slow: dict[tuple[str, str], float] = {}
        self._strikes: dict[tuple[str, str], int] = {}
        self._templates: dict[tuple[str, str], _Tool] = {}
        #: Stores of inline runs, freed in a batch on a worker thread (``_refill``).
        self._spent: list[object] = []
        #: The kinds of inline calls whose stores are made ahead, most recent last.
        self._wanted: OrderedDict[
            tuple[int, SpareKey], tuple[Program, CallLimits, CallGrants, str]
        ] = OrderedDict()
        self._restocking = False
        #: (module path, sha256) being loaded for inline runs, or that could not be.
        self._warming: set[tuple[str, str]] = set()
        self._unwarmable: set[tuple[str, str]] = set()
        self.inline_runs = 0

    # ------------------------------------------------------------------ lifecycle

    async def started(self) -> None:
        cfg = self.config
        stack = cfg.max_wasm_stack_kib * 1024
        tick = cfg.tick_ms / 1000
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.sandbox = Sandbox(self.cache_dir, max_wasm_stack=stack, tick=tick)
        if cfg.isolation == "process":
            from convergiod.actors.plugin.pool import ProcessRunner

            pool = ProcessRunner(
                cfg.workers,
                runtime_dir=self.runtime_dir,
                cache_dir=self.cache_dir,
                max_wasm_stack=stack,
                tick=tick,
            )
            await pool.start()
            self.runner = pool
        else:
            self.runner = ThreadRunner(self.sandbox, cfg.max_concurrent)
        for name in await trio.to_thread.run_sync(self.store.names):
            try:
                installed = await trio.to_thread.run_sync(self.store.get, name)
            except SandboxError as exc:
                log.error("skipping plugin %s: %s", name, exc.message)
                continue
            self.plugins[name] = installed
            await self._register(installed)
        log.info("plugin actor ready: %d plugins, isolation %s", len(self.plugins), cfg.isolation)

    async def stopping(self) -> None:
        if self.runner is not None:
            await self.runner.aclose()
        if self.sandbox is not None:
            self.sandbox.close()

    # ------------------------------------------------------------------ messages

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, CallPlugin):
            return await self.call(msg)
        if isinstance(msg, ListPlugins):
            return protocol.PluginListReply(
                plugins=[detail(p) for _, p in sorted(self.plugins.items())]
            )
        if isinstance(msg, GetPlugin):
            return detail(self._get(msg.name))
        if isinstance(msg, InstallPlugin):
            return await self.install(msg)
        if isinstance(msg, RemovePlugin):
            return await self.remove(msg.name)
        raise TypeError(f"plugin actor cannot handle {type(msg).__name__}")

    def _get(self, name: str) -> Installed:
        installed = self.plugins.get(name)
        if installed is None:
            raise OpError("not_found", f"no plugin named {name!r} is installed")
        return installed

    def handle_now(self, msg: Any) -> Any:
        if isinstance(msg, CallPlugin) and self._inline_ok():
            job, tool = self._prepare(msg)
            return self._run_inline(msg, job, tool)
        return NOT_NOW

    async def call(self, msg: CallPlugin) -> CallResult:
        job, tool = self._prepare(msg)
        what = tool.what
        if self._inline_ok():
            answer = self._run_inline(msg, job, tool)
            if answer is not NOT_NOW:
                return cast(CallResult, answer)
        assert self.runner is not None
        self._running += 1
        try:
            result = await self.runner.run(job)
        except SandboxError as exc:
            raise self._failed(msg, what, exc) from None
        finally:
            self._running -= 1
        if self._inline_ok() and job.fuel is None and not job.dirs:
            self._warm_later(job)
        return self._finish(msg, job, what, result, tool.limits)

    def _prepare(self, msg: CallPlugin) -> tuple[Job, _Tool]:
        key = (msg.plugin, msg.tool)
        tool = self._templates.get(key)
        if tool is None:
            tool = self._templates[key] = self._template(msg.plugin, msg.tool)
        if tool.args_schema != _EMPTY_ARGS or msg.args:
            try:
                schema.validate(tool.args_schema, msg.args)
            except schema.SchemaError as exc:
                raise OpError("bad_request", f"{msg.plugin}.{msg.tool}: {exc}") from None
        stdin = _encode({"tool": msg.tool, "args": msg.args})
        return msgspec.structs.replace(tool.job, stdin=stdin), tool

    def _template(self, plugin: str, tool: str) -> _Tool:
        """What every call of one tool shares (kept until the plugin is installed again or
        removed): its argument schema and the job without its stdin."""
        installed = self._get(plugin)
        manifest, record = installed.manifest, installed.record
        spec = manifest.tool(tool)
        if spec is None:
            raise OpError("not_found", f"plugin {plugin!r} has no tool {tool!r}")
        limits = manifest.limits
        job = Job(
            module_path=str(installed.module_path),
            sha256=record.sha256,
            fuel=limits.fuel,
            memory_bytes=limits.memory_mb << 20,
            timeout=limits.timeout_ms / 1000,
            output_bytes=limits.output_kb << 10,
            stdin=b"",
            dirs=[JobDir(d.host, d.guest, d.write) for d in record.dirs],
            env=[(n, self.environ[n]) for n in record.env if n in self.environ],
            argv0=manifest.name,
        )
        budget = self.config.inline_fuel
        call_limits = job.limits()
        return _Tool(
            args_schema=spec.args,
            job=job,
            what=f"plugin {plugin}, tool {tool}",
            grants=job.grants(),
            limits=call_limits,
            inline_limits=replace(
                call_limits, fuel=budget if job.fuel is None else min(job.fuel, budget)
            ),
        )

    def _forget(self, plugin: str) -> None:
        """A plugin installed again or removed: nothing known about its tools still holds."""
        for table in (self._templates, self._slow, self._strikes):
            for key in [k for k in table if k[0] == plugin]:
                del table[key]
        for (ident, kind), (program, *_) in list(self._wanted.items()):
            if kind[3] == plugin:  # argv0: the plugin's name
                del self._wanted[(ident, kind)]
                program.spares.pop(kind, None)

    # ------------------------------------------------------------------ inline runs

    def _inline_ok(self) -> bool:
        """Inline runs are for thread isolation, and only while no call runs on a thread: a
        lone call skips two thread hops; under concurrent load calls spread over threads."""
        return (
            self.config.inline_fuel > 0
            and self._running == 0
            and isinstance(self.runner, ThreadRunner)
        )

    def _run_inline(self, msg: CallPlugin, job: Job, tool: _Tool) -> Any:
        """Run the call here, on the event loop's thread, bounded by ``inline_fuel`` (a fuel
        run is deterministic: one that runs out here runs again, whole, on a thread, with
        the manifest's limits). ``NOT_NOW`` when the call cannot or need not run here: it has
        directory grants (side effects), its compiled program is not loaded yet, it waits
        (``poll_oneoff``), or it needed more than the inline budget recently."""
        assert isinstance(self.runner, ThreadRunner)
        key = (msg.plugin, msg.tool)
        if job.dirs or self._slow.get(key, 0.0) > time.monotonic():
            return NOT_NOW
        program = self.runner.cache.peek(job.module_path, job.sha256, fuel=True)
        if program is None:
            return NOT_NOW
        limits, grants = tool.inline_limits, tool.grants
        fuel = limits.fuel
        assert fuel is not None
        cpu = time.thread_time()
        spent = self._spent
        result = program.runtime.run(
            program, job.stdin, limits, grants, job.argv0, inline=True, spent=spent
        )
        self._restock(program, limits, grants, job.argv0)
        cpu = time.thread_time() - cpu  # CPU, not wall time: load on the machine is no strike
        exhausted = result.trap == "OUT_OF_FUEL" and fuel < (job.fuel or fuel + 1)
        # Two slow runs in a row (the first run of a program on a thread is slow once) send
        # the tool to threads for a while, as does a run that needed more than the budget.
        strikes = self._strikes.pop(key, 0) + 1
        if cpu <= INLINE_SLOW:
            strikes = 0
        if strikes == 1:
            self._strikes[key] = 1
        if result.would_block or exhausted or strikes > 1:
            self._slow[key] = time.monotonic() + INLINE_BACKOFF
            if result.would_block or exhausted:
                return NOT_NOW
        self.inline_runs += 1
        return self._finish(msg, job, tool.what, result, tool.limits)

    def _restock(
        self, program: Program, limits: CallLimits, grants: CallGrants, argv0: str
    ) -> None:
        """After an inline run: once its pool of stores made ahead runs low (or spent
        stores pile up), a worker thread frees the spent ones and makes ``SPARES`` more, in
        one batch (one thread hand-off per batch, caches warm from one store to the next,
        and off the event loop's thread). Pools are kept for the ``POOLS`` most recent
        kinds of call."""
        key = (id(program), spare_key(True, limits, grants, argv0))
        wanted = self._wanted
        if key in wanted:
            wanted.move_to_end(key)
        else:
            wanted[key] = (program, limits, grants, argv0)
            if len(wanted) > POOLS:
                (_, old_key), (old, *_) = wanted.popitem(last=False)
                old.spares.pop(old_key, None)
        pool = program.spares.get(key[1])
        low = pool is None or len(pool) <= SPARES // 2 or len(self._spent) >= SPARES
        if low and not self._restocking:
            self._restocking = True
            trio.lowlevel.start_thread_soon(self._refill, self._refilled, name="plugin spares")

    def _refill(self) -> None:  # on a worker thread
        spent, self._spent = self._spent, []
        spent.clear()
        for program, limits, grants, argv0 in list(self._wanted.values()):
            program.runtime.prepare(program, limits, grants, argv0, inline=True, depth=SPARES)

    def _refilled(self, result: outcome.Outcome[None]) -> None:  # on that thread
        self._restocking = False
        if isinstance(result, outcome.Error):
            log.error("making plugin stores ahead failed: %r", result.error)

    def _warm_later(self, job: Job) -> None:
        """Load the fuel-metered program of a module so its next calls can run inline: in
        the background, on a thread of its own (compiling may take a while), one module at
        a time, once (a module that cannot be loaded is not tried again)."""
        assert isinstance(self.runner, ThreadRunner)
        cache = self.runner.cache
        key = (job.module_path, job.sha256)
        if key in self._warming or key in self._unwarmable:
            return
        if cache.peek(job.module_path, job.sha256, fuel=True) is not None:
            return
        self._warming.add(key)

        def warm() -> None:
            cache.get(job.module_path, job.sha256, fuel=True)

        def done(result: outcome.Outcome[None]) -> None:  # on that thread
            if isinstance(result, outcome.Error):
                self._unwarmable.add(key)
                log.info("no inline runs for %s: %r", job.module_path, result.error)
            self._warming.discard(key)

        trio.lowlevel.start_thread_soon(warm, done, name="plugin warm-up")

    # ------------------------------------------------------------------ outcomes

    def _finish(
        self, msg: CallPlugin, job: Job, what: str, result: RunResult, limits: CallLimits
    ) -> CallResult:
        if result.stderr:
            log.info(
                "%s (request %d) stderr: %s",
                what,
                msg.request_id,
                result.stderr.decode("utf-8", "replace")[-4096:],
            )
        if result.memory_at_limit:
            log.warning(
                "%s (request %d): memory at its limit of %d MiB: growth refused",
                what,
                msg.request_id,
                job.memory_bytes >> 20,
            )
        try:
            value = interpret(result, limits, what=what)
        except SandboxError as exc:
            raise self._failed(msg, what, exc) from None
        return CallResult(value=value, elapsed=result.elapsed)

    def _failed(self, msg: CallPlugin, what: str, exc: SandboxError) -> OpError:
        log.warning("%s (request %d) failed: %s: %s", what, msg.request_id, exc.code, exc.message)
        return OpError(exc.code, exc.message)

    async def install(self, msg: InstallPlugin) -> protocol.PluginDetail:
        async with self._lock:
            try:
                manifest, staging, module = await trio.to_thread.run_sync(
                    self.store.stage, Path(msg.path)
                )
                try:
                    await trio.to_thread.run_sync(self._check_module, module, manifest.limits.fuel)
                    installed = await trio.to_thread.run_sync(
                        lambda: self.store.commit(
                            manifest, staging, grant_all=msg.grant_all, grants=msg.grants
                        )
                    )
                except BaseException:
                    self.store.discard(staging)
                    raise
            except SandboxError as exc:
                raise OpError(exc.code, exc.message) from None
            await self._unregister(manifest.name)
            self.plugins[manifest.name] = installed
            self._forget(manifest.name)
            await self._register(installed)
            log.info(
                "installed plugin %s %s (sha256 %s)",
                manifest.name,
                manifest.version,
                installed.record.sha256,
            )
            return detail(installed)

    def _check_module(self, module: Path, fuel: int | None) -> None:
        """Compile (and so cache) the module; refuses non-WASI imports before any use."""
        assert self.sandbox is not None
        self.sandbox.runtime(fuel=fuel is not None).load(module.read_bytes())

    async def remove(self, name: str) -> protocol.Ack:
        async with self._lock:
            self._get(name)
            try:
                await trio.to_thread.run_sync(self.store.remove, name)
            except SandboxError as exc:
                raise OpError(exc.code, exc.message) from None
            removed = self.plugins.pop(name)
            self._forget(name)
            if isinstance(self.runner, ThreadRunner):
                self.runner.cache.forget(str(removed.module_path))
            await self._unregister(name)
            return protocol.Ack(message=f"removed plugin {name}")

    # ------------------------------------------------------------------ tool registry

    async def _register(self, installed: Installed) -> None:
        from convergiod.actors.plugin.tools import PluginTool

        try:
            from convergiod.actors.tool.messages import RegisterTool
        except ImportError:
            return
        for spec in installed.manifest.tools:
            tool = PluginTool(installed.manifest, spec, self.ref(self.name))
            try:
                await self.ref("tool").ask(
                    RegisterTool(tool=tool, owner=_owner(installed.manifest.name)), timeout=5.0
                )
            except (ActorNotFound, ActorStopped, AskTimeout) as exc:
                log.info("tool %s not registered (tool actor unavailable: %s)", tool.name, exc)
                return
            except OpError as exc:
                log.error("tool %s not registered: %s", tool.name, exc.message)

    async def _unregister(self, name: str) -> None:
        try:
            from convergiod.actors.tool.messages import UnregisterOwner
        except ImportError:
            return
        try:
            await self.ref("tool").ask(UnregisterOwner(owner=_owner(name)), timeout=5.0)
        except (ActorNotFound, ActorStopped, AskTimeout) as exc:
            log.info("tools of plugin %s not unregistered: %s", name, exc)


@dataclass(frozen=True, kw_only=True)
class _Tool:
    """What every call of one tool shares (kept until the plugin is installed again or
    removed)."""

    args_schema: dict[str, Any]
    #: The job without its stdin.
    job: Job
    what: str
    limits: CallLimits
    grants: CallGrants
    #: ``limits`` with fuel capped at the inline budget.
    inline_limits: CallLimits


def _owner(name: str) -> str:
    return f"plugin:{name}"


def detail(installed: Installed) -> protocol.PluginDetail:
    m, r = installed.manifest, installed.record
    return protocol.PluginDetail(
        name=m.name,
        version=m.version,
        description=m.description,
        sha256=r.sha256,
        path=str(installed.path),
        tools=[
            protocol.PluginToolEntry(
                name=t.name, description=t.description, policy=t.policy, args=t.args
            )
            for t in m.tools
        ],
        limits=msgspec.to_builtins(m.limits),
        asked_dirs=[
            protocol.PluginDirEntry(host=d.host, guest=d.guest, write=d.write)
            for d in m.permissions.dirs
        ],
        asked_env=list(m.permissions.env),
        granted_dirs=[
            protocol.PluginDirEntry(host=d.host, guest=d.guest, write=d.write) for d in r.dirs
        ],
        granted_env=list(r.env),
        installed_at=r.installed_at,
    )
