"""The Trio client: many concurrent requests over one ``DEALER`` socket.

Frames are demultiplexed by request id as the socket gets them (``TrioSocket.set_receiver``:
the socket's pump hands each frame straight to the task waiting for its request, with no
reader task in between), so any number of tasks can ``call`` and ``stream`` at once (the
benchmark keeps 64 in flight)::

    async with open_client() as client:
        pong = await client.call(Ping())
        async with client.stream(Ping(count=3, interval=0.1)) as events:
            async for event in events:
                print(event)
        print(events.result)
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import zmq

from convergio_client.errors import ClientTimeout, RemoteError
from convergio_client.sync import as_connection, check_running, configure_curve, configure_dealer
from convergiod import protocol
from convergiod.paths import Paths, resolve
from convergiod.security.connection import ConnectionFile
from convergiod.zmqtrio import TrioSocket, open_socket

log = logging.getLogger("convergio_client")


class _Pending:
    """The frames of one request not yet taken, and the task waiting for them (at most one:
    a request's frames are read by the task that sent it)."""

    __slots__ = ("frames", "last", "waiter")

    def __init__(self) -> None:
        self.frames: deque[protocol.ServerMessage] = deque()
        self.waiter: trio.lowlevel.Task | None = None
        #: When the last frame came (Trio's clock): ``call``'s timeout counts from it.
        self.last = 0.0

    def push(self, msg: protocol.ServerMessage, now: float) -> None:
        self.frames.append(msg)
        self.last = now
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            trio.lowlevel.reschedule(waiter)

    async def wait(self) -> None:
        if self.waiter is not None:
            raise RuntimeError("another task is already reading this request's answer")
        self.waiter = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class AsyncStream:
    """Async iterator over one request's events; ``result`` is set when it ends."""

    def __init__(self, client: AsyncClient, request_id: int, timeout: float | None) -> None:
        self._client = client
        self.id = request_id
        self._timeout = timeout
        self.result: protocol.ResultBody | None = None
        self.done = False

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> protocol.EventBody:
        if self.done:
            raise StopAsyncIteration
        msg = await self._client._next(self.id, self._timeout)
        if isinstance(msg, protocol.Event):
            return msg.body
        self.done = True
        self._client._pending.pop(self.id, None)
        if isinstance(msg, protocol.Failure):
            raise RemoteError(msg.code, msg.message, msg.retry_after)
        self.result = msg.body
        raise StopAsyncIteration

    async def answer(self, approval: int, decision: protocol.ApprovalDecision) -> None:
        """Answer an ``ApprovalRequest`` event of this request."""
        await self._client._send(
            protocol.ApprovalAnswer(id=self.id, approval=approval, decision=decision)
        )

    async def cancel(self) -> None:
        if not self.done:
            self.done = True
            self._client._pending.pop(self.id, None)
            await self._client._send(protocol.Cancel(id=self.id))


class AsyncClient:
    def __init__(self, sock: TrioSocket, timeout: float | None) -> None:
        self._sock = sock
        self.timeout = timeout
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(int(time.time() * 1000) % 1_000_000 * 1000 + 1)

    async def call(
        self, op: protocol.Op, *, timeout: float | None = None, deadline: float | None = None
    ) -> Any:
        """Send ``op``; return its ``Result`` body (events are discarded)."""
        # ``stream`` without its context manager and iterator: this is the hot path. The
        # timeout (the longest wait for a frame) is one cancel scope for the whole call,
        # not one per wait: when its deadline passes, a frame that came meanwhile opens a
        # new window counted from that frame.
        rid = next(self._ids)
        self._pending[rid] = pending = _Pending()
        limit = self.timeout if timeout is None else timeout
        frames = pending.frames
        done = False
        try:
            await self._send(protocol.Request(id=rid, op=op, deadline=deadline, batch=True))
            start = trio.current_time()
            while True:
                with trio.CancelScope() as scope:
                    if limit is not None:
                        scope.deadline = max(start, pending.last) + limit
                    while True:
                        if frames:
                            await trio.lowlevel.checkpoint_if_cancelled()
                        else:
                            while not frames:
                                await pending.wait()
                        msg = frames.popleft()
                        if type(msg) is protocol.Event:
                            continue
                        done = True
                        if isinstance(msg, protocol.Failure):
                            raise RemoteError(msg.code, msg.message, msg.retry_after)
                        assert isinstance(msg, protocol.Result)
                        return msg.body
                assert limit is not None and scope.cancelled_caught
                if frames or pending.last + limit > trio.current_time():
                    continue  # a frame came meanwhile: wait on from it
                raise ClientTimeout(f"no answer from the daemon within {limit:g} s")
        finally:
            if self._pending.get(rid) is pending:
                del self._pending[rid]
            if not done:
                with trio.CancelScope(shield=True):
                    await self._send(protocol.Cancel(id=rid))

    def stream(
        self, op: protocol.Op, *, timeout: float | None = None, deadline: float | None = None
    ) -> _OpenStream:
        """``async with client.stream(op) as events``: send ``op``, iterate its events;
        ``events.result`` is set at the end. Leaving the block early cancels the request."""
        return _OpenStream(self, op, self.timeout if timeout is None else timeout, deadline)

    async def _send(self, msg: protocol.ClientMessage) -> None:
        # Without a trip through the scheduler when the socket takes it at once; the answer
        # is awaited right after anyway (the checkpoint a send would pass).
        frame = protocol.encode(msg)
        if not self._sock.try_send_multipart((frame,)):
            await self._sock.send(frame)

    async def _next(self, rid: int, timeout: float | None) -> protocol.ServerMessage:
        pending = self._pending.get(rid)
        if pending is None:
            raise RuntimeError(f"request {rid} is not in flight")
        if not pending.frames:
            if timeout is None:
                while not pending.frames:
                    await pending.wait()
            else:
                with trio.move_on_after(timeout) as scope:
                    while not pending.frames:
                        await pending.wait()
                if scope.cancelled_caught:
                    raise ClientTimeout(f"no answer from the daemon within {timeout:g} s")
        else:
            await trio.lowlevel.checkpoint_if_cancelled()
        return pending.frames.popleft()

    def _receive(self, msgs: list[list[bytes]]) -> None:
        """The messages from the daemon, as the socket gets them (``set_receiver``). Requests
        are sent with ``batch``: a frame may be a batch of messages (decoded in one pass)."""
        dispatch = self._dispatch
        for frames in msgs:
            for frame in frames:
                try:
                    batch = protocol.decode_server_frame(frame)
                except Exception as exc:
                    batch = self._salvage(frame, exc)
                for msg in batch:
                    dispatch(msg)

    @staticmethod
    def _salvage(frame: bytes, error: Exception) -> list[protocol.ServerMessage]:
        """The messages of a frame that did not decode whole: those of a batch that do (a
        newer daemon's message this client does not know costs only that message)."""
        if protocol.is_batch(frame):
            try:
                good, bad = protocol.decode_batch_loosely(frame)
            except Exception:
                log.error("unreadable batch frame from the daemon dropped: %r", error)
                return []
            if bad:
                log.error("%d undecodable messages of a batch from the daemon dropped", bad)
            return good
        log.error("undecodable frame from the daemon dropped: %r", error)
        return []

    def _dispatch(self, msg: protocol.ServerMessage) -> None:
        pending = self._pending.get(msg.id)
        if pending is None:
            if isinstance(msg, protocol.Failure) and msg.id == 0:
                log.warning("daemon refused a frame: %s: %s", msg.code, msg.message)
            return
        pending.push(msg, trio.current_time())


class _OpenStream:
    """The context manager of ``AsyncClient.stream`` (a plain class, not a generator: it
    is on every streamed request's path)."""

    __slots__ = ("_client", "_deadline", "_op", "_stream", "_timeout")

    def __init__(
        self,
        client: AsyncClient,
        op: protocol.Op,
        timeout: float | None,
        deadline: float | None,
    ) -> None:
        self._client = client
        self._op = op
        self._timeout = timeout
        self._deadline = deadline
        self._stream: AsyncStream | None = None

    async def __aenter__(self) -> AsyncStream:
        client = self._client
        rid = next(client._ids)
        client._pending[rid] = _Pending()
        stream = self._stream = AsyncStream(client, rid, self._timeout)
        try:
            await client._send(
                protocol.Request(id=rid, op=self._op, deadline=self._deadline, batch=True)
            )
        except BaseException:
            await self._cancel(stream)
            raise
        return stream

    async def __aexit__(self, *exc_info: object) -> None:
        stream = self._stream
        if stream is not None:
            await self._cancel(stream)

    @staticmethod
    async def _cancel(stream: AsyncStream) -> None:
        if not stream.done:
            with trio.CancelScope(shield=True):
                await stream.cancel()


@asynccontextmanager
async def open_client(
    endpoint: str | None = None,
    *,
    paths: Paths | None = None,
    timeout: float | None = 10.0,
    check: bool = True,
    connection: ConnectionFile | str | os.PathLike[str] | None = None,
) -> AsyncIterator[AsyncClient]:
    conn = as_connection(connection) if connection is not None else None
    if conn is not None:
        endpoint = endpoint or conn.endpoint
    paths = paths or resolve()
    if check and endpoint is None:
        check_running(paths)
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        async with open_socket(ctx, zmq.DEALER) as sock:
            configure_dealer(sock.zmq)
            if conn is not None:
                configure_curve(sock.zmq, conn)
            sock.zmq.connect(endpoint or paths.api_endpoint)
            client = AsyncClient(sock, timeout)
            sock.set_receiver(client._receive)
            yield client
    finally:
        ctx.term()
