"""ZeroMQ on Trio: the one module that owns pyzmq sockets under Trio.

pyzmq has no Trio integration, and the obvious one ("wait on ``zmq.FD`` then recv") hangs:
``zmq.FD`` is edge-triggered and only says "``EVENTS`` may have changed". Any libzmq call on
the socket (a send, a recv, a failed non-blocking attempt, even reading ``EVENTS``) processes
the socket's pending commands and so can consume the edge that a task parked on the FD was
waiting for. And two Trio tasks may not wait on one FD (``BusyResourceError``).

The design here:

* One **pump** task per socket is the only thing that ever waits on the FD. Each time the FD
  fires it reads ``EVENTS`` (which also drains the FD); if ``POLLIN`` is set and a receiver is
  parked, it receives the message itself and hands it to that receiver (which resumes with
  it: one scheduler trip fewer than waking it to try); if ``POLLOUT`` is set it wakes one
  parked sender.
* An operation (``send_multipart``/``recv_multipart``...) first tries the libzmq call with
  ``NOBLOCK``. If it succeeds, nobody else is involved (no pump round trip); the task still
  passes a schedule point so a hot loop cannot starve other tasks. (One refinement: once a
  receive on a socket has found nothing, the next receive reads ``EVENTS`` before trying, as
  long as receives keep finding nothing. Reading ``EVENTS`` processes libzmq's pending commands
  just like a failed attempt, so it sees the same thing, without the cost of ``zmq.Again``.)
* If the attempt fails with ``EAGAIN`` the task reads ``EVENTS``; if the socket is ready after
  all it retries, otherwise it parks on a wait queue (a plain Trio primitive, never the FD).
  A parked task is woken to retry; it never trusts a wakeup, it re-tries the operation.
* After every libzmq call made while some task is parked on the socket, ``EVENTS`` is read
  again and parked tasks are woken if their direction is ready: that call may have consumed
  the edge the pump would have seen. (While nobody is parked the re-check is skipped: it
  cannot wake anyone, and every task reads ``EVENTS`` itself right before it parks, so no
  readiness can be missed. This saves a syscall per message on the hot path.)
* Waking is one task at a time and chains: a woken task that completes its operation re-reads
  ``EVENTS`` and wakes the next waiter if the socket is still ready; a woken task that finds
  nothing re-parks after its own ``EVENTS`` check. No thundering herd, no lost wakeup.
* A multipart send is made without any ``await`` between frames, so concurrent senders never
  interleave frames. libzmq accepts or refuses a message at its first frame (high-water marks
  count whole messages); a later frame can only be refused when the peer's pipe is being torn
  down, and then libzmq rolls back the earlier frames, so the whole message is retried.
* A ROUTER with ``ROUTER_MANDATORY`` reports ``POLLOUT`` when *some* peer has room, so a send
  to a full peer is refused although the socket looks writable. Such a sender parks apart
  from the others (woken by the pump and by successful operations, and retrying on a backoff
  of 1 to 50 ms), so it neither busy-loops nor blocks sends to other peers.
* A socket whose messages are dispatched by their content (the Trio client's replies, the
  gateway's requests) can have a **receiver** instead (``set_receiver``): whoever finds
  messages queued (the pump after an FD edge, or a task right after its own libzmq call,
  which may have consumed that edge) hands them to the receiver at once, in batches of at
  most ``_DELIVER_BATCH``. A message then reaches the task it is for one scheduler trip
  after it arrived (the pump's), not two (a reader task's, then that task's). A batch left
  over by a task other than the pump wakes the pump (its FD wait is cancellable) to go on.
* ``close()`` marks the socket closed, wakes every waiter (they raise
  ``trio.ClosedResourceError``), calls ``trio.lowlevel.notify_closing(fd)`` (which wakes the
  pump with ``ClosedResourceError``) and only then closes the zmq socket.

Cancellation: an operation is cancellable until it has done its work. A receive that is
cancelled consumed nothing; a send that is cancelled sent nothing (all frames or none).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, cast

import outcome
import trio
import zmq

__all__ = ["Frames", "TrioSocket", "open_socket"]

_NOBLOCK: Final = int(zmq.NOBLOCK)
_SNDMORE: Final = int(zmq.SNDMORE)
_POLLIN: Final = int(zmq.POLLIN)
_POLLOUT: Final = int(zmq.POLLOUT)
# An enum member, not an int: pyzmq converts the option to ``SocketOption`` on every get,
# and that is cheapest for a value that already is one.
_EVENTS: Final = zmq.EVENTS
# After this many consecutive "EAGAIN although EVENTS says POLLIN" retries, pass a schedule
# point before trying again (never expected; it keeps a libzmq surprise from spinning).
_MAX_SPINS: Final = 3
# A send refused although EVENTS says POLLOUT (a ROUTER_MANDATORY peer whose own queue is
# full: POLLOUT means "some peer has room") waits for the next change, but also retries after
# this long, doubling up to the cap, in case the change's FD edge was consumed by a failed call.
_BLOCKED_RETRY_MIN: Final = 0.001
_BLOCKED_RETRY_MAX: Final = 0.05
# Messages given to a receiver (``set_receiver``) per trip before the pump yields.
_DELIVER_BATCH: Final = 256

_Frame = bytes | bytearray | memoryview | zmq.Frame
Frames = Sequence[_Frame]
_FRAME_TYPES: Final = (bytes, bytearray, memoryview, zmq.Frame)

_Again = zmq.Again
_checkpoint = trio.lowlevel.checkpoint
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_current_task = trio.lowlevel.current_task
_reschedule = trio.lowlevel.reschedule
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_ABORT_SUCCEEDED: Final = trio.lowlevel.Abort.SUCCEEDED


def _closed_error() -> trio.ClosedResourceError:
    return trio.ClosedResourceError("the ZeroMQ socket was closed")


class _WaitQueue:
    """FIFO of parked tasks; cheaper than ``trio.lowlevel.ParkingLot`` on the hot path.

    A woken task is rescheduled with ``None``: it always re-checks the socket itself.
    """

    __slots__ = ("tasks",)

    def __init__(self) -> None:
        self.tasks: dict[trio.lowlevel.Task, None] = {}

    async def park(self) -> Any:
        """Park until woken: ``None`` (re-check the socket), or what ``hand_one`` gave."""
        task = _current_task()
        tasks = self.tasks
        tasks[task] = None

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            del tasks[task]
            return _ABORT_SUCCEEDED

        return await _wait_task_rescheduled(abort)

    def wake_one(self) -> None:
        tasks = self.tasks
        task = next(iter(tasks))
        del tasks[task]
        _reschedule(task)

    def hand_one(self, value: Any) -> None:
        """Wake the longest-waiting task with ``value`` (it returns from ``park``)."""
        tasks = self.tasks
        task = next(iter(tasks))
        del tasks[task]
        _reschedule(task, outcome.Value(value))

    def wake_all(self) -> None:
        tasks = self.tasks
        self.tasks = {}
        for task in tasks:
            _reschedule(task)


class TrioSocket:
    """A pyzmq socket driven by Trio. Make one with :func:`open_socket`.

    ``zmq`` is the raw socket, for options, ``bind`` and ``connect`` (which do not block).
    Do not send or receive on it directly while the adapter is in use.
    """

    __slots__ = (
        "_backlog",
        "_closed",
        "_delivering",
        "_fd",
        "_get",
        "_linger",
        "_pump_wait",
        "_receiver",
        "_recv",
        "_recv_cold",
        "_recv_waiters",
        "_send",
        "_send_blocked",
        "_send_waiters",
        "zmq",
    )

    def __init__(self, sock: zmq.Socket[Any], *, linger: int = 0) -> None:
        self.zmq: zmq.Socket[Any] = sock
        self._fd = cast(int, sock.getsockopt(zmq.FD))
        self._linger = linger
        self._closed = False
        self._recv_cold = False
        self._recv_waiters = _WaitQueue()
        self._send_waiters = _WaitQueue()
        self._send_blocked = _WaitQueue()
        self._receiver: Callable[[list[list[bytes]]], None] | None = None
        self._delivering = False
        self._backlog = False
        self._pump_wait: trio.CancelScope | None = None
        # Bound methods cached once: no attribute lookups or allocations per operation.
        # (EVENTS, the only option read through ``_get``, is an int option.)
        self._get = cast(Callable[[int], int], sock.getsockopt)
        self._recv = cast(Callable[[int, bool], zmq.Frame], sock.recv)
        # The sugar ``Socket.send`` adds a Python-level wrapper for DRAFT options we never use.
        self._send: Callable[..., Any] = zmq.backend.Socket.send.__get__(sock)

    # ------------------------------------------------------------------ readiness

    @property
    def closed(self) -> bool:
        return self._closed

    def _poll_events(self, *, progress: bool = True) -> int:
        """Read ``EVENTS`` and wake one receiver / one sender whose direction is ready.

        ``progress``: the call follows an FD edge or a successful operation, so senders that
        were refused despite ``POLLOUT`` are worth retrying too. (Not after a failed attempt:
        two such senders would otherwise wake each other forever.)
        With a receiver (``set_receiver``), the messages queued go to it, at most
        ``_DELIVER_BATCH``; the pump is woken to go on with the rest.
        """
        events = self._get(_EVENTS)
        if events & _POLLIN and self._receiver is not None:
            if not self._delivering:
                events = self._deliver()
        elif events & _POLLIN and self._recv_waiters.tasks:
            # Receive for the parked task right here and hand it the message: it resumes
            # with it, one trip through the scheduler sooner than if it had to try itself.
            try:
                msg = self._recv_now()
            except zmq.ZMQError:  # EAGAIN, or anything else: the receiver tries itself
                self._recv_waiters.wake_one()
            else:
                self._recv_cold = False
                self._recv_waiters.hand_one(msg)
                events = self._get(_EVENTS)
        if events & _POLLOUT:
            if self._send_waiters.tasks:
                self._send_waiters.wake_one()
            if progress and self._send_blocked.tasks:
                self._send_blocked.wake_all()
        return events

    def _after_call(self) -> None:
        """Re-check ``EVENTS`` after a successful libzmq call, if anyone could need waking."""
        if (
            self._receiver is not None
            or self._recv_waiters.tasks
            or self._send_waiters.tasks
            or self._send_blocked.tasks
        ):
            self._poll_events()

    def set_receiver(self, receiver: Callable[[list[list[bytes]]], None] | None) -> None:
        """Hand every message to ``receiver`` as soon as the socket has it, instead of to
        ``recv`` callers (nobody may receive on this socket after this).

        For a socket whose messages are dispatched (a client's replies to many requests, a
        server's requests): the pump, or a task whose libzmq call on the socket found
        messages waiting, calls ``receiver`` with the messages queued (a list of messages,
        each a list of frames; at most ``_DELIVER_BATCH`` per call), so a message reaches
        the task it is for with one trip through the scheduler (the pump's), not two (a
        reader task's, then that task's). ``receiver`` must not block or raise; it runs in
        whichever task found the messages. It may send on this socket. ``None``: stop
        (messages then wait in the socket).
        """
        if self._recv_waiters.tasks:
            raise RuntimeError("tasks are already receiving on this socket")
        self._receiver = receiver
        if receiver is not None and not self._closed:
            self._poll_events()

    def _deliver(self) -> int:
        """Give the queued messages to the receiver (``EVENTS`` showed ``POLLIN``), at most
        ``_DELIVER_BATCH``; return ``EVENTS`` as read after the last. A message arriving
        meanwhile is given too: the ``EVENTS`` reads (and the receiver's own sends) may have
        consumed the FD edge that would have reported it. Messages left over (or a
        surprise: ``POLLIN`` with nothing to receive) are the pump's, after a schedule
        point: it is woken if it waits on the FD, which may never fire for them."""
        receiver = self._receiver
        assert receiver is not None
        get = self._get
        self._delivering = True
        try:
            left = _DELIVER_BATCH
            while True:
                msgs: list[list[bytes]] = []
                while left:
                    try:
                        msgs.append(self._recv_now())
                    except _Again:
                        break
                    left -= 1
                    if not get(_EVENTS) & _POLLIN:
                        break
                if msgs:
                    receiver(msgs)
                events = get(_EVENTS)
                if not events & _POLLIN:
                    return events
                if not left or not msgs:
                    self._backlog = True
                    waiting = self._pump_wait
                    if waiting is not None:
                        waiting.cancel()
                    return events & ~_POLLIN
        finally:
            self._delivering = False

    async def _pump(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        fd = self._fd
        wait_readable = trio.lowlevel.wait_readable
        task_status.started()
        while not self._closed:
            # Drains the FD too: libzmq's signaler is read while processing commands.
            self._poll_events()
            if self._backlog:
                # Messages left for the receiver, and perhaps no FD edge to report them.
                self._backlog = False
                await _checkpoint()
                continue
            try:
                # Cancelled by a ``_deliver`` elsewhere that left messages over.
                with trio.CancelScope() as self._pump_wait:
                    await wait_readable(fd)
                self._pump_wait = None
            except trio.ClosedResourceError:
                return

    def _check_open(self) -> None:
        if self._closed:
            raise _closed_error()

    # ------------------------------------------------------------------ receiving

    def _recv_now(self) -> list[bytes]:
        """One whole message with NOBLOCK. Raises ``zmq.Again`` if none is queued."""
        # Receiving a Frame and reading its ``more`` (filled in by pyzmq in C) is cheaper than
        # a bytes recv plus a getsockopt(RCVMORE) per frame.
        recv = self._recv
        frame = recv(_NOBLOCK, False)
        if not frame.more:
            return [frame.bytes]
        # libzmq delivers messages atomically: once the first frame is here, all are.
        parts = [frame.bytes]
        while True:
            frame = recv(_NOBLOCK, False)
            parts.append(frame.bytes)
            if not frame.more:
                return parts

    def try_recv_multipart(self) -> list[bytes] | None:
        """Receive a whole message if one is queued, else return ``None``. Never yields.

        For batching in hot loops: call ``recv_multipart`` once, then drain with this.
        """
        self._check_open()
        if self._receiver is not None:
            raise RuntimeError("this socket's messages go to its receiver")
        if self._recv_cold and not self._poll_events(progress=False) & _POLLIN:
            return None  # see recv_multipart
        try:
            msg = self._recv_now()
        except _Again:
            self._recv_cold = True
            self._poll_events(progress=False)
            return None
        self._recv_cold = False
        self._after_call()
        return msg

    async def recv_multipart(self) -> list[bytes]:
        """Receive one whole message (a list of frames)."""
        await _checkpoint_if_cancelled()
        if self._closed:
            raise _closed_error()
        if self._receiver is not None:
            raise RuntimeError("this socket's messages go to its receiver")
        # If the previous receive on this socket found nothing queued (request/response
        # traffic), this one most likely will not either: ask EVENTS first. Reading it processes
        # libzmq's pending commands exactly as a failed NOBLOCK recv does, without the cost of
        # raising zmq.Again (about 10% of a round trip).
        if self._recv_cold and not self._poll_events(progress=False) & _POLLIN:
            return await self._recv_wait(must_poll=False)
        try:
            msg = self._recv_now()
        except _Again:
            self._recv_cold = True
            return await self._recv_wait(must_poll=True)
        self._recv_cold = False
        if (
            self._receiver is not None
            or self._recv_waiters.tasks
            or self._send_waiters.tasks
            or self._send_blocked.tasks
        ):
            self._poll_events()
        # A schedule point even on success, shielded: the message is off the socket now.
        await _cancel_shielded_checkpoint()
        return msg

    async def _recv_wait(self, *, must_poll: bool) -> list[bytes]:
        """The slow path of ``recv_multipart``, after a NOBLOCK attempt found nothing (then
        ``must_poll``) or after EVENTS was read and showed no POLLIN."""
        yielded = False
        spins = 0
        while True:
            if must_poll and self._poll_events(progress=False) & _POLLIN:
                # EVENTS says a message is there after all (it has just processed libzmq's
                # pending commands): retry at once, but never spin without yielding.
                spins += 1
                if spins >= _MAX_SPINS:
                    spins = 0
                    await _checkpoint()
                    yielded = True
            else:
                handed = await self._recv_waiters.park()
                if handed is not None:  # received for us (see _poll_events)
                    self._after_call()
                    return cast(list[bytes], handed)
                yielded = True
            must_poll = True
            if self._closed:
                raise _closed_error()
            try:
                msg = self._recv_now()
            except _Again:
                continue
            self._after_call()
            if not yielded:
                await _cancel_shielded_checkpoint()
            return msg

    async def recv(self) -> bytes:
        """Receive a single-frame message.

        A multipart message is consumed whole and raises ``ValueError`` (use
        ``recv_multipart`` on sockets that carry multipart messages).
        """
        msg = await self.recv_multipart()
        if len(msg) != 1:
            raise ValueError(f"expected a single-frame message, got {len(msg)} frames")
        return msg[0]

    # ------------------------------------------------------------------ sending

    def _send_now(self, frames: Frames, copy: bool) -> None:
        """Send a whole message with NOBLOCK, or nothing. Raises ``zmq.Again`` if refused."""
        send = self._send
        last = len(frames) - 1
        if last == 0:
            send(frames[0], _NOBLOCK, copy)
            return
        send(frames[0], _NOBLOCK | _SNDMORE, copy)
        # Accepted: the rest cannot be refused for lack of room (HWMs count whole messages).
        # Only a pipe being torn down refuses a later frame; libzmq then rolls back the
        # frames already written and reports EAGAIN, so the caller retries the whole message.
        for i in range(1, last):
            send(frames[i], _NOBLOCK | _SNDMORE, copy)
        send(frames[last], _NOBLOCK, copy)

    @staticmethod
    def _validate(frames: Frames) -> None:
        # Checked up front: a bad frame found after the first went out would leave a partial
        # multipart message on the socket.
        if not frames:
            raise ValueError("a message needs at least one frame")
        for frame in frames:
            if not isinstance(frame, _FRAME_TYPES):
                raise TypeError(f"a frame must be bytes-like or zmq.Frame, not {type(frame)!r}")

    def try_send_multipart(self, frames: Frames, *, copy: bool = True) -> bool:
        """Send a whole message if the socket takes it now; ``False`` if not. Never yields."""
        self._validate(frames)
        self._check_open()
        try:
            self._send_now(frames, copy)
        except _Again:
            self._poll_events(progress=False)
            return False
        self._after_call()
        return True

    async def send_multipart(self, frames: Frames, *, copy: bool = True) -> None:
        """Send one whole message. Concurrent senders never interleave frames."""
        self._validate(frames)
        await _checkpoint_if_cancelled()
        if self._closed:
            raise _closed_error()
        try:
            self._send_now(frames, copy)
        except _Again:
            return await self._send_wait(frames, copy)
        if (
            self._receiver is not None
            or self._recv_waiters.tasks
            or self._send_waiters.tasks
            or self._send_blocked.tasks
        ):
            self._poll_events()
        # A schedule point even on success, shielded: the message has gone.
        await _cancel_shielded_checkpoint()

    async def send(self, data: bytes) -> None:
        """Send a single-frame message."""
        if not isinstance(data, _FRAME_TYPES):
            raise TypeError(f"a frame must be bytes-like or zmq.Frame, not {type(data)!r}")
        await _checkpoint_if_cancelled()
        if self._closed:
            raise _closed_error()
        try:
            self._send(data, _NOBLOCK, True)
        except _Again:
            return await self._send_wait((data,), True)
        if (
            self._receiver is not None
            or self._recv_waiters.tasks
            or self._send_waiters.tasks
            or self._send_blocked.tasks
        ):
            self._poll_events()
        await _cancel_shielded_checkpoint()

    async def _send_wait(self, frames: Frames, copy: bool) -> None:
        """The slow path of a send, after a NOBLOCK attempt was refused."""
        yielded = False
        retried = False
        backoff = _BLOCKED_RETRY_MIN
        while True:
            if not self._poll_events(progress=False) & _POLLOUT:
                await self._send_waiters.park()
                yielded = True
            elif not retried:
                # Common: a non-blocking send does not process the commands that report the
                # peer's progress; reading EVENTS just did, so retry at once.
                retried = True
            else:
                # Refused although EVENTS says POLLOUT: this message's peer is full (only a
                # ROUTER_MANDATORY socket does that). Wait for the next change, or a while.
                retried = False
                with trio.move_on_after(backoff):
                    await self._send_blocked.park()
                backoff = min(backoff * 2, _BLOCKED_RETRY_MAX)
                yielded = True
            if self._closed:
                raise _closed_error()
            try:
                self._send_now(frames, copy)
            except _Again:
                continue
            self._after_call()
            if not yielded:
                await _cancel_shielded_checkpoint()
            return

    # ------------------------------------------------------------------ closing

    def close(self) -> None:
        """Close the socket; every waiter raises ``trio.ClosedResourceError``. Idempotent.

        Safe to call from any task of the Trio run that owns the socket.
        """
        if self._closed:
            return
        self._closed = True
        self._recv_waiters.wake_all()
        self._send_waiters.wake_all()
        self._send_blocked.wake_all()
        # Unregister the FD from Trio (waking the pump) before libzmq closes it.
        try:
            trio.lowlevel.notify_closing(self._fd)
        except RuntimeError:  # called outside the Trio run: nothing is registered then
            pass
        self.zmq.close(linger=self._linger)


@asynccontextmanager
async def open_socket(
    ctx: zmq.Context[Any], socket_type: int, *, linger: int = 0
) -> AsyncIterator[TrioSocket]:
    """Create a socket of ``socket_type``, run its pump, and close it on exit.

    ``linger`` (milliseconds, ``-1`` = forever) applies when the socket is closed.
    """
    sock: zmq.Socket[Any] = ctx.socket(socket_type)
    try:
        tsock = TrioSocket(sock, linger=linger)
    except BaseException:
        sock.close(linger=0)
        raise
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(tsock._pump)
            try:
                yield tsock
            finally:
                tsock.close()
    finally:
        if not sock.closed:
            sock.close(linger=0)
