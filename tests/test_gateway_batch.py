"""``Request.batch``: a client that takes batches gets several messages per frame (a batch
frame: a msgpack array of them), in order; one that does not still gets one message per
frame. Every ZeroMQ message has one part. Real daemon, raw DEALER."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import zmq

from convergiod import protocol as p
from convergiod.gateway import BATCH_MAX_BYTES, BATCH_MAX_MESSAGES, _batches
from tests.conftest import DaemonProcess


def _dealer(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def _collect(sock: zmq.Socket[Any], n_requests: int) -> list[list[p.ServerMessage]]:
    """Every frame until ``n_requests`` terminal messages came, each as the list of the
    messages it carries (a frame that is not a batch carries one)."""
    messages: list[list[p.ServerMessage]] = []
    terminal = 0
    while terminal < n_requests:
        assert sock.poll(10_000), "no answer from the daemon"
        parts = sock.recv_multipart()
        assert len(parts) == 1, f"a message of {len(parts)} parts"
        frames = p.decode_server_frame(parts[0])
        assert p.is_batch(parts[0]) == (len(frames) > 1)
        messages.append(frames)
        terminal += sum(not isinstance(f, p.Event) for f in frames)
    assert not sock.poll(200), "a frame after every request had its terminal frame"
    return messages


def _check_streams(frames: list[p.ServerMessage], ids: range, ticks: int) -> None:
    """Per request: ticks 1..n with seq 1..n in order, then one Result with a Pong."""
    by_id: dict[int, list[p.ServerMessage]] = defaultdict(list)
    for frame in frames:
        by_id[frame.id].append(frame)
    assert sorted(by_id) == list(ids)
    for rid in ids:
        got = by_id[rid]
        assert [e.seq for e in got[:-1] if isinstance(e, p.Event)] == list(range(1, ticks + 1))
        assert [e.body.n for e in got[:-1] if isinstance(e, p.Event)] == list(  # type: ignore[union-attr]
            range(1, ticks + 1)
        )
        assert isinstance(got[-1], p.Result) and isinstance(got[-1].body, p.Pong)


def test_batched_requests_share_messages_and_keep_their_order(
    daemon: DaemonProcess, ctx: zmq.Context[Any]
) -> None:
    sock = _dealer(ctx, daemon.paths.api_endpoint)
    ids = range(1, 51)
    for rid in ids:
        # The ticks come after timers that expire together: in flight at the same time.
        sock.send(p.encode(p.Request(id=rid, op=p.Ping(count=3, interval=0.02), batch=True)))
    messages = _collect(sock, len(ids))
    # 50 requests x (3 events + 1 result) frames, in far fewer messages.
    assert sum(map(len, messages)) == 200
    assert len(messages) < 150, len(messages)
    assert max(map(len, messages)) > 1
    assert max(map(len, messages)) <= BATCH_MAX_MESSAGES
    _check_streams([f for m in messages for f in m], ids, 3)


def test_requests_without_batch_get_one_frame_per_message_beside_batched_ones(
    daemon: DaemonProcess, ctx: zmq.Context[Any]
) -> None:
    """On one connection, batched and unbatched requests interleave: the unbatched ones'
    frames always come alone (what a client that does not know ``batch`` can read)."""
    sock = _dealer(ctx, daemon.paths.api_endpoint)
    ids = range(1, 41)
    for rid in ids:
        op = p.Ping(count=2, interval=0.02)
        sock.send(p.encode(p.Request(id=rid, op=op, batch=rid % 2 == 0)))
    messages = _collect(sock, len(ids))
    for frames in messages:
        if any(f.id % 2 for f in frames):
            assert len(frames) == 1, frames
    assert max(map(len, messages)) > 1  # the batched half did share messages
    _check_streams([f for m in messages for f in m], ids, 2)


def test_a_lone_batched_request_gets_its_frames_at_once(
    daemon: DaemonProcess, ctx: zmq.Context[Any]
) -> None:
    """With one request in flight there is nothing to share a message with: each frame
    goes out as it is made, without waiting for the rest of the scheduler pass."""
    sock = _dealer(ctx, daemon.paths.api_endpoint)
    sock.send(p.encode(p.Request(id=1, op=p.Ping(count=3), batch=True)))
    messages = _collect(sock, 1)
    assert [len(m) for m in messages] == [1, 1, 1, 1]
    _check_streams([f for m in messages for f in m], range(1, 2), 3)


def test_a_batched_request_that_fails_still_ends_with_one_terminal_frame(
    daemon: DaemonProcess, ctx: zmq.Context[Any]
) -> None:
    sock = _dealer(ctx, daemon.paths.api_endpoint)
    sock.send(p.encode(p.Request(id=7, op=p.Ping(count=1000, interval=0.01), batch=True)))
    sock.send(p.encode(p.Request(id=8, op=p.Ping(count=1), batch=True, deadline=5)))
    sock.send(p.encode(p.Cancel(id=7)))
    frames = [f for m in _collect(sock, 2) for f in m]
    last = {f.id: f for f in frames}
    assert isinstance(last[7], p.Failure) and last[7].code == "cancelled"
    assert isinstance(last[8], p.Result)


def _messages(n: int, size: int = 0) -> list[p.ServerMessage]:
    return [p.Event(id=i + 1, seq=1, body=p.Notice(message="x" * size)) for i in range(n)]


def test_batches_split_by_message_count_and_size_and_keep_order() -> None:
    msgs = _messages(3 * BATCH_MAX_MESSAGES + 8)
    parts = list(_batches([p.encode(m) for m in msgs]))
    assert [count for count, _ in parts] == [BATCH_MAX_MESSAGES] * 3 + [8]
    assert [m for _, frame in parts for m in p.decode_server_frame(frame)] == msgs

    # Past BATCH_MAX_BYTES a batch closes before the message that would not fit: two of
    # these fit in one, a third does not.
    big = _messages(5, BATCH_MAX_BYTES // 3)
    parts = list(_batches([p.encode(m) for m in big]))
    assert [count for count, _ in parts] == [2, 2, 1]
    assert all(len(frame) <= BATCH_MAX_BYTES + 3 for _, frame in parts)
    assert [m for _, frame in parts for m in p.decode_server_frame(frame)] == big
    assert not p.is_batch(parts[-1][1])  # a message alone is sent as itself

    one = p.encode(msgs[0])
    assert list(_batches([one])) == [(1, one)]
    # More than 15 messages take an array16 header.
    assert p.decode_server_frame(p.encode_batch([one] * 16)) == [msgs[0]] * 16


def test_a_batch_with_a_message_the_client_cannot_read_loses_only_that_one() -> None:
    """A newer daemon may send a message this client does not know: the others of its
    batch are still delivered."""
    from convergio_client.trio_client import AsyncClient

    good = _messages(2)
    unknown = p.encode({"type": "from.the.future", "id": 9})
    frame = p.encode_batch([p.encode(good[0]), unknown, p.encode(good[1])])
    assert AsyncClient._salvage(frame, ValueError("unknown type")) == good
    assert AsyncClient._salvage(b"\xc1", ValueError("not msgpack")) == []
    assert AsyncClient._salvage(b"\x92\xc1", ValueError("broken")) == []  # a broken batch


def test_batched_requests_in_flight_at_shutdown_all_get_their_terminal_frame(
    daemon_factory: Any, ctx: zmq.Context[Any]
) -> None:
    """SIGTERM with batched requests in flight: those that finish within the drain timeout
    get their result, the others ``unavailable``; none is left without a terminal frame
    (the last answers may be queued for their batch when the gateway stops)."""
    d: DaemonProcess = daemon_factory("[gateway]\ndrain_timeout = 0.5\n")
    sock = _dealer(ctx, d.paths.api_endpoint)
    for rid in range(1, 21):
        sock.send(p.encode(p.Request(id=rid, op=p.Ping(count=4, interval=0.05), batch=True)))
    for rid in range(21, 31):
        sock.send(p.encode(p.Request(id=rid, op=p.Ping(count=100, interval=0.05), batch=True)))
    assert sock.poll(5000)  # they are running
    assert d.terminate() == 0
    frames = [f for m in _collect(sock, 30) for f in m]
    terminal = {f.id: f for f in frames if not isinstance(f, p.Event)}
    assert sorted(terminal) == list(range(1, 31))
    assert all(isinstance(terminal[rid], p.Result) for rid in range(1, 21))
    assert all(
        isinstance(terminal[rid], p.Failure) and terminal[rid].code == "unavailable"  # type: ignore[union-attr]
        for rid in range(21, 31)
    )
