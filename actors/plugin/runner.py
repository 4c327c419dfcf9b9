"""Where calls run: in this process on worker threads, or in a pool of worker processes.

A ``Job`` is one call as plain data (module path and pinned hash, limits, grants, stdin), so
the same job runs in a thread here or is sent to a worker process over ZeroMQ. Both runners
answer with the ``RunResult`` that ``sandbox.interpret`` turns into a value or an error.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec
import trio

from convergiod.actors.plugin.sandbox import (
    CallGrants,
    CallLimits,
    DirGrant,
    Program,
    RunResult,
    Sandbox,
)


class JobDir(msgspec.Struct, frozen=True):
    host: str
    guest: str
    write: bool


class Job(msgspec.Struct, frozen=True, kw_only=True):
    module_path: str
    sha256: str
    fuel: int | None
    memory_bytes: int
    timeout: float
    output_bytes: int
    stdin: bytes
    dirs: list[JobDir] = []
    env: list[tuple[str, str]] = []
    argv0: str = "plugin"

    def limits(self) -> CallLimits:
        return CallLimits(
            memory_bytes=self.memory_bytes,
            timeout=self.timeout,
            fuel=self.fuel,
            output_bytes=self.output_bytes,
        )

    def grants(self) -> CallGrants:
        return CallGrants(
            dirs=tuple(DirGrant(host=d.host, guest=d.guest, write=d.write) for d in self.dirs),
            env=tuple(self.env),
        )


@dataclass
class _Cached:
    stat: tuple[int, int, int]
    sha256: str
    program: Program


class ProgramCache:
    """Compiled programs by module path. The file is stat'ed on every call: a module replaced
    or rewritten since it was loaded is loaded again, and its hash checked against the pin."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._programs: dict[tuple[str, bool], _Cached] = {}
        self._lock = threading.Lock()

    def get(self, path: str, sha256: str, *, fuel: bool) -> Program:
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._programs.get((path, fuel))
        if cached is not None and cached.stat == key and cached.sha256 == sha256:
            return cached.program
        wasm = Path(path).read_bytes()
        program = self.sandbox.runtime(fuel=fuel).load(wasm, expected_sha256=sha256)
        with self._lock:
            self._programs[(path, fuel)] = _Cached(stat=key, sha256=sha256, program=program)
        return program

    def peek(self, path: str, sha256: str, *, fuel: bool) -> Program | None:
        """The compiled program if it is loaded and still current, else ``None``: never
        compiles (for callers that must not block)."""
        cached = self._programs.get((path, fuel))
        if cached is None or cached.sha256 != sha256:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if cached.stat != (st.st_ino, st.st_size, st.st_mtime_ns):
            return None
        return cached.program

    def forget(self, path: str) -> None:
        with self._lock:
            for key in [k for k in self._programs if k[0] == path]:
                del self._programs[key]


def execute(cache: ProgramCache, job: Job) -> RunResult:
    """Run ``job`` on the calling thread. Raises ``SandboxError`` when the module cannot be
    loaded (hash changed, refused import...); anything the guest does is in the result."""
    try:
        program = cache.get(job.module_path, job.sha256, fuel=job.fuel is not None)
    except FileNotFoundError:
        from convergiod.actors.plugin.sandbox import SandboxError

        raise SandboxError("not_found", f"module {job.module_path} is missing") from None
    return program.runtime.run(program, job.stdin, job.limits(), job.grants(), job.argv0)


class Runner(Protocol):
    async def run(self, job: Job) -> RunResult: ...

    async def aclose(self) -> None: ...


class ThreadRunner:
    """Calls on Trio worker threads, at most ``max_concurrent`` at once (wasmtime releases
    the GIL while wasm runs)."""

    def __init__(self, sandbox: Sandbox, max_concurrent: int) -> None:
        self.sandbox = sandbox
        self.cache = ProgramCache(sandbox)
        self.limiter = trio.CapacityLimiter(max_concurrent)

    async def run(self, job: Job) -> RunResult:
        return await trio.to_thread.run_sync(execute, self.cache, job, limiter=self.limiter)

    async def aclose(self) -> None:
        self.sandbox.close()
