"""A small HTTP/1.1 client on Trio sockets and h11, with a keep-alive pool per origin.

Why not httpx: under Trio it runs through AnyIO and httpcore, and its pool was the bottleneck
of a 50-connection load test on this machine (about 190 requests/s; see
bench/results/router.md for the measurement against this client). The router needs only one
thing: POST a JSON body and read a streamed response with tight timeouts, many at once. Here a
request is: take an idle connection (or dial one, TLS through ``trio.SSLStream``), write the
request, read the response head, then hand out body bytes as they arrive. A connection goes
back to the pool only when its response was read to the end; an abandoned stream closes it.

Connect timeouts belong here; first-token, idle and total timeouts are the caller's (they
wrap the body reads in cancel scopes).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import h11
import trio

__all__ = ["ConnectError", "HttpClient", "ProtocolError", "Response"]

READ_SIZE = 65536


class ConnectError(Exception):
    """Could not open a connection (refused, DNS, TLS, connect timeout)."""


class ProtocolError(Exception):
    """The server broke HTTP: closed mid-response, sent garbage."""


class _Conn:
    __slots__ = ("h11", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


class _Origin:
    __slots__ = ("idle", "limiter")

    def __init__(self, max_connections: int) -> None:
        self.idle: list[_Conn] = []
        self.limiter = trio.CapacityLimiter(max_connections)


class Response:
    """A response whose body is read incrementally with ``iter_bytes`` or ``read``."""

    def __init__(self, conn: _Conn, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        self.complete = False

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        conn = self._conn
        h = conn.h11
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(f"the server broke HTTP: {exc}") from None
            if event is h11.NEED_DATA:
                try:
                    data = await conn.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, OSError) as exc:
                    raise ProtocolError(f"connection lost while reading the body: {exc}") from None
                try:
                    h.receive_data(data)  # type: ignore[arg-type]
                except h11.RemoteProtocolError as exc:
                    raise ProtocolError(str(exc)) from None
                continue
            if type(event) is h11.Data:
                yield bytes(event.data)
            elif type(event) is h11.EndOfMessage:
                self.complete = True
                return
            elif type(event) is h11.ConnectionClosed:
                raise ProtocolError("the server closed the connection before the body ended")
            else:
                raise ProtocolError(f"unexpected HTTP event {type(event).__name__}")

    async def read(self, limit: int = 1 << 20) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_bytes():
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"response body over {limit} bytes")
        return b"".join(parts)


class HttpClient:
    """Pooled HTTP/1.1 client. One per router; ``aclose`` closes idle connections."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._ssl = ssl_context
        self._closed = False

    def _origin(self, key: tuple[str, str, int], max_connections: int) -> _Origin:
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(max_connections)
        return origin

    async def _dial(self, scheme: str, host: str, port: int, connect_timeout: float) -> _Conn:
        try:
            with trio.fail_after(connect_timeout):
                sock: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if scheme == "https":
                    if self._ssl is None:
                        self._ssl = ssl.create_default_context()
                    tls = trio.SSLStream(sock, self._ssl, server_hostname=host)
                    await tls.do_handshake()
                    sock = tls
        except trio.TooSlowError:
            raise ConnectError(f"connect to {host}:{port} timed out") from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
        return _Conn(sock)

    @asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        connect_timeout: float = 10.0,
        max_connections: int = 64,
    ) -> AsyncIterator[Response]:
        """Send the request and yield the response once its head has arrived."""
        parts = urlsplit(url)
        scheme = parts.scheme
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConnectError(f"unsupported URL {url!r}")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        origin = self._origin((scheme, host, port), max_connections)
        host_header = host if parts.port is None else f"{host}:{port}"
        all_headers = [("host", host_header), *headers]
        if body or method == "POST":
            all_headers.append(("content-length", str(len(body))))
        async with origin.limiter:
            response = await self._send(
                origin, scheme, host, port, connect_timeout, method, target, all_headers, body
            )
            try:
                yield response
            finally:
                conn = response._conn
                h = conn.h11
                if (
                    response.complete
                    and not self._closed
                    and h.our_state is h11.DONE
                    and h.their_state is h11.DONE
                ):
                    h.start_next_cycle()
                    origin.idle.append(conn)
                else:
                    await conn.aclose()

    async def _send(
        self,
        origin: _Origin,
        scheme: str,
        host: str,
        port: int,
        connect_timeout: float,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Response:
        request = h11.Request(method=method, target=target, headers=headers)
        # A pooled connection may have been closed by the server meanwhile: if writing or
        # reading the head fails on a reused connection, dial a fresh one once.
        while True:
            reused = bool(origin.idle)
            conn = (
                origin.idle.pop()
                if reused
                else await self._dial(scheme, host, port, connect_timeout)
            )
            try:
                h = conn.h11
                data = h.send(request) + (h.send(h11.Data(data=body)) if body else b"")
                data += h.send(h11.EndOfMessage())
                await conn.stream.send_all(data)
                return await self._read_head(conn)
            except (trio.BrokenResourceError, OSError, ProtocolError) as exc:
                await conn.aclose()
                if reused:
                    continue
                if isinstance(exc, ProtocolError):
                    raise
                raise ConnectError(f"connection to {host}:{port} failed: {exc}") from None
            except BaseException:
                await conn.aclose()
                raise

    async def _read_head(self, conn: _Conn) -> Response:
        h = conn.h11
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(f"the server broke HTTP: {exc}") from None
            if event is h11.NEED_DATA:
                data = await conn.stream.receive_some(READ_SIZE)
                try:
                    h.receive_data(data)  # type: ignore[arg-type]
                except h11.RemoteProtocolError as exc:
                    raise ProtocolError(str(exc)) from None
                continue
            if type(event) is h11.Response:
                return Response(conn, event.status_code, list(event.headers))
            if type(event) is h11.InformationalResponse:
                continue
            if type(event) is h11.ConnectionClosed:
                raise ProtocolError("the server closed the connection without answering")
            raise ProtocolError(f"unexpected HTTP event {type(event).__name__}")

    async def aclose(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            while origin.idle:
                await origin.idle.pop().aclose()
