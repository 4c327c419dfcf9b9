"""The daemon under a (fake) service manager: a test binds the ``$NOTIFY_SOCKET`` datagram
socket and records what arrives. Readiness, watchdog, reload and shutdown, end to end."""

from __future__ import annotations

import itertools
import signal
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

from convergio_client import RemoteError
from convergio_client.trio_client import open_client
from convergiod import protocol as p
from convergiod.config import Config
from convergiod.daemon import Daemon, serve
from convergiod.errors import OpError
from convergiod.paths import resolve
from convergiod.runtime import Actor, ChildSpec, SupervisorEscalation
from convergiod.service.notify import Notifier
from convergiod.service.reload import Reload
from tests.conftest import DaemonProcess


@dataclass(frozen=True)
class Datagram:
    at: float  # time.monotonic() when it arrived
    fields: dict[str, str]

    def has(self, key: str) -> bool:
        return self.fields.get(key) == "1"


class NotifyRecorder:
    """The service manager's end of ``$NOTIFY_SOCKET``: a thread stamps every datagram."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.05)
        self.got: list[Datagram] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.got.append(Datagram(time.monotonic(), fields))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def first(self, key: str, after: float = 0.0) -> Datagram | None:
        return next((d for d in list(self.got) if d.has(key) and d.at > after), None)

    def wait_for(self, key: str, after: float = 0.0, timeout: float = 15.0) -> Datagram:
        deadline = time.monotonic() + timeout
        while (found := self.first(key, after)) is None:
            assert time.monotonic() < deadline, f"no {key}=1 within {timeout} s: {self.got}"
            time.sleep(0.01)
        return found

    async def await_for(self, key: str, after: float = 0.0, timeout: float = 15.0) -> Datagram:
        with trio.fail_after(timeout):
            # Fed by a plain thread: polling is simpler than waking the loop from it.
            while (found := self.first(key, after)) is None:  # noqa: ASYNC110
                await trio.sleep(0.01)
        return found

    def pings(self, start: float = 0.0, end: float = float("inf")) -> list[float]:
        return [d.at for d in list(self.got) if d.has("WATCHDOG") and start <= d.at <= end]


@pytest.fixture
def recorder(home: Path) -> Iterator[NotifyRecorder]:
    r = NotifyRecorder(home)
    yield r
    r.close()


def managed(home: Path, recorder: NotifyRecorder, watchdog_usec: int = 400_000) -> DaemonProcess:
    d = DaemonProcess(home)
    d.env.update(NOTIFY_SOCKET=recorder.path, WATCHDOG_USEC=str(watchdog_usec))
    return d


# --------------------------------------------------------------------------- a real daemon


def test_notify_sequence_ready_watchdog_reloading_ready_stopping(
    home: Path, recorder: NotifyRecorder
) -> None:
    d = managed(home, recorder, watchdog_usec=400_000)
    try:
        d.spawn()
        ready = recorder.wait_for("READY")
        # READY only once the front door answers: the socket was bound before it was sent.
        assert d.paths.api_socket.exists()
        assert recorder.got[0].fields == {"STATUS": "starting: actors and sockets"}
        assert ready.fields["STATUS"].startswith(f"serving on {d.paths.api_endpoint}; ")
        assert (
            "3/3 actors running" in ready.fields["STATUS"]
            or "actors running" in (ready.fields["STATUS"])
        )
        d.wait_ready()
        # Pings every WATCHDOG_USEC / 2 = 0.2 s.
        deadline = time.monotonic() + 10
        while len(recorder.pings(ready.at)) < 8:
            assert time.monotonic() < deadline, recorder.got
            time.sleep(0.02)
        pings = recorder.pings(ready.at)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 0.15 <= statistics.median(gaps) <= 0.3, gaps

        result = d.cli("daemon", "reload")
        assert result.returncode == 0, result.stderr
        assert "no setting changed" in result.stdout
        reloading = recorder.wait_for("RELOADING", after=ready.at)
        assert int(reloading.fields["MONOTONIC_USEC"]) > 0
        again = recorder.wait_for("READY", after=reloading.at - 1e-9)
        assert again.at >= reloading.at and again is not ready
        assert again.fields["STATUS"].endswith("configuration reloaded")

        assert d.terminate() == 0
        stopping = recorder.wait_for("STOPPING")
        assert stopping.at > again.at
        assert stopping.fields["STATUS"].startswith("stopping")
        # Nothing claims readiness after the stop began.
        assert recorder.first("READY", after=stopping.at) is None
    finally:
        d.kill()


def test_sighup_reloads_and_a_broken_config_keeps_the_daemon_serving(
    home: Path, recorder: NotifyRecorder
) -> None:
    d = managed(home, recorder)
    try:
        d.spawn()
        ready = recorder.wait_for("READY")
        d.wait_ready()
        d.write_config("[gateway]\nmax_in_flght = 2\n")
        assert d.proc is not None
        d.proc.send_signal(signal.SIGHUP)
        reloading = recorder.wait_for("RELOADING", after=ready.at)
        back = recorder.wait_for("READY", after=reloading.at - 1e-9)
        assert "reload refused" in back.fields["STATUS"]
        assert "gateway.max_in_flght" in back.fields["STATUS"]
        deadline = time.monotonic() + 5
        while "unknown key 'gateway.max_in_flght'" not in d.logs():
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.02)
        assert d.cli("ping").returncode == 0
        assert d.proc.poll() is None
    finally:
        d.kill()


async def test_good_reload_changes_behaviour_without_dropping_in_flight_requests(
    daemon: DaemonProcess,
) -> None:
    async def burst(client: Any, n: int) -> list[str]:
        codes: list[str] = []

        async def one() -> None:
            try:
                await client.call(p.Ping(count=2, interval=0.2))
                codes.append("ok")
            except RemoteError as exc:
                codes.append(exc.code)

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        return sorted(codes)

    async with open_client(paths=daemon.paths) as client:
        assert await burst(client, 4) == ["ok"] * 4
        async with client.stream(p.Ping(count=8, interval=0.1)) as events:
            first = await events.__anext__()
            assert isinstance(first, p.Tick)
            daemon.write_config("[gateway]\nmax_in_flight_per_client = 2\n")
            reply = await client.call(p.DaemonReload())
            assert reply.changed == ["gateway.max_in_flight_per_client"]
            ticks = [first.n] + [e.n async for e in events if isinstance(e, p.Tick)]
        # The request that was in flight across the reload finished on the same connection.
        assert ticks == list(range(1, 9)) and isinstance(events.result, p.Pong)
        # The new limit is in force at once, no restart.
        assert await burst(client, 4) == ["ok", "ok", "overloaded", "overloaded"]


async def test_reload_with_a_broken_config_is_refused_naming_the_key(
    daemon: DaemonProcess,
) -> None:
    daemon.write_config('[gateway]\nmax_in_flight = "many"\n')
    async with open_client(paths=daemon.paths) as client:
        with pytest.raises(RemoteError) as info:
            await client.call(p.DaemonReload())
        assert info.value.code == "bad_request"
        assert "'gateway.max_in_flight'" in info.value.message
        status = await client.call(p.Status())
        assert status.healthy
    result = daemon.cli("daemon", "reload")
    assert result.returncode == 1
    assert "bad_request" in result.stderr and "gateway.max_in_flight" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- in-process daemon


@asynccontextmanager
async def in_process(
    home: Path, recorder: NotifyRecorder, watchdog_usec: int = 200_000
) -> AsyncIterator[Daemon]:
    """The daemon's ``serve`` in this test's event loop, so the test can block that loop."""
    paths = resolve({"CONVERGIO_HOME": str(home)})
    paths.prepare_runtime_dir()
    daemon = Daemon(paths, Config(), Notifier(recorder.path, watchdog_usec=watchdog_usec))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, daemon)
        await recorder.await_for("READY")
        yield daemon
        daemon.shutdown_requested.set()


async def test_no_watchdog_pings_while_the_event_loop_is_blocked(
    home: Path, recorder: NotifyRecorder
) -> None:
    async with in_process(home, recorder):
        await trio.sleep(0.5)
        assert len(recorder.pings()) >= 2
        blocked_at = time.monotonic()
        time.sleep(1.2)  # noqa: ASYNC251 -- blocks the event loop, on purpose
        unblocked_at = time.monotonic()
        await trio.sleep(0.5)
    # A ping sent just before the block may be stamped a moment later by the recorder thread.
    assert recorder.pings(blocked_at + 0.1, unblocked_at) == []
    assert recorder.pings(unblocked_at), "pings resume once the loop runs again"


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


async def test_watchdog_stops_when_the_actor_tree_dies(
    home: Path, recorder: NotifyRecorder
) -> None:
    paths = resolve({"CONVERGIO_HOME": str(home)})
    paths.prepare_runtime_dir()
    daemon = Daemon(paths, Config(), Notifier(recorder.path, watchdog_usec=200_000))
    killed_at = float("inf")
    with pytest.raises(BaseException) as info:  # which one: checked below
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, daemon)
            await recorder.await_for("READY")
            await trio.sleep(0.3)
            assert daemon.system is not None and daemon.healthy
            killed_at = time.monotonic()
            await daemon.system.kill("root")  # as `convergio actor kill root` does
            await trio.sleep_forever()
    assert any(isinstance(e, SupervisorEscalation) for e in leaves(info.value)), info.value
    assert recorder.pings(end=killed_at), "it pinged while healthy"
    assert recorder.pings(killed_at + 0.05) == []


class ReloadProbe(Actor):
    """A service actor that follows the reload contract and records what it receives."""

    reloadable: ClassVar[bool] = True
    reply_errors = (OpError,)

    def __init__(self, seen: list[tuple[str, bool, int]], refuse_limit: int | None) -> None:
        self.seen = seen
        self.refuse_limit = refuse_limit
        self.limit = 0

    async def handle(self, msg: object) -> None:
        assert isinstance(msg, Reload)
        new_limit = msg.config.gateway.max_in_flight
        self.seen.append((self.name, msg.dry_run, new_limit))
        if new_limit == self.refuse_limit:
            raise OpError("bad_request", "agents/scout.md: unknown model 'nope'")
        if not msg.dry_run:
            self.limit = new_limit


class NotReloadable(Actor):
    async def handle(self, msg: object) -> None:
        raise TypeError(f"unexpected {msg!r}")


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, int]]:
    seen: list[tuple[str, bool, int]] = []

    def specs(daemon: Daemon) -> list[ChildSpec]:
        return [
            ChildSpec(name="svc-a", start=lambda: ReloadProbe(seen, None)),
            ChildSpec(name="svc-plain", start=NotReloadable),
            ChildSpec(name="svc-b", start=lambda: ReloadProbe(seen, 7)),
        ]

    monkeypatch.setattr("convergiod.daemon.service_specs", specs)
    return seen


async def test_reloadable_actors_check_then_apply_the_new_config(
    home: Path, recorder: NotifyRecorder, probes: list[tuple[str, bool, int]]
) -> None:
    async with in_process(home, recorder) as daemon:
        daemon.paths.config_file.write_text("[gateway]\nmax_in_flight = 5\n")
        reply = await daemon.reload()
        assert reply.actors == ["svc-a", "svc-b"] and reply.failed == []
        assert reply.changed == ["gateway.max_in_flight"]
        assert probes == [
            ("svc-a", True, 5), ("svc-b", True, 5), ("svc-a", False, 5), ("svc-b", False, 5),
        ]  # fmt: skip
        assert daemon.config.gateway.max_in_flight == 5
        assert daemon.gateway is not None and daemon.gateway.config.max_in_flight == 5


async def test_an_actor_refusing_the_reload_leaves_everything_as_it_was(
    home: Path, recorder: NotifyRecorder, probes: list[tuple[str, bool, int]]
) -> None:
    async with in_process(home, recorder) as daemon:
        old = daemon.config
        daemon.paths.config_file.write_text("[gateway]\nmax_in_flight = 7\n")
        started = time.monotonic()
        with pytest.raises(OpError) as info:
            await daemon.reload()
        assert info.value.code == "bad_request"
        assert info.value.message == "svc-b: agents/scout.md: unknown model 'nope'"
        assert probes == [("svc-a", True, 7), ("svc-b", True, 7)]  # nobody applied it
        assert daemon.config is old
        assert daemon.system is not None
        assert {a.name: a.state for a in daemon.system.info()}["svc-plain"] == "running"
        back = await recorder.await_for("READY", after=started)
        assert "unknown model 'nope'" in back.fields["STATUS"]
