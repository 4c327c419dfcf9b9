"""The blocking client, on plain pyzmq (a ``DEALER`` socket)."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import zmq

from convergio_client.errors import ClientTimeout, DaemonNotRunning, RemoteError
from convergiod import protocol
from convergiod.lock import running_pid
from convergiod.paths import Paths, resolve
from convergiod.security.connection import ConnectionFile, check_usable, load_connection


def configure_dealer(sock: zmq.Socket[Any]) -> None:
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 50)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)


def configure_curve(sock: zmq.Socket[Any], conn: ConnectionFile) -> None:
    """CURVE client keys from a connection file (``convergio pair``): the daemon's key is
    pinned, so a server without it cannot complete the handshake."""
    sock.setsockopt(zmq.CURVE_SERVERKEY, conn.server_key.encode("ascii"))
    sock.setsockopt(zmq.CURVE_PUBLICKEY, conn.public_key.encode("ascii"))
    sock.setsockopt(zmq.CURVE_SECRETKEY, conn.secret_key.encode("ascii"))


def as_connection(connection: ConnectionFile | str | os.PathLike[str]) -> ConnectionFile:
    conn = connection if isinstance(connection, ConnectionFile) else load_connection(connection)
    return check_usable(conn)


def check_running(paths: Paths) -> int:
    """The daemon's pid, or ``DaemonNotRunning`` with a one-line explanation."""
    pid = running_pid(paths.lock_file, paths.pid_file)
    if pid is None:
        where = f" for CONVERGIO_HOME={paths.home}" if paths.home else ""
        raise DaemonNotRunning(
            f"the convergio daemon is not running{where}; start it with `convergio daemon start`"
        )
    return pid


class Stream:
    """Iterates over the events of one request; ``result`` holds the terminal body after the
    iteration ends. Closing it early cancels the request on the daemon."""

    def __init__(self, client: Client, request_id: int, timeout: float | None) -> None:
        self._client = client
        self.id = request_id
        self._timeout = timeout
        self.result: protocol.ResultBody | None = None
        self._done = False

    def __iter__(self) -> Iterator[protocol.EventBody]:
        try:
            while True:
                msg = self._client._receive(self.id, self._timeout)
                if isinstance(msg, protocol.Event):
                    yield msg.body
                    continue
                self._done = True
                if isinstance(msg, protocol.Failure):
                    raise RemoteError(msg.code, msg.message, msg.retry_after)
                self.result = msg.body
                return
        finally:
            if not self._done:
                self.cancel()

    def answer(self, approval: int, decision: protocol.ApprovalDecision) -> None:
        """Answer an ``ApprovalRequest`` event of this request."""
        self._client._send(
            protocol.ApprovalAnswer(id=self.id, approval=approval, decision=decision)
        )

    def cancel(self) -> None:
        if not self._done:
            self._done = True
            with contextlib.suppress(ClientTimeout):
                self._client._send(protocol.Cancel(id=self.id))


class Client:
    """One connection to the daemon. Not thread-safe: use one per thread.

    ``timeout`` bounds every wait for the next frame; a request that gets no frame in that
    time raises ``ClientTimeout`` (and is cancelled on the daemon). ZeroMQ reconnects on its
    own after a daemon restart; a request lost in the restart times out, the next one works.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        paths: Paths | None = None,
        timeout: float | None = 10.0,
        check: bool = True,
        connection: ConnectionFile | str | os.PathLike[str] | None = None,
    ) -> None:
        """``connection``: a connection file (or its path) for the CURVE ``tcp://`` door."""
        conn = as_connection(connection) if connection is not None else None
        if conn is not None:
            endpoint = endpoint or conn.endpoint
        self.paths = paths or resolve()
        self.endpoint = endpoint or self.paths.api_endpoint
        self.timeout = timeout
        if check and endpoint is None:
            check_running(self.paths)
        self._ctx: zmq.Context[Any] = zmq.Context()
        self._sock: zmq.Socket[Any] = self._ctx.socket(zmq.DEALER)
        configure_dealer(self._sock)
        if conn is not None:
            configure_curve(self._sock, conn)
        self._sock.connect(self.endpoint)
        self._ids = itertools.count(int(time.time() * 1000) % 1_000_000 * 1000 + 1)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()

    # ------------------------------------------------------------------ API

    def call(
        self,
        op: protocol.Op,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Any:
        """Send ``op`` and return the body of its ``Result``; events are discarded."""
        stream = self.stream(op, timeout=timeout, deadline=deadline)
        for _ in stream:
            pass
        return stream.result

    def stream(
        self,
        op: protocol.Op,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> Stream:
        rid = next(self._ids)
        self._send(protocol.Request(id=rid, op=op, deadline=deadline))
        return Stream(self, rid, self.timeout if timeout is None else timeout)

    # ------------------------------------------------------------------ plumbing

    def _send(self, msg: protocol.ClientMessage) -> None:
        # Never block: a DEALER whose peer is gone (a refused CURVE handshake drops the pipe)
        # would wait forever for one to come back.
        try:
            self._sock.send(protocol.encode(msg), zmq.NOBLOCK, copy=False)
        except zmq.Again:
            raise ClientTimeout(
                f"cannot send to {self.endpoint}: no connection (is this client paired?)"
            ) from None

    def _receive(self, request_id: int, timeout: float | None) -> protocol.ServerMessage:
        limit = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = None if limit is None else max(0, int((limit - time.monotonic()) * 1000))
            if not self._sock.poll(wait_ms, zmq.POLLIN):
                raise ClientTimeout(f"no answer from the daemon within {timeout:g} s")
            frame = self._sock.recv(copy=True)
            msg = protocol.decode_server(frame)
            if msg.id == request_id or (msg.id == 0 and isinstance(msg, protocol.Failure)):
                return msg
            # A late frame of an earlier request that timed out: not ours, drop it.
