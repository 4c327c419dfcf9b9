"""``isolation = "process"``: calls run in a pool of supervised worker processes.

Each worker is ``python -m convergiod.actors.plugin.worker`` connected to its own ``ipc://``
endpoint (a fresh one per incarnation, so a reply can never reach the wrong incarnation).
A call takes an idle worker, sends a ``JobMsg`` and waits for the answer while watching the
process: if the worker dies (even SIGKILL) only that call fails (``internal``), and the
supervisor thread replaces the worker; a worker that overruns the call's time limit by more
than ``grace`` is killed (``timeout``) and replaced the same way.

The blocking parts (spawning, waiting on sockets and processes) run on threads, so the pool
needs no task of its own in the actor: the supervisor is a plain thread that polls its
processes every 50 ms and restarts dead ones, backing off when they keep dying.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import zmq

from convergiod.actors.plugin.runner import Job
from convergiod.actors.plugin.sandbox import RunResult, SandboxError
from convergiod.actors.plugin.worker import DoneMsg, ErrorMsg, Hello, JobMsg, decode, encode

log = logging.getLogger("convergiod.plugin.pool")

SPAWN_TIMEOUT = 20.0
POLL_MS = 20


@dataclass(eq=False)
class _Worker:
    slot: int
    generation: int
    endpoint: str
    socket_path: Path
    sock: zmq.Socket[Any]
    proc: subprocess.Popen[bytes]
    dead: bool = False
    busy: bool = False
    pid: int = 0
    retired: bool = False

    def exited(self) -> bool:
        return self.proc.poll() is not None


class ProcessRunner:
    def __init__(
        self,
        size: int,
        *,
        runtime_dir: Path,
        cache_dir: Path | None,
        max_wasm_stack: int,
        tick: float,
        grace: float = 10.0,
    ) -> None:
        self.size = size
        self.runtime_dir = runtime_dir
        self.cache_dir = cache_dir
        self.max_wasm_stack = max_wasm_stack
        self.tick = tick
        self.grace = grace
        self.restarts = 0
        self.limiter = trio.CapacityLimiter(size)
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._workers: dict[int, _Worker] = {}
        self._generations = itertools.count(1)
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        #: Guards ``busy`` and retiring: a worker's socket is closed by whoever holds it last.
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await trio.to_thread.run_sync(self._start_all)

    def _start_all(self) -> None:
        for slot in range(self.size):
            worker = self._spawn(slot)
            self._workers[slot] = worker
            self._idle.put(worker)
        self._supervisor = threading.Thread(
            target=self._supervise, name="plugin-pool-supervisor", daemon=True
        )
        self._supervisor.start()

    def _spawn(self, slot: int) -> _Worker:
        generation = next(self._generations)
        path = self.runtime_dir / f"plugin-w{slot}-{generation}.sock"
        path.unlink(missing_ok=True)
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(f"ipc://{path}")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "convergiod.actors.plugin.worker",
                f"ipc://{path}",
                str(self.cache_dir or ""),
                str(self.max_wasm_stack),
                str(self.tick),
                str(os.getpid()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            # Out of the daemon's process group: a Ctrl-C in its terminal (or a signal to
            # the group) is for the daemon, which stops its workers itself.
            start_new_session=True,
        )
        worker = _Worker(slot, generation, f"ipc://{path}", path, sock, proc)
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while time.monotonic() < deadline:
            if sock.poll(50):
                msg = decode(sock.recv())
                if isinstance(msg, Hello):
                    worker.pid = msg.pid
                    log.info("plugin worker %d started (pid %d)", slot, msg.pid)
                    return worker
            if proc.poll() is not None:
                break
        self._retire(worker)
        raise SandboxError("unavailable", f"plugin worker {slot} did not start")

    def _retire(self, worker: _Worker) -> None:
        """Kill (if needed) and reap the process, close its socket. Call with the worker not
        busy, or from the thread that holds it busy."""
        if worker.retired:
            return
        worker.retired = worker.dead = True
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait()
        worker.sock.close(0)
        worker.socket_path.unlink(missing_ok=True)

    def _supervise(self) -> None:
        failures: list[float] = []
        while not self._stop.wait(0.05):
            for slot, worker in list(self._workers.items()):
                if not (worker.dead or worker.exited()) or self._stop.is_set():
                    continue
                now = time.monotonic()
                failures = [t for t in failures if now - t < 10.0] + [now]
                if len(failures) > 10:
                    # Restart intensity exceeded: keep trying, but slowly.
                    self._stop.wait(1.0)
                code = worker.proc.poll()
                log.warning(
                    "plugin worker %d (pid %d) exited (%s); replacing it",
                    slot,
                    worker.pid,
                    _describe_exit(code),
                )
                worker.dead = True
                try:
                    replacement = self._spawn(slot)
                except (SandboxError, OSError, zmq.ZMQError) as exc:
                    log.error("cannot restart plugin worker %d: %s", slot, exc)
                    continue
                # A busy incarnation is retired by the call that holds it.
                with self._lock:
                    if not worker.busy:
                        self._retire(worker)
                self._workers[slot] = replacement
                self.restarts += 1
                self._idle.put(replacement)

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._close)

    def _close(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        for worker in self._workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self._workers.values():
            try:
                worker.proc.wait(2)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
            with self._lock:
                self._retire(worker)
        self._ctx.term()

    # ------------------------------------------------------------------ calls

    async def run(self, job: Job) -> RunResult:
        return await trio.to_thread.run_sync(self._call, job, limiter=self.limiter)

    def pids(self) -> list[int]:
        return [w.pid for w in self._workers.values() if not w.dead]

    def _take(self) -> _Worker:
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                raise SandboxError("unavailable", "no plugin worker process is available")
            try:
                worker = self._idle.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            with self._lock:
                if worker.dead or worker.retired or worker.exited():
                    worker.dead = True
                    continue
                worker.busy = True
            return worker

    def _call(self, job: Job) -> RunResult:
        worker = self._take()
        job_id = next(self._ids)
        deadline = time.monotonic() + job.timeout + self.grace
        try:
            worker.sock.send(encode(JobMsg(id=job_id, job=job)))
            while True:
                if worker.sock.poll(POLL_MS):
                    msg = decode(worker.sock.recv())
                    if isinstance(msg, DoneMsg) and msg.id == job_id:
                        return msg.result
                    if isinstance(msg, ErrorMsg) and msg.id == job_id:
                        raise SandboxError(msg.code, msg.message)  # type: ignore[arg-type]
                    continue
                if worker.exited():
                    worker.dead = True
                    raise SandboxError(
                        "internal",
                        f"plugin worker process {worker.pid} died during the call "
                        f"({_describe_exit(worker.proc.poll())}); it is being replaced",
                    )
                if time.monotonic() > deadline:
                    worker.dead = True
                    worker.proc.kill()
                    raise SandboxError(
                        "timeout",
                        f"plugin worker process {worker.pid} did not answer within "
                        f"{job.timeout + self.grace:.1f} s; it was killed and is being replaced",
                    )
        finally:
            with self._lock:
                worker.busy = False
                if worker.dead:
                    self._retire(worker)
            if not worker.dead:
                self._idle.put(worker)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
