"""Running one plugin call under wasmtime, denied everything by default.

A ``Runtime`` owns one wasmtime engine (its settings fixed for its life), a linker that
provides WASI preview 1 and nothing else, and an on-disk cache of compiled modules. A
``Sandbox`` holds the runtimes the daemon needs (with and without fuel metering, which is an
engine-wide setting) and the one ``EpochTicker`` thread that advances their epochs.

Every call gets a fresh store: its own WASI context (stdin = the call, stdout and stderr into
capped buffers, no environment unless granted, no preopened directory unless granted, and
those read-only unless write was granted; wasmtime's WASI preview 1 has no sockets to open
and no network), an epoch deadline, fuel when the manifest sets it, a memory limit, and the
engine's maximum wasm stack. When no directory is granted, ``fd_read`` and ``fd_write`` are
served by ``_fd_read`` and ``_fd_write`` on the calling thread (fd 0 is then the only
readable fd, 1 and 2 the only writable ones), so the store does not depend on the call and
``Runtime.prepare`` can make the next calls' stores ahead of them; otherwise by wasmtime's WASI
(stdin bytes, custom output callbacks that run on a wasmtime worker thread).
``run`` never raises for anything the guest does: it reports what happened in a
``RunResult`` and ``interpret`` turns that into a JSON value or a ``SandboxError`` with a
protocol error code.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import wasmtime
from wasmtime import _ffi as ffi
from wasmtime._extern import wrap_extern

from convergiod.protocol import ErrorCode

log = logging.getLogger("convergiod.plugin")

WASI_MODULE = "wasi_snapshot_preview1"
WASMTIME_VERSION = importlib.metadata.version("wasmtime")
PAGE = 65536
STDERR_CAP = 64 * 1024


class SandboxError(Exception):
    """A call or a module the sandbox refused or that failed; ``code`` is a protocol code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """Everything that changes compiled code: part of the module cache key."""

    fuel: bool = False
    epoch: bool = True
    max_wasm_stack: int = 512 * 1024

    def key(self) -> str:
        return (
            f"fuel={self.fuel},epoch={self.epoch},stack={self.max_wasm_stack},"
            "features=no-threads/no-memory64/no-components"
        )


@dataclass(frozen=True, kw_only=True)
class DirGrant:
    host: str
    guest: str
    write: bool = False


@dataclass(frozen=True, kw_only=True)
class CallLimits:
    """``None`` means unlimited (used only by the benchmark's unprotected baseline)."""

    memory_bytes: int | None = 64 << 20
    timeout: float | None = 5.0
    fuel: int | None = None
    output_bytes: int = 1 << 20


@dataclass(frozen=True, kw_only=True)
class CallGrants:
    dirs: tuple[DirGrant, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


class RunResult(msgspec.Struct, kw_only=True):
    """What happened in one call; plain data, so a worker process can send it back."""

    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_overflow: bool = False
    #: Measured only for a call that failed (trapped or exited non-zero).
    memory_at_limit: bool = False
    memory_bytes: int = 0
    #: The wasmtime trap code name (``INTERRUPT``, ``OUT_OF_FUEL``...) or ``error``.
    trap: str | None = None
    trap_message: str = ""
    elapsed: float = 0.0
    #: An inline run stopped because the guest asked to wait (``poll_oneoff``): it must
    #: run again on a thread. Never set for other runs.
    would_block: bool = False


@dataclass
class Program:
    """A compiled module ready to instantiate: checked imports, linked once."""

    sha256: str
    module: wasmtime.Module
    #: Linked with wasmtime's WASI (stdout/stderr through custom callbacks).
    pre: wasmtime.InstancePre
    #: Linked with ``fd_write`` served on the calling thread (for calls without
    #: preopened directories, where fds 1 and 2 are the only writable ones).
    pre_lean: wasmtime.InstancePre
    #: As ``pre_lean``, and ``poll_oneoff`` (the one WASI call that can wait) stops the run:
    #: for runs on the event loop's thread, which must never sleep.
    pre_inline: wasmtime.InstancePre
    runtime: Runtime
    from_cache: bool = False
    #: The module has a start function: instantiating it runs guest code, so it is never
    #: instantiated ahead of its call.
    has_start: bool = False
    #: Stores instantiated ahead of their calls (see ``Runtime.prepare``), by what shapes a
    #: store before its call: (inline, memory limit, environment, argv0). Each is used once.
    spares: dict[SpareKey, list[_Spare]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Spare:
    store: wasmtime.Store
    instance: wasmtime.Instance
    #: The instance's ``_start`` and memory, looked up when it was made.
    start: Any
    memory: tuple[int, int, object] | None


class EpochTicker:
    """The one thread that advances the epoch of every engine of a ``Sandbox``.

    It ticks only while calls are in flight or were recently (``linger`` seconds): an idle
    daemon does not wake up every few milliseconds for nothing, and a busy one does not pay a
    thread wake-up per call. A deadline set while it sleeps is still met within one tick.
    """

    linger = 1.0

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._engines: list[wasmtime.Engine] = []
        self._active = 0
        self._ticking = False
        self._last = 0.0
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="plugin-epoch", daemon=True)
        self._thread.start()

    def add(self, engine: wasmtime.Engine) -> None:
        with self._cond:
            self._engines.append(engine)

    def ticks_for(self, seconds: float) -> int:
        return max(1, math.ceil(seconds / self.interval)) + 1

    def enter(self) -> None:
        with self._cond:
            self._active += 1
            if not self._ticking:
                self._ticking = True
                self._cond.notify()

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._last = time.monotonic()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._active and time.monotonic() - self._last > self.linger:
                    self._ticking = False
                while not self._ticking and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                engines = list(self._engines)
            time.sleep(self.interval)
            for engine in engines:
                engine.increment_epoch()


class Runtime:
    """One engine with fixed settings, its WASI linker and its compiled-module cache."""

    def __init__(
        self, settings: EngineSettings, cache_dir: Path | None, ticker: EpochTicker | None
    ) -> None:
        config = wasmtime.Config()
        config.consume_fuel = settings.fuel
        config.epoch_interruption = settings.epoch
        config.max_wasm_stack = settings.max_wasm_stack
        # The C API initializes linear memory copy-on-write from the module image where it
        # can; small modules instantiate faster by plain copy.
        config.memory_init_cow = False
        # WASI preview 1 plugins need none of these; fewer features, less attack surface.
        config.wasm_threads = False
        config.shared_memory = False
        config.wasm_memory64 = False
        config.wasm_component_model = False
        self.settings = settings
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self.lean_linker = wasmtime.Linker(self.engine)
        self.lean_linker.allow_shadowing = True
        self.lean_linker.define_wasi()
        _define_stdio(self.lean_linker)
        self.inline_linker = wasmtime.Linker(self.engine)
        self.inline_linker.allow_shadowing = True
        self.inline_linker.define_wasi()
        _define_stdio(self.inline_linker)
        _define_unchecked(
            self.inline_linker, b"poll_oneoff", [wasmtime.ValType.i32()] * 4, _raw_poll_refused
        )
        self.cache_dir = cache_dir
        self.ticker = ticker
        if ticker is not None and settings.epoch:
            ticker.add(self.engine)

    # ------------------------------------------------------------------ loading

    def cache_key(self, sha256: str) -> str:
        text = f"wasmtime={WASMTIME_VERSION};{self.settings.key()};module={sha256}"
        return hashlib.sha256(text.encode()).hexdigest()

    def load(self, wasm: bytes, *, expected_sha256: str | None = None) -> Program:
        """Check and compile ``wasm`` (or take it from the disk cache).

        Raises ``SandboxError``: ``sandbox_denied`` for a hash that differs from the pin or
        an import other than WASI preview 1, ``bad_request`` for a module that is not a WASI
        command.
        """
        sha = hashlib.sha256(wasm).hexdigest()
        if expected_sha256 is not None and sha != expected_sha256:
            raise SandboxError(
                "sandbox_denied",
                f"module hash changed since install (pinned sha256 {expected_sha256[:16]}…, "
                f"found {sha[:16]}…): reinstall the plugin to trust the new module",
            )
        module, from_cache = self._compile(wasm, sha)
        check_module(module)
        try:
            pre = self.linker.instantiate_pre(module)
            pre_lean = self.lean_linker.instantiate_pre(module)
            pre_inline = self.inline_linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise SandboxError("sandbox_denied", f"module cannot be linked: {exc}") from None
        return Program(
            sha256=sha,
            module=module,
            pre=pre,
            pre_lean=pre_lean,
            pre_inline=pre_inline,
            runtime=self,
            from_cache=from_cache,
            has_start=has_start_section(wasm),
        )

    def _compile(self, wasm: bytes, sha: str) -> tuple[wasmtime.Module, bool]:
        path = self.cache_dir / f"{self.cache_key(sha)}.cwasm" if self.cache_dir else None
        if path is not None and path.exists():
            try:
                # Only ever written by us, into an owner-only directory, for exactly these
                # engine settings and this wasmtime version (both in the key).
                return wasmtime.Module.deserialize_file(self.engine, str(path)), True
            except wasmtime.WasmtimeError as exc:
                log.warning("discarding unusable cached module %s: %s", path.name, exc)
                path.unlink(missing_ok=True)
        try:
            module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise SandboxError("bad_request", f"not a valid WebAssembly module: {exc}") from None
        if path is not None:
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
                with os.fdopen(fd, "wb") as f:
                    f.write(module.serialize())
                os.replace(tmp, path)
            except OSError as exc:
                log.warning("cannot cache compiled module: %s", exc)
        return module, False

    # ------------------------------------------------------------------ running

    def run(
        self,
        program: Program,
        stdin: bytes,
        limits: CallLimits,
        grants: CallGrants = CallGrants(),
        argv0: str = "plugin",
        *,
        inline: bool = False,
        spent: list[object] | None = None,
    ) -> RunResult:
        """Run the command once in a fresh store. Never raises for what the guest does.

        ``inline``: the caller's thread must not sleep (the event loop's): a guest that
        calls ``poll_oneoff`` is stopped there with ``would_block`` set, to be run again
        on a thread. Only for calls without directory grants, and with fuel (a run that
        cannot block still has to be bounded by something finer than the epoch tick).
        ``spent``: the store is appended there instead of freed here (freeing a store
        unmaps its memory: tens of microseconds the caller may spend after answering).

        A call without directory grants uses the store ``prepare`` made for it, if any
        (instantiated, never run); otherwise it makes its own.
        """
        started = time.perf_counter()
        result = RunResult()
        out = _CappedSink(limits.output_bytes)
        err = _CappedSink(STDERR_CAP, truncate=True)
        # Without preopened directories the only fds a guest can write are 1 and 2 and the
        # only one it can read is 0: serve fd_read and fd_write on this thread (wasmtime
        # runs custom output callbacks on a worker thread, a hop that costs about as much
        # as the rest of a trivial call), and the store does not depend on the call.
        lean = not grants.dirs
        if inline:
            assert lean and self.settings.fuel and limits.fuel is not None
            _local.blocked = False
        spare: _Spare | None = None
        if lean:
            _local.sinks = (out, err)
            _local.source = _Source(stdin)
            pool = program.spares.get(spare_key(inline, limits, grants, argv0))
            if pool:
                with contextlib.suppress(IndexError):  # refilled on another thread
                    spare = pool.pop()
        # An inline run is bounded by its fuel and cannot wait (``poll_oneoff`` stops it):
        # the epoch ticker need not wake up for it (its deadline is still set: epoch
        # interruption is engine-wide).
        ticker = self.ticker if self.settings.epoch and not inline else None
        store: wasmtime.Store | None = None
        instance: wasmtime.Instance | None = None
        if ticker is not None:
            ticker.enter()
        try:
            if spare is not None:
                store, instance = spare.store, spare.instance
                self._arm(store, limits)
                start, memory = spare.start, spare.memory
            else:
                store = self._new_store(lean, stdin, limits, grants, argv0, out, err)
                self._arm(store, limits)
                pre = (program.pre_inline if inline else program.pre_lean) if lean else program.pre
                instance = pre.instantiate(store)
                start = _export_extern(store, instance, b"_start")
                memory = _memory_binding(store, instance) if lean else None
            if lean:
                _local.memory = memory
            _call_start(store, start)
        except wasmtime.ExitTrap as exc:
            result.exit_code = exc.code
        except wasmtime.Trap as exc:
            code = exc.trap_code
            result.trap = code.name if code is not None else "trap"
            result.trap_message = _cause(exc.message)
        except wasmtime.WasmtimeError as exc:
            result.trap = "error"
            result.trap_message = _cause(str(exc))
        finally:
            if ticker is not None:
                ticker.leave()
            if lean:
                _local.sinks = None
                _local.source = None
                _local.memory = None
            if inline:
                result.would_block = _local.blocked
        failed = result.trap is not None or result.exit_code != 0
        if failed and limits.memory_bytes is not None and instance is not None:
            assert store is not None
            # Only a failed call needs to know (see ``interpret``).
            exported = _export(store, instance, b"memory")
            if isinstance(exported, wasmtime.Memory):
                result.memory_bytes = size = exported.data_len(store)
                # wasmtime-py exposes no hook for a refused memory.grow (the guest just sees
                # -1): a memory within 1/8 of the limit (or 1 MiB) counts as "growth refused".
                headroom = max(16 * PAGE, limits.memory_bytes // 8)
                result.memory_at_limit = size + headroom > limits.memory_bytes
        result.stdout = out.getvalue()
        result.stdout_overflow = out.overflow
        result.stderr = err.getvalue()
        result.elapsed = time.perf_counter() - started
        if spent is not None and store is not None:
            spent.append(store)
        return result

    def prepare(
        self,
        program: Program,
        limits: CallLimits,
        grants: CallGrants = CallGrants(),
        argv0: str = "plugin",
        *,
        inline: bool = False,
        depth: int = 1,
    ) -> int:
        """Make stores and instances for the next such calls of ``program`` now (up to
        ``depth`` waiting), so that those calls only run them: still a fresh store per call,
        one that has never run guest code. For calls without directory grants, of modules
        without a start function; a module that cannot be instantiated gets none (its call
        reports why). Returns how many are waiting. Made in a batch, on any thread: the
        caches stay warm from one to the next."""
        if grants.dirs or program.has_start:
            return 0
        pool = program.spares.setdefault(spare_key(inline, limits, grants, argv0), [])
        pre = program.pre_inline if inline else program.pre_lean
        while len(pool) < depth:
            store = self._new_store(True, b"", limits, grants, argv0, None, None)
            # Instantiating may take fuel (constant expressions) and checks the epoch
            # deadline; both are armed again when the call starts.
            self._arm(store, limits)
            try:
                instance = pre.instantiate(store)
            except (wasmtime.WasmtimeError, wasmtime.Trap):
                break
            start = _export_extern(store, instance, b"_start")
            pool.append(_Spare(store, instance, start, _memory_binding(store, instance)))
        return len(pool)

    def _new_store(
        self,
        lean: bool,
        stdin: bytes,
        limits: CallLimits,
        grants: CallGrants,
        argv0: str,
        out: _CappedSink | None,
        err: _CappedSink | None,
    ) -> wasmtime.Store:
        """A store with its WASI context and memory limit: not yet armed (``_arm``)."""
        wasi = wasmtime.WasiConfig()
        wasi.argv = [argv0]
        if not lean:
            assert out is not None and err is not None
            _set_stdin_bytes(wasi, stdin)
            wasi.stdout_custom = out.write
            wasi.stderr_custom = err.write
        if grants.env:
            wasi.env = list(grants.env)
        for d in grants.dirs:
            try:
                wasi.preopen_dir(d.host, d.guest, fs_mutable=d.write)
            except wasmtime.WasmtimeError as exc:
                raise SandboxError(
                    "sandbox_denied", f"granted directory {d.host} cannot be opened: {exc}"
                ) from None
        store = wasmtime.Store(self.engine)
        if limits.memory_bytes is not None:
            store.set_limits(memory_size=limits.memory_bytes, instances=1, tables=4, memories=1)
        store.set_wasi(wasi)
        return store

    def _arm(self, store: wasmtime.Store, limits: CallLimits) -> None:
        """Fuel and the epoch deadline: set just before the guest runs."""
        if self.settings.fuel:
            store.set_fuel(limits.fuel if limits.fuel is not None else 2**63 - 1)
        if self.settings.epoch:
            timeout = limits.timeout if limits.timeout is not None else 10 * 365 * 86400.0
            assert self.ticker is not None
            store.set_epoch_deadline(self.ticker.ticks_for(timeout))


SpareKey = tuple[bool, int | None, tuple[tuple[str, str], ...], str]


def spare_key(inline: bool, limits: CallLimits, grants: CallGrants, argv0: str) -> SpareKey:
    return (inline, limits.memory_bytes, grants.env, argv0)


class _Source:
    """stdin of one call without directory grants, served by ``_fd_read``."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0


def has_start_section(wasm: bytes) -> bool:
    """Whether a (valid, already compiled) module has a start section (id 8)."""
    pos = 8
    end = len(wasm)
    while pos < end:
        section = wasm[pos]
        pos += 1
        size = shift = 0
        while True:
            byte = wasm[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if section == 8:
            return True
        pos += size
    return False


def _cause(message: str) -> str:
    """The line of a wasmtime error that says what happened (not the backtrace)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("wasm trap:"):
            return line.removeprefix("wasm trap:").strip()
    return lines[-1] if lines else ""


def check_module(module: wasmtime.Module) -> None:
    """Refuse, before any instantiation, a module that imports anything but WASI preview 1
    functions, or that is not a WASI command."""
    for imp in module.imports:
        if imp.module != WASI_MODULE or not isinstance(imp.type, wasmtime.FuncType):
            raise SandboxError(
                "sandbox_denied",
                f"module imports {imp.module}.{imp.name}: only {WASI_MODULE} functions are "
                "provided to plugins",
            )
    exports = {e.name: e.type for e in module.exports}
    start = exports.get("_start")
    if not isinstance(start, wasmtime.FuncType) or start.params or start.results:
        raise SandboxError(
            "bad_request", "module is not a WASI command: it exports no _start() -> ()"
        )


class _CappedSink:
    """stdout/stderr of one call. Called on a wasmtime worker thread; a guest that writes past
    the cap gets EFBIG (stdout) or is silently truncated (stderr)."""

    __slots__ = ("_cap", "_chunks", "_size", "_truncate", "overflow")

    def __init__(self, cap: int, *, truncate: bool = False) -> None:
        self._cap = cap
        self._chunks: list[bytes] = []
        self._size = 0
        self._truncate = truncate
        self.overflow = False

    def write(self, data: bytes) -> int:
        room = self._cap - self._size
        if len(data) > room:
            self.overflow = True
            if room > 0:
                self._chunks.append(data[:room])
                self._size = self._cap
            return len(data) if self._truncate else -errno.EFBIG
        self._chunks.append(data)
        self._size += len(data)
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


def _export(store: wasmtime.Store, instance: wasmtime.Instance, name: bytes) -> object:
    """One export by name. ``Instance.exports()`` wraps every export of the module (tens of
    microseconds for a C module); this looks up only the one needed."""
    item = _export_extern(store, instance, name)
    return wrap_extern(item) if item is not None else None


def _export_extern(store: wasmtime.Store, instance: wasmtime.Instance, name: bytes) -> Any:
    """The raw C API extern of one export, or ``None``."""
    item = ffi.wasmtime_extern_t()
    found = ffi.wasmtime_instance_export_get(
        store._context(), ctypes.byref(instance._instance), name, len(name), ctypes.byref(item)
    )
    return item if found else None


def _call_start(store: wasmtime.Store, start: Any) -> None:
    """Call ``_start`` (checked at load to be ``() -> ()``) straight through the C API:
    ``Func.__call__`` introspects the function's type on every call, which costs more than
    running a trivial plugin. Raises what wasmtime-py's own call would (``ExitTrap`` for
    ``proc_exit``, ``Trap``, ``WasmtimeError``)."""
    if start is None:
        raise wasmtime.WasmtimeError("module exports no _start")
    trap = ctypes.POINTER(ffi.wasm_trap_t)()
    error = ffi.wasmtime_func_call(
        store._context(), ctypes.byref(start.of.func), None, 0, None, 0, ctypes.byref(trap)
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if trap:
        raise wasmtime.Trap._from_ptr(trap)


def _define_stdio(linker: wasmtime.Linker) -> None:
    """``fd_read`` and ``fd_write`` served on the calling thread (see ``Runtime.run``)."""
    _define_unchecked(linker, b"fd_write", [wasmtime.ValType.i32()] * 4, _raw_fd_write)
    _define_unchecked(linker, b"fd_read", [wasmtime.ValType.i32()] * 4, _raw_fd_read)


def _define_unchecked(
    linker: wasmtime.Linker, name: bytes, params: list[wasmtime.ValType], callback: Any
) -> None:
    """Define (shadowing WASI's) ``wasi_snapshot_preview1.<name>(params) -> i32`` as an
    "unchecked" host function (raw arguments, no per-call conversions)."""
    ty = wasmtime.FuncType(params, [wasmtime.ValType.i32()])
    module = WASI_MODULE.encode()
    error = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(),
        module,
        len(module),
        name,
        len(name),
        ty.ptr(),
        callback,
        None,
        _no_finalizer,
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)  # type: ignore[untyped-decorator]
def _no_finalizer(_env: int | None) -> None:
    pass


@ffi.wasmtime_func_unchecked_callback_t  # type: ignore[untyped-decorator]
def _raw_fd_write(_env: int | None, _caller: Any, args: Any, _count: int) -> int:
    """WASI ``fd_write`` for fds 1 and 2 into this call's capped sinks, as an "unchecked"
    host function (raw arguments, no per-call type conversions: wasmtime-py's generic
    trampoline costs several times more). ``args[0]`` receives the WASI errno."""
    try:
        args[0].i32 = _fd_write(args[0].i32, args[1].i32, args[2].i32, args[3].i32)
    except Exception:
        log.exception("plugin fd_write failed")
        args[0].i32 = _EIO
    return 0


@ffi.wasmtime_func_unchecked_callback_t  # type: ignore[untyped-decorator]
def _raw_fd_read(_env: int | None, _caller: Any, args: Any, _count: int) -> int:
    """WASI ``fd_read`` for fd 0 from this call's stdin (see ``_raw_fd_write``)."""
    try:
        args[0].i32 = _fd_read(args[0].i32, args[1].i32, args[2].i32, args[3].i32)
    except Exception:
        log.exception("plugin fd_read failed")
        args[0].i32 = _EIO
    return 0


_BLOCKED = b"poll_oneoff on the event loop's thread: run again on a worker thread"


@ffi.wasmtime_func_unchecked_callback_t  # type: ignore[untyped-decorator]
def _raw_poll_refused(_env: int | None, _caller: Any, _args: Any, _count: int) -> int:
    """``poll_oneoff`` in an inline run: the guest wants to wait (sleep, or wait on stdin),
    which the event loop's thread must never do. Stop the run; it is run again on a thread,
    where WASI's own ``poll_oneoff`` serves it."""
    _local.blocked = True
    trap = ffi.wasmtime_trap_new(_BLOCKED, len(_BLOCKED))
    return ctypes.cast(trap, ctypes.c_void_p).value or 0


_local = threading.local()
_EBADF, _EFAULT, _EFBIG, _EIO = 8, 21, 22, 29  # WASI preview 1 errno values
_U32 = 0xFFFFFFFF
_MEMORY_KIND = ffi.WASMTIME_EXTERN_MEMORY.value


def _memory_binding(
    store: wasmtime.Store, instance: wasmtime.Instance
) -> tuple[int, int, object] | None:
    """What ``_iovecs`` reads the instance's exported memory through: the store's
    context and the memory's addresses (and the extern that holds the latter)."""
    item = _export_extern(store, instance, b"memory")
    if item is None or int(item.kind) != _MEMORY_KIND:
        return None
    address = ctypes.cast(store._context(), ctypes.c_void_p).value or 0
    return (address, ctypes.addressof(item.of.memory), item)


# Private prototypes of two C API functions, returning plain addresses (wasmtime-py's
# return a uint8 pointer that must be cast on every call).
_memory_data = ffi.dll["wasmtime_memory_data"]
_memory_data.restype = ctypes.c_void_p
_memory_data.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_memory_data_size = ffi.dll["wasmtime_memory_data_size"]
_memory_data_size.restype = ctypes.c_size_t
_memory_data_size.argtypes = [ctypes.c_void_p, ctypes.c_void_p]


def _iovecs(iovs: int, count: int, out: int) -> tuple[int, list[tuple[int, int]]] | None:
    """The base address of the running instance's memory and the (pointer, length) pairs of
    a guest iovec array, or ``None`` if there is no memory or the array, a buffer or the
    ``out`` word lies outside it. The memory was looked up once per run
    (``_memory_binding``); its address and size are read on every use (``memory.grow`` may
    move it)."""
    bound: tuple[int, int, object] | None = getattr(_local, "memory", None)
    if bound is None:
        return None
    context, memory, _ = bound
    base, size = _memory_data(context, memory) or 0, _memory_data_size(context, memory)
    iovs, count, out = iovs & _U32, count & _U32, out & _U32
    if iovs + 8 * count > size or out + 4 > size:
        return None
    table = ctypes.string_at(base + iovs, 8 * count)
    pairs = list(struct.iter_unpack("<II", table))
    for ptr, length in pairs:
        if ptr + length > size:
            return None
    return base, pairs


def _fd_write(fd: int, iovs: int, count: int, nwritten: int) -> int:
    """Every guest pointer is bounds-checked against its memory: a bad one is EFAULT (where
    wasmtime's own WASI traps; either way the call cannot touch the host)."""
    sinks: tuple[_CappedSink, _CappedSink] | None = getattr(_local, "sinks", None)
    if sinks is None or fd not in (1, 2):
        return _EBADF
    found = _iovecs(iovs, count, nwritten)
    if found is None:
        return _EFAULT
    base, pairs = found
    sink = sinks[fd - 1]
    total = 0
    for ptr, length in pairs:
        if not length:
            continue
        if sink.write(ctypes.string_at(base + ptr, length)) < 0:
            return _EFBIG
        total += length
    ctypes.memmove(base + (nwritten & _U32), struct.pack("<I", total), 4)
    return 0


def _fd_read(fd: int, iovs: int, count: int, nread: int) -> int:
    """stdin (the call) for runs without directory grants, where 0 is the one readable fd.
    Bounds-checked like ``_fd_write``; at the end of the call it reads 0 bytes (EOF)."""
    source: _Source | None = getattr(_local, "source", None)
    if source is None or fd != 0:
        return _EBADF
    found = _iovecs(iovs, count, nread)
    if found is None:
        return _EFAULT
    base, pairs = found
    data, pos, total = source.data, source.pos, 0
    for ptr, length in pairs:
        take = min(length, len(data) - pos)
        if take <= 0:
            break
        ctypes.memmove(base + ptr, data[pos : pos + take], take)
        pos += take
        total += take
    source.pos = pos
    ctypes.memmove(base + (nread & _U32), struct.pack("<I", total), 4)
    return 0


def _set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """wasmtime-py exposes only ``stdin_file``; the C API also takes bytes (and takes
    ownership of the vector it is given)."""
    vec = ffi.wasm_byte_vec_t()
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    ffi.wasm_byte_vec_new(ctypes.byref(vec), len(data), buf)
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))


# ---------------------------------------------------------------------------- outcomes

#: Exit statuses from sysexits.h that a plugin may use to say why it failed.
EXIT_CODES: dict[int, ErrorCode] = {64: "bad_request", 65: "bad_request", 66: "not_found"}
EXIT_CODES[77] = "sandbox_denied"


def interpret(result: RunResult, limits: CallLimits, *, what: str) -> Any:
    """The JSON value the call produced, or ``SandboxError`` saying why there is none.

    ``what`` names the call in messages (``plugin textkit, tool slugify``).
    """
    if result.trap == "INTERRUPT":
        ms = round((limits.timeout or 0) * 1000)
        raise SandboxError("timeout", f"{what}: stopped at its time limit of {ms} ms")
    if result.trap == "OUT_OF_FUEL":
        raise SandboxError("timeout", f"{what}: ran out of fuel ({limits.fuel} units)")
    if result.trap == "STACK_OVERFLOW":
        raise SandboxError("sandbox_denied", f"{what}: exhausted its wasm stack")
    if result.memory_at_limit and (result.trap or result.exit_code):
        mib = (limits.memory_bytes or 0) >> 20
        raise SandboxError(
            "sandbox_denied",
            f"{what}: memory limit of {mib} MiB reached (growth refused), then "
            + (f"trapped ({result.trap})" if result.trap else f"exited {result.exit_code}"),
        )
    if result.trap is not None:
        detail = result.trap_message or result.trap
        if result.trap == "error":
            raise SandboxError("sandbox_denied", f"{what}: refused by the sandbox: {detail}")
        raise SandboxError("internal", f"{what}: crashed: {detail} ({result.trap})")
    if result.stdout_overflow:
        raise SandboxError(
            "sandbox_denied",
            f"{what}: wrote more than the {limits.output_bytes >> 10} KiB allowed on stdout",
        )
    if result.exit_code != 0:
        reason = last_line(result.stderr)
        code = EXIT_CODES.get(result.exit_code, "internal")
        raise SandboxError(
            code,
            f"{what}: exited with status {result.exit_code}" + (f": {reason}" if reason else ""),
        )
    try:
        return json.loads(result.stdout)
    except ValueError as exc:
        raise SandboxError(
            "internal", f"{what}: did not write one JSON value on stdout ({exc})"
        ) from None


def last_line(data: bytes, limit: int = 300) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:limit] if lines else ""


class Sandbox:
    """The runtimes of one process (with and without fuel metering: an engine-wide setting
    that costs on every loop, so only plugins whose manifest sets fuel pay for it) and the
    one epoch ticker thread they share."""

    def __init__(
        self, cache_dir: Path | None, *, max_wasm_stack: int = 512 * 1024, tick: float = 0.005
    ) -> None:
        self.ticker = EpochTicker(tick)
        self._runtimes = {
            fuel: Runtime(
                EngineSettings(fuel=fuel, max_wasm_stack=max_wasm_stack), cache_dir, self.ticker
            )
            for fuel in (False, True)
        }

    def runtime(self, *, fuel: bool) -> Runtime:
        return self._runtimes[fuel]

    def close(self) -> None:
        self.ticker.close()
