"""Streaming, deadlines, cancellation, overload and concurrency through a real daemon."""

from __future__ import annotations

import pytest
import trio

from convergio_client import RemoteError
from convergio_client.trio_client import open_client
from convergiod import protocol as p
from tests.conftest import DaemonProcess


async def test_stream_delivers_events_in_order_then_one_result(daemon: DaemonProcess) -> None:
    async with open_client(paths=daemon.paths) as client:
        async with client.stream(p.Ping(count=5, interval=0.01, echo=b"e")) as events:
            ticks = [e.n async for e in events if isinstance(e, p.Tick)]
        assert ticks == [1, 2, 3, 4, 5]
        assert isinstance(events.result, p.Pong) and events.result.echo == b"e"


async def test_deadline_ends_request_with_timeout(daemon: DaemonProcess) -> None:
    async with open_client(paths=daemon.paths) as client:
        with pytest.raises(RemoteError) as info:
            await client.call(p.Ping(count=100, interval=0.05), deadline=0.2)
        assert info.value.code == "timeout"
        assert (await client.call(p.Ping())).pid == daemon.proc.pid  # type: ignore[union-attr]


async def test_cancel_ends_request_with_cancelled(daemon: DaemonProcess) -> None:
    async with open_client(paths=daemon.paths) as client:
        async with client.stream(p.Ping(count=1000, interval=0.01)) as events:
            first = await events.__anext__()
            assert isinstance(first, p.Tick)
            await client._send(p.Cancel(id=events.id))
            with pytest.raises(RemoteError) as info:
                async for _ in events:
                    pass
        assert info.value.code == "cancelled"
        status = await client.call(p.Status())
        assert status.gateway.in_flight == 1  # only the status request itself


async def test_overload_answers_overloaded_with_retry_hint(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory("[gateway]\nmax_in_flight = 4\n")
    codes: list[str] = []
    async with open_client(paths=d.paths) as client:

        async def slow() -> None:
            try:
                await client.call(p.Ping(count=2, interval=0.3))
                codes.append("ok")
            except RemoteError as exc:
                codes.append(exc.code)
                assert exc.code != "overloaded" or exc.retry_after

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(slow)
    assert codes.count("ok") == 4
    assert codes.count("overloaded") == 6


async def test_many_concurrent_clients_each_get_their_own_answers(daemon: DaemonProcess) -> None:
    async def one_client(n: int) -> None:
        async with open_client(paths=daemon.paths) as client:
            for i in range(30):
                echo = f"{n}:{i}".encode()
                pong = await client.call(p.Ping(echo=echo, count=i % 3))
                assert pong.echo == echo

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(one_client, n)


async def test_duplicate_request_id_in_flight_is_refused(daemon: DaemonProcess) -> None:
    async with (
        open_client(paths=daemon.paths) as client,
        client.stream(p.Ping(count=3, interval=0.1)) as events,
    ):
        await client._send(p.Request(id=events.id, op=p.Ping(count=1)))
        with pytest.raises(RemoteError) as info:
            async for _ in events:
                pass
        assert info.value.code == "bad_request" and "already in flight" in info.value.message


async def test_client_timeout_is_the_longest_wait_for_a_frame(daemon: DaemonProcess) -> None:
    """``call(timeout=...)`` bounds each wait for a frame, not the whole call: a stream whose
    frames keep coming may last longer; a silence longer than the timeout ends it."""
    from convergio_client import ClientTimeout

    async with open_client(paths=daemon.paths) as client:
        start = trio.current_time()
        pong = await client.call(p.Ping(count=24, interval=0.05), timeout=0.5)
        assert isinstance(pong, p.Pong)
        assert trio.current_time() - start > 1.0  # twice the timeout, in steps below it
        start = trio.current_time()
        with pytest.raises(ClientTimeout):
            await client.call(p.Ping(count=2, interval=0.8), timeout=0.3)
        waited = trio.current_time() - start
        assert 0.28 < waited < 2.0, waited
        assert (await client.call(p.Ping())).pid == daemon.proc.pid  # type: ignore[union-attr]
