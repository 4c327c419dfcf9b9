"""``TrioSocket.set_receiver``: messages handed to a callback as the socket gets them (the
Trio client and the gateway use it), including when another task's send consumed the FD
edge the pump was waiting for."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
import zmq

from convergiod.zmqtrio import open_socket

GUARD = 5.0


async def test_every_message_reaches_the_receiver_in_order(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    got: list[bytes] = []
    batches: list[int] = []
    arrived = trio.Event()

    def receive(msgs: list[list[bytes]]) -> None:
        batches.append(len(msgs))
        got.extend(m[0] for m in msgs)
        if len(got) >= 2000:
            arrived.set()

    async with open_socket(ctx, zmq.PULL) as pull, open_socket(ctx, zmq.PUSH) as push:
        pull.zmq.bind(f"ipc://{ipc_dir}/a")
        push.zmq.connect(f"ipc://{ipc_dir}/a")
        pull.set_receiver(receive)
        with trio.fail_after(GUARD):
            for i in range(2000):
                await push.send(b"%d" % i)
            await arrived.wait()
        with pytest.raises(RuntimeError):
            await pull.recv()
    assert got == [b"%d" % i for i in range(2000)]
    assert max(batches) <= 256


async def test_a_reply_is_delivered_when_a_send_consumed_the_fd_edge(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    endpoint = f"ipc://{ipc_dir}/a"
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVTIMEO, int(GUARD * 1000))
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    try:
        async with open_socket(ctx, zmq.DEALER) as dealer:
            dealer.zmq.connect(endpoint)
            got: list[bytes] = []
            dealer.set_receiver(lambda msgs: got.extend(m[0] for m in msgs))
            await dealer.send(b"ping")
            ident, _ = router.recv_multipart()
            router.send_multipart([ident, b"pong"])
            # No Trio checkpoint: the reply is queued, the command throttle has passed, and
            # this send processes libzmq's commands (the FD edge is gone): the send itself
            # must hand the reply over.
            time.sleep(0.02)  # noqa: ASYNC251
            assert dealer.try_send_multipart([b"other"])
            assert got == [b"pong"]
            dealer.set_receiver(None)
            router.send_multipart([ident, b"later"])
            with trio.fail_after(GUARD):
                assert await dealer.recv() == b"later"
    finally:
        router.close(linger=0)


async def test_messages_left_over_by_a_delivery_outside_the_pump_still_arrive(
    ctx: zmq.Context[Any], ipc_dir: str
) -> None:
    endpoint = f"ipc://{ipc_dir}/a"
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    try:
        async with open_socket(ctx, zmq.PULL) as pull:
            pull.zmq.bind(endpoint)
            push.connect(endpoint)
            for i in range(1000):
                push.send(b"%d" % i)
            # All queued, and the FD edge consumed without the pump running.
            with trio.fail_after(GUARD):
                while not int(pull.zmq.get(zmq.EVENTS)) & zmq.POLLIN:  # noqa: ASYNC110
                    await trio.sleep(0.001)
            time.sleep(0.05)  # noqa: ASYNC251 (the rest arrives; the pump must not run)
            pull.zmq.getsockopt(zmq.EVENTS)
            got: list[bytes] = []
            done = trio.Event()

            def receive(msgs: list[list[bytes]]) -> None:
                got.extend(m[0] for m in msgs)
                if len(got) == 1000:
                    done.set()

            pull.set_receiver(receive)  # gives a first batch here, outside the pump
            assert 0 < len(got) <= 256
            with trio.fail_after(GUARD):
                await done.wait()
            assert got == [b"%d" % i for i in range(1000)]
    finally:
        push.close(linger=0)
