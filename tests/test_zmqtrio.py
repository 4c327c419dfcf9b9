"""The ZeroMQ-on-Trio adapter: the known hang pitfalls, cancellation, closing, and load.

Every test that waits runs under ``trio.fail_after`` so a hang fails fast.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import zmq

from convergiod.zmqtrio import TrioSocket, open_socket

GUARD = 5.0  # seconds before a would-be hang fails the test


@asynccontextmanager
async def pair(
    ctx: zmq.Context[Any],
    endpoint: str,
    bind_type: int,
    connect_type: int,
    hwm: int | None = None,
) -> AsyncIterator[tuple[TrioSocket, TrioSocket]]:
    async with open_socket(ctx, bind_type) as a, open_socket(ctx, connect_type) as b:
        if hwm is not None:
            for s in (a, b):
                s.zmq.setsockopt(zmq.SNDHWM, hwm)
                s.zmq.setsockopt(zmq.RCVHWM, hwm)
        a.zmq.bind(endpoint)
        b.zmq.connect(endpoint)
        yield a, b


async def wait_until_readable(sock: TrioSocket) -> None:
    """Poll (without the adapter) until libzmq reports a queued message."""
    with trio.fail_after(GUARD):
        while not int(sock.zmq.get(zmq.EVENTS)) & zmq.POLLIN:  # noqa: ASYNC110 (libzmq state)
            await trio.sleep(0.001)


# --------------------------------------------------------------------------- the hang pitfalls


@pytest.mark.parametrize("after_a_miss", [False, True])
async def test_two_messages_queued_before_first_wait_are_both_received(
    ctx: zmq.Context[Any], ipc_dir: str, after_a_miss: bool
) -> None:
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.PULL, zmq.PUSH) as (pull, push):
        if after_a_miss:  # a receive that found nothing switches to reading EVENTS first
            with trio.move_on_after(0.01):
                await pull.recv()
        await push.send(b"one")
        await push.send(b"two")
        # Let both arrive, and consume the FD edge by reading EVENTS, as a naive
        # "wait on the FD, then recv" adapter would have done before waiting.
        await wait_until_readable(pull)
        time.sleep(0.02)  # noqa: ASYNC251 (on purpose: the pump must not run in between)
        pull.zmq.getsockopt(zmq.EVENTS)
        with trio.fail_after(GUARD):
            assert await pull.recv() == b"one"
            assert await pull.recv() == b"two"


async def test_two_messages_arriving_while_parked_are_both_received(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.PULL, zmq.PUSH) as (pull, push):
        got: list[bytes] = []

        async def receiver() -> None:
            got.append(await pull.recv())
            got.append(await pull.recv())

        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                await trio.sleep(0.01)  # the receiver is parked now
                push.zmq.send(b"one")
                push.zmq.send(b"two")
        assert got == [b"one", b"two"]


async def test_waiting_receiver_wakes_when_another_task_sends_on_the_same_socket(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    endpoint = f"ipc://{ipc_dir}/a"
    router = ctx.socket(zmq.ROUTER)  # a plain blocking peer, driven by hand below
    router.setsockopt(zmq.RCVTIMEO, int(GUARD * 1000))
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    try:
        async with open_socket(ctx, zmq.DEALER) as dealer:
            dealer.zmq.connect(endpoint)
            got: list[bytes] = []

            async def receiver() -> None:
                got.append(await dealer.recv())

            with trio.fail_after(GUARD):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(receiver)
                    await trio.sleep(0.01)  # the receiver is parked on the dealer
                    await dealer.send(b"ping")
                    # Without yielding to Trio (so the pump cannot see the FD fire): the
                    # reply arrives, then a send on the dealer processes libzmq's pending
                    # commands and so consumes the FD edge the pump was waiting for.
                    ident, _ = router.recv_multipart()
                    router.send_multipart([ident, b"pong"])
                    # Blocks the whole Trio run on purpose: reply delivered, libzmq's command
                    # throttle (about 1 ms) has passed, and the pump has not run.
                    time.sleep(0.02)  # noqa: ASYNC251
                    assert dealer.try_send_multipart([b"other"])
            assert got == [b"pong"]
            assert router.recv_multipart()[1] == b"other"
    finally:
        router.close(linger=0)


async def test_many_senders_and_a_receiver_on_one_dealer_never_hang(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    # A ROUTER echo; on the other side one DEALER shared by a receiver and 8 senders.
    n_senders, per_sender = 8, 300
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.ROUTER, zmq.DEALER, hwm=5) as (router, dealer):
        router.zmq.setsockopt(zmq.ROUTER_MANDATORY, 1)  # wait at the HWM instead of dropping

        async def echo() -> None:
            while True:
                await router.send_multipart(await router.recv_multipart())

        async def sender(k: int) -> None:
            for i in range(per_sender):
                await dealer.send_multipart([b"%d" % k, b"%d" % i])

        replies: list[list[bytes]] = []
        with trio.fail_after(GUARD * 2):
            async with trio.open_nursery() as outer:
                outer.start_soon(echo)
                async with trio.open_nursery() as nursery:
                    for k in range(n_senders):
                        nursery.start_soon(sender, k)
                    while len(replies) < n_senders * per_sender:
                        replies.append(await dealer.recv_multipart())
                outer.cancel_scope.cancel()
        assert sorted(replies) == sorted(
            [[b"%d" % k, b"%d" % i] for k in range(n_senders) for i in range(per_sender)]
        )


async def test_several_receivers_on_one_socket_get_every_message_exactly_once(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    n_receivers, n_messages = 6, 3000
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.PULL, zmq.PUSH, hwm=20) as (pull, push):
        received: list[list[int]] = [[] for _ in range(n_receivers)]

        async def receiver(k: int) -> None:
            while (msg := await pull.recv()) != b"stop":
                received[k].append(int(msg))

        with trio.fail_after(GUARD * 2):
            async with trio.open_nursery() as nursery:
                for k in range(n_receivers):
                    nursery.start_soon(receiver, k)
                await trio.sleep(0.01)  # all parked at once: they must not share the FD
                for i in range(n_messages):
                    await push.send(b"%d" % i)
                for _ in range(n_receivers):
                    await push.send(b"stop")
        everything = [i for part in received for i in part]
        assert sorted(everything) == list(range(n_messages))
        assert sum(1 for part in received if part) > 1  # the work was actually shared


async def test_cancelled_receiver_leaves_the_socket_usable(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.PULL, zmq.PUSH) as (pull, push):
        with trio.move_on_after(0.05) as scope:
            await pull.recv()
        assert scope.cancelled_caught
        # A receiver cancelled while others wait must not swallow their wakeup either.
        got: list[bytes] = []
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:

                async def doomed(*, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                    with trio.CancelScope() as doomed_scope:
                        task_status.started(doomed_scope)
                        await pull.recv()
                        raise AssertionError("no message was sent to the doomed receiver")

                async def survivor() -> None:
                    got.append(await pull.recv())

                doomed_scope = await nursery.start(doomed)
                await trio.sleep(0.01)  # parked first, so it would be woken first
                nursery.start_soon(survivor)
                await trio.sleep(0.01)
                doomed_scope.cancel()
                await push.send(b"after cancel")
        assert got == [b"after cancel"]


async def test_cancelled_receiver_does_not_lose_a_queued_message(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.PULL, zmq.PUSH) as (pull, push):
        await push.send(b"kept")
        await wait_until_readable(pull)
        with trio.CancelScope() as scope:
            scope.cancel()
            await pull.recv()  # already cancelled: raises before taking anything
        assert scope.cancelled_caught
        with trio.fail_after(GUARD):
            assert await pull.recv() == b"kept"


async def test_cancelled_multipart_send_sends_all_frames_or_none(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.ROUTER, zmq.DEALER, hwm=2) as (router, dealer):
        sent = 0
        # Fill every queue between the two sockets until a send has to wait, then cancel it.
        with trio.fail_after(GUARD):
            while True:
                with trio.move_on_after(0.1) as scope:
                    await dealer.send_multipart([b"a", b"%d" % sent, b"c"])
                if scope.cancelled_caught:
                    break
                sent += 1
            messages: list[list[bytes]] = []

            async def drain() -> None:
                while not messages or messages[-1][1] != b"last":
                    messages.append(await router.recv_multipart())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                await dealer.send_multipart([b"last", b"", b""])
        assert [m[1:] for m in messages[:-1]] == [[b"a", b"%d" % i, b"c"] for i in range(sent)]
        assert messages[-1][1:] == [b"last", b"", b""]
        assert router.try_recv_multipart() is None


async def test_close_wakes_waiting_receivers_and_senders_with_closed_resource_error(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.PULL, zmq.PUSH, hwm=1) as (pull, push):
        push.zmq.setsockopt(zmq.SNDHWM, 1)
        outcomes: list[str] = []

        async def waiter(op: str) -> None:
            try:
                if op == "recv":
                    await pull.recv()
                else:
                    while True:  # until the queues are full and it has to wait
                        await push.send(b"x" * 100)
            except trio.ClosedResourceError:
                outcomes.append(op)

        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter, "recv")
                nursery.start_soon(waiter, "recv")
                await trio.sleep(0.05)
                pull.close()
                nursery.start_soon(waiter, "send")
                await trio.sleep(0.1)
                push.close()
        assert sorted(outcomes) == ["recv", "recv", "send"]
        pull.close()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await pull.recv()
        with pytest.raises(trio.ClosedResourceError):
            await push.send(b"x")
        with pytest.raises(trio.ClosedResourceError):
            pull.try_recv_multipart()


async def test_leaving_open_socket_closes_the_socket_and_stops_its_pump(
    ctx: zmq.Context[Any],
) -> None:
    with trio.fail_after(GUARD):
        async with open_socket(ctx, zmq.PAIR) as s:
            raw = s.zmq
        assert raw.closed
        assert s.closed


# --------------------------------------------------------------------------- ordering and load


async def test_concurrent_multipart_senders_do_not_interleave_frames(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    n_senders, per_sender, n_frames = 10, 200, 5
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.ROUTER, zmq.DEALER, hwm=3) as (router, dealer):

        async def sender(k: int) -> None:
            tag = b"%d" % k
            for i in range(per_sender):
                await dealer.send_multipart([tag, b"%d" % i] + [tag] * (n_frames - 2))

        seen: dict[bytes, list[int]] = {b"%d" % k: [] for k in range(n_senders)}
        with trio.fail_after(GUARD * 2):
            async with trio.open_nursery() as nursery:
                for k in range(n_senders):
                    nursery.start_soon(sender, k)
                for _ in range(n_senders * per_sender):
                    _, tag, seq, *rest = await router.recv_multipart()
                    assert rest == [tag] * (n_frames - 2)
                    seen[tag].append(int(seq))
        assert all(seqs == list(range(per_sender)) for seqs in seen.values())


async def test_router_replies_from_many_tasks_reach_their_requesters(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    endpoint = f"ipc://{ipc_dir}/a"
    n_clients, per_client = 5, 100
    async with open_socket(ctx, zmq.ROUTER) as router:
        router.zmq.bind(endpoint)

        async def serve() -> None:
            async with trio.open_nursery() as handlers:
                while True:
                    ident, *body = await router.recv_multipart()
                    handlers.start_soon(router.send_multipart, [ident, b"re:", *body])

        async def client(k: int) -> None:
            async with open_socket(ctx, zmq.DEALER) as dealer:
                dealer.zmq.connect(endpoint)
                for i in range(per_client):
                    req = [b"%d" % k, b"%d" % i]
                    await dealer.send_multipart(req)
                    assert await dealer.recv_multipart() == [b"re:", *req]

        with trio.fail_after(GUARD * 2):
            async with trio.open_nursery() as outer:
                outer.start_soon(serve)
                async with trio.open_nursery() as clients:
                    for k in range(n_clients):
                        clients.start_soon(client, k)
                outer.cancel_scope.cancel()


async def test_router_send_to_a_full_peer_waits_without_spinning_or_blocking_others(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    # With ROUTER_MANDATORY, EVENTS says POLLOUT while *some* peer has room, so a send to a
    # full peer is refused although the socket looks writable.
    endpoint = f"ipc://{ipc_dir}/a"
    async with (
        open_socket(ctx, zmq.ROUTER) as router,
        open_socket(ctx, zmq.DEALER) as slow,
        open_socket(ctx, zmq.DEALER) as fast,
    ):
        router.zmq.setsockopt(zmq.ROUTER_MANDATORY, 1)
        router.zmq.setsockopt(zmq.SNDHWM, 2)
        router.zmq.bind(endpoint)
        idents: dict[bytes, bytes] = {}
        for name, dealer in ((b"slow", slow), (b"fast", fast)):
            dealer.zmq.setsockopt(zmq.RCVHWM, 2)
            dealer.zmq.connect(endpoint)
            await dealer.send(name)
        with trio.fail_after(GUARD):
            for _ in range(2):
                ident, name = await router.recv_multipart()
                idents[name] = ident
            n_slow, n_fast = 200, 300
            slow_done = trio.Event()

            big = b"x" * 65536  # enough to fill the kernel's socket buffers too

            async def feed_slow() -> None:
                for i in range(n_slow):
                    await router.send_multipart([idents[b"slow"], b"%d" % i, big])
                slow_done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed_slow)
                await trio.sleep(0.05)
                assert not slow_done.is_set()  # stuck on the full peer
                # Other peers are still served meanwhile.
                async with trio.open_nursery() as inner:

                    async def feed_fast() -> None:
                        for i in range(n_fast):
                            await router.send_multipart([idents[b"fast"], b"%d" % i])

                    inner.start_soon(feed_fast)
                    for i in range(n_fast):
                        assert await fast.recv() == b"%d" % i
                # The stuck sender does not busy-loop.
                cpu = time.process_time()
                await trio.sleep(0.3)
                assert time.process_time() - cpu < 0.1
                assert not slow_done.is_set()
                for i in range(n_slow):
                    assert await slow.recv_multipart() == [b"%d" % i, big]
            assert slow_done.is_set()


async def test_stress_100k_messages_with_small_high_water_mark_finishes(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    n = 100_000
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.PULL, zmq.PUSH, hwm=10) as (pull, push):

        async def produce() -> None:
            payload = b"x" * 32
            for _ in range(n):
                await push.send(payload)
            await push.send(b"end")

        count = 0
        start = time.perf_counter()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                while await pull.recv() != b"end":
                    count += 1
        elapsed = time.perf_counter() - start
        assert count == n
        print(f"100k messages at HWM 10 in {elapsed:.2f} s")


async def test_stress_dealer_router_multipart_with_small_high_water_mark(
    ctx: zmq.Context[Any],
) -> None:
    n = 20_000
    async with pair(ctx, "inproc://stress", zmq.ROUTER, zmq.DEALER, hwm=10) as (router, dealer):

        async def produce() -> None:
            for i in range(n):
                await dealer.send_multipart([b"%d" % i, b"body"])

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                for i in range(n):
                    _, seq, body = await router.recv_multipart()
                    assert (int(seq), body) == (i, b"body")


async def test_try_recv_multipart_drains_a_batch_without_waiting(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.PULL, zmq.PUSH) as (pull, push):
        assert pull.try_recv_multipart() is None
        for i in range(50):
            assert push.try_send_multipart([b"%d" % i, b"x"])
        got: list[list[bytes]] = []
        with trio.fail_after(GUARD):
            got.append(await pull.recv_multipart())
            while len(got) < 50:
                msg = pull.try_recv_multipart()
                if msg is None:
                    got.append(await pull.recv_multipart())
                else:
                    got.append(msg)
        assert got == [[b"%d" % i, b"x"] for i in range(50)]


async def test_bad_frames_are_rejected_before_anything_is_sent(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    async with pair(ctx, f"ipc://{ipc_dir}/a", zmq.PULL, zmq.PUSH) as (pull, push):
        with pytest.raises(TypeError):
            await push.send_multipart([b"ok", "not bytes"])  # type: ignore[list-item]
        with pytest.raises(ValueError):
            await push.send_multipart([])
        await push.send_multipart([b"whole", memoryview(b"view"), zmq.Frame(b"frame")])
        with trio.fail_after(GUARD):
            assert await pull.recv_multipart() == [b"whole", b"view", b"frame"]
            await push.send_multipart([b"a", b"b"])
            with pytest.raises(ValueError):
                await pull.recv()  # multipart: consumed whole, reported
            await push.send(b"next")
            assert await pull.recv() == b"next"
