"""The front door: a ZeroMQ ``ROUTER`` for requests and a ``PUB`` for events.

Each request runs in its own task under the gateway's nursery with its own cancel scope, so a
``Cancel`` or the request's deadline reaches exactly that request. The gateway never queues
without bound: past ``max_in_flight`` (or the per-client share) it answers ``overloaded`` with
a retry hint. Malformed frames are answered with a ``Failure`` and never reach a handler.

The caller's tenant and role come from the connection, never from the message: the
owner-only ``ipc://`` socket is the admin of tenant ``local``. A gateway built with
``identify`` (the CURVE ``tcp://`` door, ``convergiod.security.door``) gets each message's
ZAP ``User-Id`` as an extra first frame and asks ``identify`` for the caller: a message from a
key no longer listed is dropped without a reply. Its ``limiter`` adds per-tenant rate and
concurrency limits (``overloaded`` with ``retry_after``).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import outcome
import trio
import zmq

from convergiod import logs, protocol
from convergiod.config import GatewayConfig
from convergiod.errors import classify
from convergiod.protocol import (
    ApprovalAnswer,
    Cancel,
    ErrorCode,
    EventBody,
    Failure,
    Ping,
    Pong,
    Request,
    Result,
    ResultBody,
)
from convergiod.runtime.doorbell import Doorbell
from convergiod.runtime.pending import Pending
from convergiod.zmqtrio import TrioSocket

if TYPE_CHECKING:
    from convergiod.security.limits import TenantLimiter

log = logging.getLogger("convergiod.gateway")
_debug = functools.partial(log.isEnabledFor, logging.DEBUG)


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: str
    role: str
    client: bytes
    #: The CURVE public key (Z85) of a client on the TCP door; empty on ipc.
    key: str = ""


LOCAL_ADMIN_TENANT = "local"
#: A streaming handler yields to the scheduler at least once per this many events.
EMIT_YIELD_EVERY = 64
#: A batch frame (``Request.batch``) holds at most this many messages and this many bytes
#: of them (a larger message goes alone).
BATCH_MAX_MESSAGES = 64
BATCH_MAX_BYTES = 1 << 20
#: Tries (a millisecond apart) before a batch the socket keeps refusing is dropped.
_BATCH_RETRIES = 1000


class RequestContext:
    """What an op handler gets: who is calling, and a way to stream events back."""

    __slots__ = ("_entry", "_gateway", "_seq", "caller", "id", "ident")

    def __init__(
        self, gateway: Gateway, ident: bytes, request_id: int, caller: Caller, entry: _InFlight
    ) -> None:
        self._gateway = gateway
        self._entry = entry
        self.ident = ident
        self.id = request_id
        self.caller = caller
        self._seq = 0

    async def emit(self, body: EventBody) -> None:
        """Send one event. It goes out without a trip through the scheduler when the socket
        takes it at once (a ROUTER always does: it drops for a client whose queue is full);
        every ``EMIT_YIELD_EVERY`` events the task yields anyway, so a handler that emits in
        a tight loop cannot starve the others."""
        if self._entry.silent:  # the client was revoked: not one more frame
            return
        self._seq += 1
        msg = protocol.Event(id=self.id, seq=self._seq, body=body)
        if self._entry.batch:
            self._gateway.queue(self.ident, msg)
            if self._seq % EMIT_YIELD_EVERY:
                await trio.lowlevel.checkpoint_if_cancelled()
            else:
                await trio.lowlevel.checkpoint()
            return
        if self._seq % EMIT_YIELD_EVERY and self._gateway.send_now(self.ident, msg):
            await trio.lowlevel.checkpoint_if_cancelled()
            return
        await self._gateway.send(self.ident, msg)

    async def request_approval(
        self,
        *,
        tool: str,
        summary: str,
        args: dict[str, Any] | None = None,
        agent: str | None = None,
        timeout: float = 60.0,
    ) -> protocol.ApprovalDecision:
        """Ask the client to approve a tool call; ``deny`` when no answer comes in time.

        Several approvals of one request may be pending at once (parallel tool calls); each
        has its own number, the ``approval`` field of the event and of the answer.
        """
        entry = self._entry
        entry.approval_seq += 1
        number = entry.approval_seq
        slot = _ApprovalSlot()
        entry.approvals[number] = slot
        try:
            await self.emit(
                protocol.ApprovalRequest(
                    approval=number,
                    tool=tool,
                    summary=summary,
                    args=args or {},
                    agent=agent,
                    timeout=timeout,
                )
            )
            with trio.move_on_after(timeout):
                await slot.answered.wait()
            return slot.decision
        finally:
            del entry.approvals[number]


class _ApprovalSlot:
    __slots__ = ("answered", "decision")

    def __init__(self) -> None:
        self.answered = trio.Event()
        self.decision: protocol.ApprovalDecision = "deny"


Handler = Callable[[RequestContext, Any], Awaitable[ResultBody]]
#: ``(user_id, routing_id) -> Caller``, or ``None`` to drop the message unanswered.
Identify = Callable[[bytes, bytes], Caller | None]
#: An op that may be answered at once in the receive loop: ``(caller, request id, op)`` to
#: the result body, a ``Pending`` body (answered when it resolves, with no task), or
#: ``None`` to run the op's ``Handler`` in a task as usual. Requests with a deadline always
#: get a task.
InlineHandler = Callable[[Caller, int, Any], "ResultBody | Pending | None"]
#: Receive-loop time per trip that inline answers may use; past it, ops go to tasks.
INLINE_TRIP_BUDGET = 0.002
#: A deferred answer (``Pending``) that has not come after this long ends the request with
#: ``timeout`` (e.g. a disk stalled under a group commit), as an actor ask would.
DEFERRED_TIMEOUT = 120.0


@dataclass
class _InFlight:
    scope: trio.CancelScope
    #: Why the scope was cancelled; only the deadline cancels without setting it.
    reason: ErrorCode = "timeout"
    approvals: dict[int, _ApprovalSlot] = field(default_factory=dict)
    approval_seq: int = 0
    caller: Caller | None = None
    #: Set when the caller's key was revoked: the request ends without a reply.
    silent: bool = False
    #: The answer of a request answered later by callback (no task; see ``_defer``).
    pending: Pending | None = None
    #: The client takes batches (``Request.batch``): frames go through ``Gateway.queue``.
    batch: bool = False


@dataclass
class GatewayCounters:
    requests: int = 0
    failures: int = 0
    per_client: dict[bytes, int] = field(default_factory=dict)


class Gateway:
    """Serves requests arriving on ``router`` with ``handlers`` keyed by op type."""

    def __init__(
        self,
        config: GatewayConfig,
        router: TrioSocket,
        handlers: dict[type, Handler],
        *,
        endpoint: str,
        events_endpoint: str,
        pid: int,
        version: str,
        identify: Identify | None = None,
        limiter: TenantLimiter | None = None,
        inline: dict[type, InlineHandler] | None = None,
    ) -> None:
        self.config = config
        self.identify = identify
        self.limiter = limiter
        self.router = router
        self.handlers = handlers
        self.inline = inline or {}
        self._trip_started = 0.0
        #: Deferred requests in arrival order, with when they expire (see _expire_deferred).
        self._deferred: deque[tuple[float, tuple[bytes, int], _InFlight]] = deque()
        self._deferred_added = trio.Event()
        self.endpoint = endpoint
        self.events_endpoint = events_endpoint
        self.counters = GatewayCounters()
        self._in_flight: dict[tuple[bytes, int], _InFlight] = {}
        self._accepting = True
        self._idle = trio.Event()
        self._idle.set()
        self._nursery: trio.Nursery | None = None
        self._pong = Pong(version=version, protocol=protocol.PROTOCOL_VERSION, pid=pid)
        #: Frames for clients that take batches, by client, until the flusher sends them.
        self._outbox: dict[bytes, list[bytes]] = {}
        #: Wakes the flusher (``_flush_loop``) when frames are queued.
        self._flusher = Doorbell()

    # ------------------------------------------------------------------ public

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive and dispatch until cancelled.

        Messages are dispatched as the socket gets them (``TrioSocket.set_receiver``), in
        batches: by the socket's pump, or by a task whose send found messages waiting. A
        request's task starts one trip through the scheduler after its message arrived,
        and under load one trip serves many requests.
        """
        dispatch = self._dispatch if self.identify is None else self._dispatch_identified
        # Dispatching runs in whichever task found the messages: always in this context,
        # not in that task's (its request id, for one).
        context = contextvars.copy_context()

        def receive(msgs: list[list[bytes]]) -> None:
            self._trip_started = time.perf_counter()
            for frames in msgs:
                dispatch(frames)

        def receive_here(msgs: list[list[bytes]]) -> None:
            context.run(receive, msgs)

        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._expire_deferred)
            nursery.start_soon(self._flush_loop)
            self.router.set_receiver(receive_here)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.router.set_receiver(None)  # no dispatching into a closed nursery

    def stop_accepting(self) -> None:
        """From now on new requests get ``unavailable``; in-flight ones continue."""
        self._accepting = False

    async def drain(self, timeout: float) -> None:
        """Wait for in-flight requests to finish; after ``timeout`` cancel the rest, which end
        with ``Failure(unavailable)``."""
        with trio.move_on_after(timeout):
            await self._idle.wait()
        if self._in_flight:
            log.warning("cancelling %d requests still running at shutdown", len(self._in_flight))
            for key, entry in list(self._in_flight.items()):
                entry.reason = "unavailable"
                self._interrupt(key, entry)
            with trio.move_on_after(1.0):
                await self._idle.wait()
        self._send_queued(drop=True)  # the last answers may still be queued for their batch

    def drop_client(self, key: str) -> int:
        """A revoked client: end its requests in flight without another frame. Returns how
        many there were."""
        dropped = 0
        for request, entry in list(self._in_flight.items()):
            if entry.caller is not None and entry.caller.key == key:
                entry.silent = True
                entry.reason = "unauthorized"
                self._interrupt(request, entry)
                self._outbox.pop(request[0], None)  # not one more frame, queued ones either
                dropped += 1
        return dropped

    async def send(self, ident: bytes, msg: protocol.ServerMessage) -> None:
        try:
            await self.router.send_multipart((ident, protocol.encode(msg)))
        except trio.ClosedResourceError:
            log.debug("reply to a closed socket dropped")

    def send_now(self, ident: bytes, msg: protocol.ServerMessage) -> bool:
        """Send without yielding if the socket takes it now; ``False`` if it did not (or the
        socket is closed, in which case the frame is dropped)."""
        try:
            return self.router.try_send_multipart((ident, protocol.encode(msg)))
        except trio.ClosedResourceError:
            return True

    def queue(self, ident: bytes, msg: protocol.ServerMessage) -> None:
        """Send ``msg`` (of a request that takes batches) with the other messages for this
        client made in this pass of the scheduler: the flusher, woken here, runs after the
        tasks that are running now and sends each client's messages as one batch frame. A
        client with this one request in flight and nothing queued has nothing to share a
        frame with: its message goes at once (no trip through the flusher's task). Never
        yields; the order of a client's messages is kept."""
        frame = protocol.encode(msg)
        frames = self._outbox.get(ident)
        if frames is None:
            if self.counters.per_client.get(ident, 0) <= 1:
                try:
                    if self.router.try_send_multipart((ident, frame)):
                        return
                except trio.ClosedResourceError:
                    return
            self._outbox[ident] = [frame]
        else:
            frames.append(frame)
        self._flusher.ring()

    async def _flush_loop(self) -> None:
        """Send what ``queue`` gathered, one frame per client (split past BATCH_MAX_*)."""
        refused = 0
        try:
            while True:
                if not self._outbox:
                    await self._flusher.wait()
                if self._send_queued(drop=refused >= _BATCH_RETRIES):
                    refused = 0
                    continue
                # A message the socket would not take (a connection being torn down) stays
                # in the outbox, ahead of what is queued after it; tried again shortly.
                refused += 1
                await trio.sleep(0.001)
        finally:
            self._send_queued(drop=True)  # cancelled (the gateway stops): what is left goes

    def _send_queued(self, *, drop: bool) -> bool:
        """Send the outbox, without waiting: True once it is empty. A client's frames leave
        the outbox only as the socket takes them, so nothing queued later for that client
        can overtake them (``queue`` sends at once only to a client with nothing queued).
        ``drop``: what the socket does not take is dropped (logged) instead of kept."""
        outbox = self._outbox
        for ident in list(outbox):
            frames = outbox[ident]
            taken = 0
            for count, frame in _batches(frames):  # made one by one, as the socket takes them
                try:
                    sent = self.router.try_send_multipart((ident, frame))
                except trio.ClosedResourceError:
                    sent = drop = True
                if not sent:
                    break
                taken += count
            del frames[:taken]
            if frames and drop:
                log.warning("%d messages for a client that takes none dropped", len(frames))
                frames.clear()
            if not frames:
                del outbox[ident]
        return not outbox

    def _reply(self, ident: bytes, msg: protocol.ServerMessage) -> None:
        """Send from the receive loop without yielding; if the socket will not take the
        message now, a task sends it when it can."""
        try:
            if self.router.try_send_multipart((ident, protocol.encode(msg))):
                return
        except trio.ClosedResourceError:
            return
        assert self._nursery is not None
        self._nursery.start_soon(self.send, ident, msg)

    # ------------------------------------------------------------------ dispatch

    def _fail(
        self,
        ident: bytes,
        rid: int,
        code: ErrorCode,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        self.counters.failures += 1
        self._reply(ident, Failure(id=rid, code=code, message=message, retry_after=retry_after))

    def _dispatch_identified(self, frames: list[bytes]) -> None:
        assert self.identify is not None
        if len(frames) < 2:
            return
        caller = self.identify(frames[0], frames[1])
        if caller is None:
            return
        self._dispatch(frames[1:], caller)

    def _dispatch(self, frames: list[bytes], caller: Caller | None = None) -> None:
        ident = frames[0]
        if len(frames) != 2:
            self._fail(
                ident,
                0,
                "bad_request",
                f"expected exactly one frame per message, got {len(frames) - 1}",
            )
            return
        try:
            msg = protocol.decode_client(frames[1], self.config.max_frame_bytes)
        except protocol.ProtocolError as exc:
            self._fail(ident, exc.request_id, exc.code, exc.message)
            return
        if type(msg) is Cancel:
            entry = self._in_flight.get((ident, msg.id))
            if entry is not None:
                entry.reason = "cancelled"
                self._interrupt((ident, msg.id), entry)
            return
        if type(msg) is ApprovalAnswer:
            entry = self._in_flight.get((ident, msg.id))
            slot = entry.approvals.get(msg.approval) if entry is not None else None
            if slot is not None and not slot.answered.is_set():
                slot.decision = msg.decision
                slot.answered.set()
            return
        assert isinstance(msg, Request)
        self.counters.requests += 1
        if self.limiter is not None and caller is not None:
            wait = self.limiter.admit(caller.tenant)
            if wait is not None:
                self._fail(
                    ident,
                    msg.id,
                    "overloaded",
                    f"tenant {caller.tenant!r} is over its request rate",
                    retry_after=max(0.001, round(wait, 3)),  # never a hint of 0
                )
                return
        op = msg.op
        if type(op) is Ping and op.count == 0:
            # The hot path: answered in the receive loop, no task needed.
            pong = (
                self._pong
                if not op.echo
                else Pong(
                    version=self._pong.version,
                    protocol=self._pong.protocol,
                    pid=self._pong.pid,
                    echo=op.echo,
                )
            )
            self._reply(ident, Result(id=msg.id, body=pong))
            return
        inline = self.inline.get(type(op))
        if inline is not None and self._inline(inline, ident, msg, caller):
            return
        self._start(ident, msg, caller)

    def _inline(
        self, inline: InlineHandler, ident: bytes, req: Request, caller: Caller | None
    ) -> bool:
        """Answer ``req`` here if its inline handler can, within this trip's budget. The
        checks ``_start`` makes that still matter for an answer given at once come first."""
        key = (ident, req.id)
        if (
            not self._accepting
            or self.limiter is not None  # tenant limits are kept by _start and _run
            or req.deadline is not None  # deadlines are kept by a request's task
            or key in self._in_flight
            or len(self._in_flight) >= self.config.max_in_flight
            or self.counters.per_client.get(ident, 0) >= self.config.max_in_flight_per_client
            or time.perf_counter() - self._trip_started > INLINE_TRIP_BUDGET
        ):
            return False
        if caller is None:
            caller = Caller(tenant=LOCAL_ADMIN_TENANT, role="admin", client=ident)
        try:
            body = inline(caller, req.id, req.op)
        except Exception as exc:
            code, message = classify(exc)
            name = type(req.op).__name__
            if code == "internal":
                log.exception("op %s (request %d) failed", name, req.id)
            else:
                log.info("op %s (request %d) failed: %s: %s", name, req.id, code, message)
            self._fail(ident, req.id, code, message)
            return True
        if body is None:
            return False
        if isinstance(body, Pending):
            self._defer(key, body, caller, type(req.op).__name__)
        else:
            self._reply(ident, Result(id=req.id, body=body))
        return True

    def _defer(self, key: tuple[bytes, int], pending: Pending, caller: Caller, name: str) -> None:
        """A request whose answer comes later by callback (a write acknowledged after its
        group commit): in flight like any other (counted, drained, cancellable), but with
        no task waiting for it."""
        entry = _InFlight(scope=trio.CancelScope(), caller=caller, pending=pending)
        self._admit(key, entry)
        rid = key[1]
        self._deferred.append((trio.current_time() + DEFERRED_TIMEOUT, key, entry))
        self._deferred_added.set()

        def done(result: outcome.Outcome[Any]) -> None:
            reply: protocol.ServerMessage
            if isinstance(result, outcome.Value):
                reply = Result(id=rid, body=result.value)
            else:
                assert isinstance(result, outcome.Error)
                code, message = classify(result.error)
                if code == "internal":
                    log.error("op %s (request %d) failed", name, rid, exc_info=result.error)
                else:
                    log.info("op %s (request %d) failed: %s: %s", name, rid, code, message)
                reply = Failure(id=rid, code=code, message=message)
            self._settle(key, entry, reply)

        pending.on_done(done)

    async def _expire_deferred(self) -> None:
        """End deferred requests still unanswered after ``DEFERRED_TIMEOUT`` with
        ``timeout``. Wakes once a second while any are queued, dropping the answered ones
        from the front (all share one timeout, so the queue is in order of expiry)."""
        queue = self._deferred
        while True:
            if not queue:
                self._deferred_added = trio.Event()
                await self._deferred_added.wait()
            now = trio.current_time()
            while queue:
                expires, key, entry = queue[0]
                if self._in_flight.get(key) is not entry:
                    queue.popleft()  # answered (or cancelled) already
                elif expires <= now:
                    queue.popleft()
                    entry.reason = "timeout"
                    message = f"no answer within {DEFERRED_TIMEOUT:g} s"
                    self._settle(key, entry, Failure(id=key[1], code="timeout", message=message))
                else:
                    break
            if len(queue) > 4 * len(self._in_flight) + 1024:
                # Answered ones stuck behind an old unanswered one: keep only the living.
                flying = self._in_flight
                self._deferred = queue = deque(q for q in queue if flying.get(q[1]) is q[2])
            if queue:
                await trio.sleep(min(1.0, max(0.0, queue[0][0] - now)))

    def _interrupt(self, key: tuple[bytes, int], entry: _InFlight) -> None:
        """End a request early for ``entry.reason``: a task's by cancelling its scope (it
        answers), a deferred one by answering now (its later answer is dropped)."""
        if entry.pending is None:
            entry.scope.cancel()
        else:
            self._settle(key, entry, _interrupted(key[1], entry.reason, None))

    def _settle(
        self, key: tuple[bytes, int], entry: _InFlight, reply: protocol.ServerMessage
    ) -> None:
        """The end of a deferred request (once: a second end finds it gone)."""
        if self._in_flight.get(key) is not entry:
            return
        self._release(key)
        if isinstance(reply, Failure):
            self.counters.failures += 1
        if not entry.silent:
            self._reply(key[0], reply)

    def _admit(self, key: tuple[bytes, int], entry: _InFlight) -> None:
        """Count a request in flight (``_release`` undoes it)."""
        self._in_flight[key] = entry
        per_client = self.counters.per_client
        per_client[key[0]] = per_client.get(key[0], 0) + 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def _release(self, key: tuple[bytes, int]) -> None:
        del self._in_flight[key]
        per_client = self.counters.per_client
        left = per_client[key[0]] - 1
        if left:
            per_client[key[0]] = left
        else:
            del per_client[key[0]]
        if not self._in_flight:
            self._idle.set()

    def _start(self, ident: bytes, req: Request, caller: Caller | None) -> None:
        if not self._accepting:
            self._fail(ident, req.id, "unavailable", "the daemon is shutting down")
            return
        key = (ident, req.id)
        if key in self._in_flight:
            self._fail(ident, req.id, "bad_request", f"request id {req.id} is already in flight")
            return
        per_client = self.counters.per_client.get(ident, 0)
        if len(self._in_flight) >= self.config.max_in_flight:
            self._fail(
                ident,
                req.id,
                "overloaded",
                f"{len(self._in_flight)} requests in flight (limit {self.config.max_in_flight})",
                retry_after=0.05,
            )
            return
        if per_client >= self.config.max_in_flight_per_client:
            self._fail(
                ident,
                req.id,
                "overloaded",
                f"this client has {per_client} requests in flight "
                f"(limit {self.config.max_in_flight_per_client})",
                retry_after=0.05,
            )
            return
        handler = self.handlers.get(type(req.op))
        if handler is None:
            self._fail(ident, req.id, "bad_request", f"unsupported op {type(req.op).__name__}")
            return
        if caller is None:
            caller = Caller(tenant=LOCAL_ADMIN_TENANT, role="admin", client=ident)
        if self.limiter is not None:
            limit = self.limiter.enter(caller.tenant)
            if limit is not None:
                self._fail(
                    ident,
                    req.id,
                    "overloaded",
                    f"tenant {caller.tenant!r} has {limit} requests in flight (its limit)",
                    retry_after=0.1,
                )
                return
        scope = trio.CancelScope()
        if req.deadline is not None:
            scope.deadline = trio.current_time() + req.deadline
        entry = _InFlight(scope=scope, caller=caller, batch=req.batch)
        self._admit(key, entry)
        assert self._nursery is not None
        self._nursery.start_soon(self._run, ident, req, handler, caller, entry)

    async def _run(
        self, ident: bytes, req: Request, handler: Handler, caller: Caller, entry: _InFlight
    ) -> None:
        token = logs.request_id.set(req.id)
        key = (ident, req.id)
        reply: protocol.ServerMessage | None = None
        started = time.perf_counter()
        try:
            with entry.scope:
                ctx = RequestContext(self, ident, req.id, caller, entry)
                try:
                    body = await handler(ctx, req.op)
                    reply = Result(id=req.id, body=body)
                except Exception as exc:  # every failure becomes a Failure frame
                    code, message = classify(exc)
                    if code == "internal":
                        log.exception("op %s failed", type(req.op).__name__)
                    else:
                        log.info("op %s failed: %s: %s", type(req.op).__name__, code, message)
                    reply = Failure(id=req.id, code=code, message=message)
            if entry.scope.cancelled_caught or reply is None:
                reply = _interrupted(req.id, entry.reason, req.deadline)
            if isinstance(reply, Failure):
                self.counters.failures += 1
            # No await: the reply goes out now (a ROUTER takes it or drops it), after the
            # request's events in their batch, or a task sends it: it cannot be cancelled
            # and costs no scheduler trip.
            if entry.batch and not entry.silent:
                self.queue(ident, reply)
            elif not entry.silent:
                self._reply(ident, reply)
            if _debug():
                log.debug(
                    "op %s done in %.3f ms",
                    type(req.op).__name__,
                    (time.perf_counter() - started) * 1e3,
                )
        finally:
            logs.request_id.reset(token)
            self._release(key)
            if self.limiter is not None:
                self.limiter.leave(caller.tenant)


def _batches(frames: list[bytes]) -> Iterator[tuple[int, bytes]]:
    """``frames`` (encoded messages, in order) as the frames that carry them, made as they
    are asked for: pairs of how many messages and the frame. A batch frame
    (``protocol.encode_batch``) holds at most BATCH_MAX_MESSAGES messages and
    BATCH_MAX_BYTES bytes; a message that would take it past either starts the next one,
    and a message alone goes as itself."""
    if len(frames) == 1:
        yield 1, frames[0]
        return
    if len(frames) <= BATCH_MAX_MESSAGES and sum(map(len, frames)) <= BATCH_MAX_BYTES:
        yield len(frames), protocol.encode_batch(frames)
        return
    part: list[bytes] = []
    size = 0
    for frame in frames:
        if part and (len(part) == BATCH_MAX_MESSAGES or size + len(frame) > BATCH_MAX_BYTES):
            yield _carrier(part)
            part, size = [], 0
        part.append(frame)
        size += len(frame)
    yield _carrier(part)


def _carrier(part: list[bytes]) -> tuple[int, bytes]:
    return (1, part[0]) if len(part) == 1 else (len(part), protocol.encode_batch(part))


def _interrupted(request_id: int, reason: ErrorCode, deadline: float | None) -> Failure:
    message = {
        "timeout": f"deadline of {deadline} s exceeded",
        "cancelled": "cancelled by the client",
        "unavailable": "the daemon is shutting down",
    }.get(reason, reason)
    return Failure(id=request_id, code=reason, message=message)


def ipc_router_options(sock: zmq.Socket[Any], max_frame_bytes: int) -> None:
    """Socket options for the front door: drop (never block on) slow or vanished clients, and
    let libzmq refuse absurd frames before they are buffered whole."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max(max_frame_bytes * 16, 64 << 20))
    # A batch frame (``Request.batch``) counts as one message here: up to BATCH_MAX_MESSAGES.
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
