"""Requests answered later by callback, with no task (``Pending`` from an inline handler):
in flight like any other request, cancellable, drained at shutdown, answered exactly once.
In-process: a real Gateway on a real ipc:// ROUTER, driven by a DEALER."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import zmq

from convergiod import protocol as p
from convergiod.config import GatewayConfig
from convergiod.errors import OpError
from convergiod.gateway import Caller, Gateway, RequestContext
from convergiod.runtime import Pending
from convergiod.zmqtrio import TrioSocket, open_socket


class Rig:
    def __init__(self, gateway: Gateway, dealer: TrioSocket) -> None:
        self.gateway = gateway
        self.dealer = dealer
        self.pending: list[Pending] = []
        self.task_calls = 0

    async def send(self, rid: int, op: Any, deadline: float | None = None) -> None:
        await self.dealer.send(p.encode(p.Request(id=rid, op=op, deadline=deadline)))

    async def recv(self) -> p.ServerMessage:
        with trio.fail_after(5):
            return p.decode_server(await self.dealer.recv())

    async def nothing_more(self) -> None:
        with trio.move_on_after(0.2):
            extra = await self.dealer.recv()
            pytest.fail(f"unexpected frame {p.decode_server(extra)!r}")

    async def wait_pending(self, n: int) -> None:
        with trio.fail_after(5):
            while len(self.pending) < n:  # noqa: ASYNC110 (a list, not an event)
                await trio.sleep(0.001)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    ctx: zmq.Context[Any] = zmq.Context()
    endpoint = f"ipc://{tmp_path}/gw.sock"
    holder: list[Rig] = []

    def now(caller: Caller, rid: int, op: p.Status) -> Pending | None:
        pending = Pending()
        holder[0].pending.append(pending)
        return pending

    async def in_a_task(ctx_: RequestContext, op: p.Status) -> p.Pong:
        holder[0].task_calls += 1
        return p.Pong(version="t", protocol=p.PROTOCOL_VERSION, pid=1)

    try:
        async with (
            open_socket(ctx, zmq.ROUTER) as router,
            open_socket(ctx, zmq.DEALER) as dealer,
            trio.open_nursery() as nursery,
        ):
            router.zmq.bind(endpoint)
            dealer.zmq.connect(endpoint)
            gateway = Gateway(
                GatewayConfig(),
                router,
                {p.Status: in_a_task},
                inline={p.Status: now},
                endpoint=endpoint,
                events_endpoint="",
                pid=1,
                version="t",
            )
            holder.append(Rig(gateway, dealer))
            await nursery.start(gateway.serve)
            yield holder[0]
            nursery.cancel_scope.cancel()
    finally:
        ctx.term()


def pong() -> p.Pong:
    return p.Pong(version="v", protocol=p.PROTOCOL_VERSION, pid=7)


async def test_a_deferred_answer_goes_out_when_resolved(rig: Rig) -> None:
    await rig.send(1, p.Status())
    await rig.wait_pending(1)
    assert rig.gateway.in_flight == 1
    rig.pending[0].resolve(pong())
    reply = await rig.recv()
    assert isinstance(reply, p.Result) and reply.id == 1 and reply.body == pong()
    assert rig.gateway.in_flight == 0 and rig.task_calls == 0


async def test_a_failed_deferred_answer_is_a_failure_with_its_code(rig: Rig) -> None:
    await rig.send(2, p.Status())
    await rig.wait_pending(1)
    rig.pending[0].fail(OpError("unavailable", "disk full"))
    reply = await rig.recv()
    assert isinstance(reply, p.Failure) and reply.code == "unavailable"
    assert reply.message == "disk full"


async def test_cancel_answers_at_once_and_the_late_answer_is_dropped(rig: Rig) -> None:
    await rig.send(3, p.Status())
    await rig.wait_pending(1)
    await rig.dealer.send(p.encode(p.Cancel(id=3)))
    reply = await rig.recv()
    assert isinstance(reply, p.Failure) and reply.code == "cancelled" and reply.id == 3
    rig.pending[0].resolve(pong())  # committed after all: nobody is told twice
    await rig.nothing_more()
    assert rig.gateway.in_flight == 0


async def test_a_duplicate_id_while_deferred_is_refused(rig: Rig) -> None:
    await rig.send(4, p.Status())
    await rig.wait_pending(1)
    await rig.send(4, p.Status())
    reply = await rig.recv()
    assert isinstance(reply, p.Failure) and reply.code == "bad_request"
    assert "already in flight" in reply.message
    rig.pending[0].resolve(pong())
    reply = await rig.recv()
    assert isinstance(reply, p.Result) and reply.id == 4


async def test_drain_waits_for_deferred_answers_then_ends_them(rig: Rig) -> None:
    await rig.send(5, p.Status())
    await rig.send(6, p.Status())
    await rig.wait_pending(2)
    rig.pending[0].resolve(pong())
    assert isinstance(await rig.recv(), p.Result)
    rig.gateway.stop_accepting()
    await rig.gateway.drain(0.05)  # the second never resolves
    reply = await rig.recv()
    assert isinstance(reply, p.Failure) and reply.code == "unavailable" and reply.id == 6
    assert rig.gateway.in_flight == 0


async def test_requests_with_a_deadline_run_in_a_task(rig: Rig) -> None:
    await rig.send(7, p.Status(), deadline=5.0)
    reply = await rig.recv()
    assert isinstance(reply, p.Result) and rig.task_calls == 1 and not rig.pending


async def test_pending_map_and_late_callbacks() -> None:
    source = Pending()
    mapped = source.map(lambda v: v * 2)
    seen: list[Any] = []
    mapped.on_done(lambda o: seen.append(o.value))
    source.resolve(21)
    source.resolve(99)  # once only
    mapped.on_done(lambda o: seen.append(o.value))  # after: at once
    assert seen == [42, 42] and mapped.done
    broken = Pending().map(lambda v: v)
    failing = Pending()
    failing.map(lambda v: 1 / 0).on_done(lambda o: seen.append(type(o.error)))  # type: ignore[attr-defined]
    failing.resolve(1)
    assert seen[-1] is ZeroDivisionError and not broken.done


def test_a_raising_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pending = Pending()
    seen: list[int] = []

    def bad(_: Any) -> None:
        raise RuntimeError("callback bug")

    pending.on_done(bad)
    pending.on_done(lambda o: seen.append(o.value))
    pending.resolve(5)
    assert seen == [5]
    assert "a Pending callback raised" in caplog.text


async def test_an_answer_that_never_comes_ends_with_timeout(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from convergiod import gateway

    monkeypatch.setattr(gateway, "DEFERRED_TIMEOUT", 0.2)
    await rig.send(8, p.Status())
    await rig.wait_pending(1)
    reply = await rig.recv()  # within the sweeper's next wake-up
    assert isinstance(reply, p.Failure) and reply.code == "timeout" and reply.id == 8
    assert rig.gateway.in_flight == 0
    rig.pending[0].resolve(pong())  # too late: dropped
    await rig.nothing_more()
