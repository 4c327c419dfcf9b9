"""The sd_notify client and the watchdog decision, without a daemon."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from convergiod.service.notify import Notifier, monotonic_usec
from convergiod.service.watchdog import health_problem, run_watchdog


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    directory = tempfile.mkdtemp(prefix="cvg-n-", dir="/tmp")
    path = os.path.join(directory, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


def fields(datagram: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in datagram.decode().splitlines())


def test_each_message_is_one_datagram_of_key_value_lines(listener) -> None:  # type: ignore[no-untyped-def]
    path, sock = listener
    n = Notifier(path)
    n.ready("serving\non two lines")
    n.watchdog()
    n.stopping("bye")
    assert fields(sock.recv(4096)) == {"READY": "1", "STATUS": "serving on two lines"}
    assert sock.recv(4096) == b"WATCHDOG=1\n"
    assert fields(sock.recv(4096)) == {"STOPPING": "1", "STATUS": "bye"}
    n.close()


def test_reloading_carries_the_monotonic_clock_in_microseconds(listener) -> None:  # type: ignore[no-untyped-def]
    path, sock = listener
    before = monotonic_usec()
    Notifier(path).reloading("reloading")
    got = fields(sock.recv(4096))
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= monotonic_usec()


def test_abstract_socket_address_starting_with_at() -> None:
    name = f"convergio-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        assert Notifier("@" + name).send(STATUS="hi")
        assert sock.recv(64) == b"STATUS=hi\n"
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled and n.watchdog_interval is None
    assert n.send(READY="1") is False


def test_a_vanished_manager_never_raises(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody.sock"))
    assert n.send(READY="1") is False
    assert n.send(WATCHDOG="1") is False


def test_env_gives_ping_interval_half_the_timeout_and_can_be_unset() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "OTHER": "1"}
    n = Notifier.from_env(env, unset=True)
    assert n.address == "/run/x" and n.watchdog_interval == 15.0
    assert env == {"OTHER": "1"}


def test_watchdog_meant_for_another_pid_is_ignored() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier.from_env(env).watchdog_interval is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_env(env).watchdog_interval == 0.5


def test_health_needs_a_live_tree_and_a_recent_probe() -> None:
    ok = {"tree_alive": True, "last_probe_ok": 100.0, "probe_interval": 1.0}
    assert health_problem(now=104.9, **ok) is None  # type: ignore[arg-type]
    assert health_problem(now=105.0, **ok) == "no health probe answered for 5.0 s"  # type: ignore[arg-type]
    assert health_problem(now=100.0, **{**ok, "tree_alive": False}) == (  # type: ignore[arg-type]
        "the actor tree has failed"
    )


class RecordingNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[tuple[float, dict[str, str]]] = []

    def send(self, **fields: str | None) -> bool:
        self.sent.append((trio.current_time(), {k: v for k, v in fields.items() if v}))
        return True


async def test_watchdog_pings_at_the_interval_only_while_healthy(
    autojump_clock: trio.testing.MockClock,
) -> None:
    notifier = RecordingNotifier()
    problem: list[str | None] = [None]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: run_watchdog(notifier, 0.5, lambda: problem[0], healthy_status=lambda: "ok")
        )
        await trio.sleep(2.25)  # pings at 0, .5, 1, 1.5, 2
        problem[0] = "the actor tree has failed"
        await trio.sleep(3.0)
        problem[0] = None
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    pings = [t for t, f in notifier.sent if f == {"WATCHDOG": "1"}]
    statuses = [(t, f["STATUS"]) for t, f in notifier.sent if "STATUS" in f]
    assert pings[:5] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert not [t for t in pings if 2.25 < t < 5.25]  # unhealthy: silence
    assert pings[5:] == [5.5, 6.0]  # healthy again: pings resume
    assert statuses == [(2.5, "unhealthy: the actor tree has failed"), (5.5, "ok")]
