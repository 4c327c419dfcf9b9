"""The router's HTTP/1.1 client: request bytes, response framing (chunked with extensions and
trailers, content-length, until close), keep-alive reuse, and clean errors for broken HTTP.
A scripted in-memory stream stands in for the socket, so every split of the bytes between
reads can be tried."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from convergiod.actors.router.http import ConnectError, HttpClient, ProtocolError, _Conn

URL = "http://127.0.0.1:9/v1/chat/completions?x=1"


class Scripted(trio.abc.Stream):
    """Answers with ``pieces``, one per read, then end of stream; records what was sent."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.sent = b""
        self.closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += bytes(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.pieces.pop(0) if self.pieces else b""

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


def client_with(*streams: Scripted) -> HttpClient:
    client = HttpClient()
    queue = list(streams)

    async def dial(*_: Any) -> _Conn:
        await trio.lowlevel.checkpoint()
        return _Conn(queue.pop(0))

    client._dial = dial  # type: ignore[method-assign]
    return client


async def fetch(client: HttpClient, **kw: Any) -> tuple[int, list[bytes]]:
    pieces: list[bytes] = []
    async with client.request(
        "POST", URL, headers=[("content-type", "application/json")], body=b"{}", **kw
    ) as r:
        async for piece in r.iter_bytes():
            pieces.append(piece)
    return r.status, pieces


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n"
)


async def test_request_bytes() -> None:
    s = Scripted([b"HTTP/1.1 204 No Content\r\n\r\n"])
    status, pieces = await fetch(client_with(s))
    assert (status, pieces) == (204, [])
    assert s.sent == (
        b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:9\r\n"
        b"content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    )


async def test_chunked_body_split_at_every_byte() -> None:
    for cut in range(1, len(CHUNKED)):
        for second in (cut, min(len(CHUNKED), cut + 7)):
            s = Scripted([p for p in (CHUNKED[:cut], CHUNKED[cut:second], CHUNKED[second:]) if p])
            client = client_with(s)
            status, pieces = await fetch(client)
            assert status == 200 and b"".join(pieces) == b"hello 0123456789", cut
            assert all(pieces)
            assert not s.closed and len(client._origins[("http", "127.0.0.1", 9)].idle) == 1


async def test_one_read_with_many_chunks_is_one_piece() -> None:
    head, _, body = CHUNKED.partition(b"\r\n\r\n")
    s = Scripted([head + b"\r\n\r\n", body])
    _, pieces = await fetch(client_with(s))
    assert pieces == [b"hello 0123456789"]


async def test_connection_is_reused_and_a_stale_one_redialled() -> None:
    stale = Scripted([CHUNKED])  # answers once, then reads as closed
    fresh = Scripted([CHUNKED])
    client = client_with(stale, fresh)
    await fetch(client)
    _, pieces = await fetch(client)  # the pooled one is dead: one fresh dial, same answer
    assert b"".join(pieces) == b"hello 0123456789"
    assert stale.closed and stale.sent.count(b"POST") == 2 and fresh.sent.count(b"POST") == 1


async def test_content_length_and_close_delimited_bodies() -> None:
    s = Scripted(
        [b"HTTP/1.1 429 Too Many\r\nRetry-After: 2\r\ncontent-length: 5\r\n\r\nab", b"cde"]
    )
    client = client_with(s)
    async with client.request("POST", URL, headers=[], body=b"") as r:
        assert r.header("retry-after") == "2"
        assert await r.read() == b"abcde"
    assert len(client._origins[("http", "127.0.0.1", 9)].idle) == 1
    s = Scripted([b"HTTP/1.0 200 OK\r\n\r\nall", b" of it"])
    client = client_with(s)
    _, pieces = await fetch(client)
    assert b"".join(pieces) == b"all of it" and s.closed  # not reusable


async def test_informational_responses_are_skipped() -> None:
    s = Scripted([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"])
    _, pieces = await fetch(client_with(s))
    assert pieces == [b"ok"]


async def test_connection_close_header_is_honoured() -> None:
    s = Scripted([b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok"])
    await fetch(client_with(s))
    assert s.closed


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",  # cut mid-chunk
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        b"",  # closed without answering
    ],
)
async def test_broken_http_is_a_protocol_error(raw: bytes) -> None:
    s = Scripted([raw] if raw else [])
    with pytest.raises(ProtocolError):
        await fetch(client_with(s))
    assert s.closed


@pytest.mark.parametrize(
    "header",
    [("x-key", "a\r\nx-injected: 1"), ("bad name", "v"), ("x-key", "a\nb"), ("x-key", "\u2603")],
)
async def test_headers_that_would_break_the_request_are_refused(header: tuple[str, str]) -> None:
    s = Scripted([])
    client = client_with(s)
    with pytest.raises(ConnectError) as info:
        async with client.request("POST", URL, headers=[header], body=b""):
            pass
    assert "injected" not in str(info.value) and s.sent == b""


async def _read_until_done(client: HttpClient) -> bytes:
    """Read a response until its payload is in (not its chunked end), then leave."""
    async with client.request("POST", URL, headers=[], body=b"{}") as r:
        data = await r.receive()
        r.finish_later = True
    return data


async def test_a_response_finished_later_is_pooled_once_its_end_arrives() -> None:
    head, _, body = CHUNKED.partition(b"\r\n\r\n")
    payload, _, end = body.partition(b"0\r\nx-trailer")
    s = Scripted([head + b"\r\n\r\n" + payload, b"0\r\nx-trailer" + end, CHUNKED])
    client = client_with(s)
    async with trio.open_nursery() as nursery:

        def background(fn: Any) -> bool:
            nursery.start_soon(fn)
            return True

        client.background = background
        assert await _read_until_done(client) == b"hello 0123456789"
        origin = client._origins[("http", "127.0.0.1", 9)]
        assert not origin.idle and origin.limiter.borrowed_tokens == 1  # still finishing
        await trio.testing.wait_all_tasks_blocked()
        assert len(origin.idle) == 1 and origin.limiter.borrowed_tokens == 0
        _, pieces = await fetch(client)  # the same connection, reused
        assert b"".join(pieces) == b"hello 0123456789" and s.sent.count(b"POST") == 2
        assert not s.closed


async def test_a_response_finished_later_without_background_closes_its_connection() -> None:
    head, _, body = CHUNKED.partition(b"\r\n\r\n")
    payload, _, _ = body.partition(b"0\r\nx-trailer")
    first = Scripted([head + b"\r\n\r\n" + payload])
    second = Scripted([CHUNKED])
    client = client_with(first, second)
    assert await _read_until_done(client) == b"hello 0123456789"
    assert first.closed
    await fetch(client)
    assert second.sent.count(b"POST") == 1
