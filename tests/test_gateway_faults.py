"""Garbage at the front door never kills the daemon, and every well-framed bad request gets
a Failure with a code. Real daemon, real sockets, raw DEALER clients."""

from __future__ import annotations

import threading
from typing import Any

import msgspec
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convergiod import protocol as p
from tests.conftest import DaemonProcess


class Raw:
    """A bare DEALER: sends whatever bytes it is given."""

    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, *frames: bytes) -> None:
        self.sock.send_multipart(list(frames))

    def recv(self, timeout: float = 5.0) -> p.ServerMessage:
        assert self.sock.poll(int(timeout * 1000)), "no answer from the daemon"
        return p.decode_server(self.sock.recv())

    def ping(self, rid: int = 999_999) -> p.Pong:
        self.send(p.encode(p.Request(id=rid, op=p.Ping())))
        while True:
            msg = self.recv()
            if msg.id == rid:
                assert isinstance(msg, p.Result) and isinstance(msg.body, p.Pong)
                return msg.body

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def test_random_bytes_get_a_failure_and_ping_still_answers(daemon: DaemonProcess) -> None:
    raw = Raw(daemon.paths.api_endpoint)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(min_size=0, max_size=2000))
    def check(frame: bytes) -> None:
        raw.send(frame)
        msg = raw.recv()
        if isinstance(msg, p.Failure):
            assert msg.code in p.ERROR_CODES and msg.message
        # A random frame that happens to be a valid request is answered normally.

    check()
    assert raw.ping().pid == daemon.proc.pid  # type: ignore[union-attr]
    raw.close()


def test_truncated_messagepack_is_refused(daemon: DaemonProcess) -> None:
    raw = Raw(daemon.paths.api_endpoint)
    good = p.encode(p.Request(id=77, op=p.Ping(echo=b"hello", count=1)))
    for cut in range(1, len(good)):
        raw.send(good[:cut])
        msg = raw.recv()
        assert isinstance(msg, p.Failure)
        assert msg.code == "bad_request"
    raw.ping()
    raw.close()


def test_wrong_types_get_failure_with_the_request_id(daemon: DaemonProcess) -> None:
    raw = Raw(daemon.paths.api_endpoint)
    cases = [
        {"type": "request", "id": 11, "op": {"type": "ping", "count": "many"}},
        {"type": "request", "id": 12, "op": {"type": "actor.kill"}},
        {"type": "request", "id": 13, "op": {"type": "no.such.op"}},
        {"type": "request", "id": 14, "op": {"type": "ping"}, "deadline": -1},
        {"type": "request", "id": 15, "op": "ping"},
        {"type": "request", "id": 16, "op": {"type": "ping"}, "v": 2},
    ]
    for case in cases:
        raw.send(msgspec.msgpack.encode(case))
        msg = raw.recv()
        assert isinstance(msg, p.Failure), case
        assert msg.id == case["id"]
        assert msg.code == ("unsupported_version" if "v" in case else "bad_request")
    raw.send(msgspec.msgpack.encode({"type": "request", "id": "x", "op": {"type": "ping"}}))
    msg = raw.recv()
    assert isinstance(msg, p.Failure) and msg.id == 0 and "$.id" in msg.message
    raw.close()


def test_wrong_frame_count_is_refused(daemon: DaemonProcess) -> None:
    raw = Raw(daemon.paths.api_endpoint)
    ping = p.encode(p.Request(id=5, op=p.Ping()))
    raw.send(b"", ping)
    raw.send(ping, ping, ping)
    for _ in range(2):
        msg = raw.recv()
        assert isinstance(msg, p.Failure) and msg.code == "bad_request"
        assert "exactly one frame" in msg.message
    raw.ping()
    raw.close()


def test_ten_megabyte_frame_is_refused_and_daemon_keeps_serving(daemon: DaemonProcess) -> None:
    raw = Raw(daemon.paths.api_endpoint)
    raw.send(b"\x81" + b"x" * (10 << 20))
    msg = raw.recv(timeout=15)
    assert isinstance(msg, p.Failure) and msg.code == "bad_request"
    assert "exceeds the maximum" in msg.message
    raw.ping()
    raw.close()


def test_flood_of_garbage_from_twenty_clients_leaves_daemon_answering(
    daemon: DaemonProcess,
) -> None:
    failures: list[str] = []
    answered = [0] * 20

    def flood(n: int) -> None:
        raw = Raw(daemon.paths.api_endpoint)
        try:
            for i in range(300):
                raw.send(bytes([i % 256]) * (i % 50 + 1))
            for _ in range(300):
                msg = raw.recv(timeout=30)
                if not isinstance(msg, p.Failure):
                    failures.append(f"client {n}: {msg}")
                answered[n] += 1
            raw.ping()
        except Exception as exc:
            failures.append(f"client {n}: {exc!r}")
        finally:
            raw.close()

    threads = [threading.Thread(target=flood, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:5]
    assert answered == [300] * 20
    with daemon.client() as c:
        assert c.call(p.Ping()).pid == daemon.proc.pid  # type: ignore[union-attr]
