"""A small HTTP/1.1 client on Trio sockets, with a keep-alive pool per origin.

Why not httpx: under Trio it runs through AnyIO and httpcore, and its pool was the bottleneck
of a 50-connection load test on this machine (about 190 requests/s; see
bench/results/router.md for the measurement against this client). The router needs only one
thing: POST a JSON body and read a streamed response with tight timeouts, many at once. Here a
request is: take an idle connection (or dial one, TLS through ``trio.SSLStream``), write the
request, read the response head, then hand out body bytes as they arrive. A connection goes
back to the pool only when its response was read to the end; an abandoned stream closes it.
A reader that has all it needs before the end (an SSE stream's last event, ahead of the
chunked terminator) marks the response ``finish_later``: a background task
(``HttpClient.background``) reads the rest and pools the connection, off the caller's path.

Why not h11 (used here before): it validates and hands out every HTTP chunk as an event, tens
of microseconds each, and a streamed model answer is one chunk per token: that was a good
part of the router's CPU per call. The subset spoken here is small and strict: requests with
``content-length``; responses framed by ``transfer-encoding: chunked``, ``content-length`` or
the end of the connection; 1xx responses skipped; anything malformed is a ``ProtocolError``.
Each socket read yields all the body bytes it brought, in one piece.

Connect timeouts belong here; first-token, idle and total timeouts are the caller's (they
wrap the body reads in cancel scopes).
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import trio

__all__ = ["ConnectError", "HttpClient", "ProtocolError", "Response"]

READ_SIZE = 65536
MAX_HEAD = 65536  # bytes of a response head (status line and headers)
#: A response finished in the background (``Response.finish_later``) must end within this
#: long and this many bytes, or its connection is closed instead of pooled.
FINISH_TIMEOUT = 2.0
FINISH_LIMIT = 1 << 20
_HEX = b"0123456789abcdefABCDEF"
_is_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch  # a header name


class ConnectError(Exception):
    """Could not open a connection (refused, DNS, TLS, connect timeout)."""


class ProtocolError(Exception):
    """The server broke HTTP: closed mid-response, sent garbage."""


class _Conn:
    __slots__ = ("_fd", "empty", "stream")

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # Plain TCP: read and write the socket's descriptor directly, without
        # SocketStream's per-call context managers (one reader and one writer per
        # connection: nothing for its conflict checks to catch) and without the trip through
        # the scheduler Trio takes after an operation that did not have to wait.
        self._fd = -1
        #: The last read found nothing: the next one waits for the socket first.
        self.empty = False
        if type(stream) is trio.SocketStream:
            self._fd = stream.socket.fileno()

    def receive_nowait(self) -> bytes | None:
        """What the socket holds now, without waiting: bytes, ``b""`` at the end of the
        stream, or ``None`` if nothing has arrived (or the stream cannot tell: TLS)."""
        if self._fd < 0:
            return None
        try:
            # Trio's sockets are non-blocking; reading one directly is safe while no task
            # waits on it (one reader per connection).
            return os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            self.empty = True
            return None
        except OSError as exc:
            raise ProtocolError(f"connection lost: {exc}") from None

    async def receive(self) -> bytes:
        fd = self._fd
        if fd >= 0:
            # The read that would fail is skipped when the last one found nothing; a read
            # that did not wait is followed by a checkpoint, as Trio's own (fairness: a
            # stream whose bytes are always there cannot hold the loop).
            if not self.empty:
                await trio.lowlevel.checkpoint_if_cancelled()
                data = self.receive_nowait()
                if data is not None:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
            while True:
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError as exc:
                    raise ProtocolError(f"connection lost: {exc}") from None
                data = self.receive_nowait()
                if data is not None:
                    self.empty = False
                    return data
        try:
            got = await self.stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ProtocolError(f"connection lost: {exc}") from None
        return got if type(got) is bytes else bytes(got)

    async def send_all(self, data: bytes) -> None:
        """Write ``data``; without a trip through the scheduler when the socket takes it
        all at once (the answer is awaited right after: that wait is the checkpoint)."""
        if self._fd >= 0:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                sent = os.write(self._fd, data)  # a send(2) without flags
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                self.empty = True  # the answer cannot be here yet
                return
            data = data[sent:]
        await self.stream.send_all(data)
        self.empty = True

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
    """A response whose body is read as it arrives (``receive``, ``iter_bytes``) or whole
    (``read``)."""

    __slots__ = (
        "_broken",
        "_buf",
        "_conn",
        "_framing",
        "_left",
        "complete",
        "finish_later",
        "headers",
        "reusable",
        "status",
    )

    def __init__(
        self,
        conn: _Conn,
        status: int,
        headers: list[tuple[bytes, bytes]],
        rest: bytes,
        *,
        keep_alive: bool,
        no_body: bool = False,
    ) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers  # names lower-cased
        self.complete = False
        #: The reader has what it needs; the rest of the body (normally only the end of
        #: the chunked framing) may be read after the exchange, off the reader's path.
        self.finish_later = False
        self._buf = rest  # body bytes that came with the head
        self._broken: ProtocolError | None = None  # broken framing found after good data
        te = cl = None
        for k, v in headers:
            if k == b"transfer-encoding":
                te = v
            elif k == b"content-length":
                cl = v
        # _framing: "chunked" (_left: bytes left of the current chunk's data, -1 before a
        # size line, -3 before the CRLF that ends a chunk's data, -2 in the trailer),
        # "length" (_left: bytes left) or "close".
        if no_body:
            self._framing, self._left = "length", 0
        elif te is not None:
            if te.strip().lower() != b"chunked":
                raise ProtocolError(f"unsupported transfer-encoding {te.decode('latin-1')!r}")
            self._framing, self._left = "chunked", -1
        elif cl is not None:
            if not cl.strip().isdigit():
                raise ProtocolError(f"bad content-length {cl.decode('latin-1')!r}")
            self._framing, self._left = "length", int(cl)
        else:
            self._framing, self._left = "close", 0
            keep_alive = False
        self.reusable = keep_alive

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        for k, v in self.headers:
            if k == key:
                return v.decode("latin-1")
        return None

    async def receive(self) -> bytes:
        """The next piece of the body: what one socket read brought (never empty), or
        ``b""`` once the body is complete."""
        framing = self._framing
        while not self.complete:
            if framing == "chunked":
                out = self._dechunk()
                if out:
                    return out
                if self.complete:
                    break
                data = await self._conn.receive()
                if not data:
                    raise ProtocolError("the server closed the connection before the body ended")
                self._buf += data
            elif framing == "length":
                left = self._left
                if left == 0:
                    self.complete = True
                    break
                if not self._buf:
                    self._buf = await self._conn.receive()
                    if not self._buf:
                        raise ProtocolError(
                            "the server closed the connection before the body ended"
                        )
                return self._take_length()
            else:
                buf = self._buf
                if buf:
                    self._buf = b""
                    return buf
                buf = await self._conn.receive()
                if buf:
                    return buf
                self.complete = True
        return b""

    def receive_nowait(self) -> bytes | None:
        """More of the body only if it has already arrived (never waits): a piece, or
        ``None`` when nothing more is here yet (or the body is complete; see ``receive``).
        Lets a reader merge what arrived while it was busy with the previous piece."""
        if self.complete:
            return None
        framing = self._framing
        if framing == "chunked":
            out = self._dechunk()
            if out or self.complete:
                return out or None
            data = self._conn.receive_nowait()
            if not data:
                return None  # nothing yet, or the end: ``receive`` reports it
            self._buf += data
            return self._dechunk() or None
        if self._buf:
            return None  # ``receive`` hands out buffered bytes (with the length checks)
        if framing == "length" and self._left == 0:
            return None
        data = self._conn.receive_nowait()
        if not data:
            return None
        if framing == "length":
            self._buf = data
            return self._take_length()
        return data

    def _take_length(self) -> bytes:
        buf, self._buf = self._buf, b""
        left = self._left
        if len(buf) > left:
            self.reusable = False  # bytes after the body: do not trust the rest
            buf = buf[:left]
        self._left = left = left - len(buf)
        if left == 0:
            self.complete = True
        return buf

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives: one piece per socket read."""
        while chunk := await self.receive():
            yield chunk

    def _dechunk(self) -> bytes:
        """Take the chunk data ``_buf`` holds; keep an incomplete tail for the next read.
        Broken framing after good chunks in the same read: the good data comes first, the
        error with the next call (a reader may have all it needs before it)."""
        if self._broken is not None:
            raise self._broken
        parts: list[bytes] = []
        try:
            return self._dechunk_into(parts)
        except ProtocolError as exc:
            if not parts:
                raise
            self._broken = exc
            self.reusable = False
            self._buf = b""
            return b"".join(parts)

    def _dechunk_into(self, parts: list[bytes]) -> bytes:
        buf = self._buf
        end = len(buf)
        pos = 0
        left = self._left
        while pos < end:
            if left == -1:  # a size line
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > 1024:
                        raise ProtocolError("the server broke HTTP: chunk header too long")
                    break
                size_text = buf[pos:nl]
                try:
                    # isalnum: no sign, space, "_" or ";" for int() to accept or choke on
                    if not size_text.isalnum() or len(size_text) > 16:
                        raise ValueError
                    size = int(size_text, 16)
                except ValueError:
                    size = _chunk_size(size_text)
                pos = nl + 2
                if size == 0:
                    left = -2
                    continue
                # The common case: the whole chunk and its CRLF are here.
                stop = pos + size
                if stop + 2 <= end:
                    if buf[stop : stop + 2] != b"\r\n":
                        raise ProtocolError("the server broke HTTP: bad chunk terminator")
                    parts.append(buf[pos:stop])
                    pos = stop + 2
                    continue
                left = size
            elif left > 0:  # inside a chunk's data
                take = min(left, end - pos)
                parts.append(buf[pos : pos + take])
                pos += take
                left -= take
                if left == 0:
                    left = -3
            elif left == -3:  # the CRLF after a chunk's data
                if end - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("the server broke HTTP: bad chunk terminator")
                pos += 2
                left = -1
            else:  # -2: trailer fields, up to an empty line
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > MAX_HEAD:
                        raise ProtocolError("the server broke HTTP: trailer too long")
                    break
                empty = nl == pos
                pos = nl + 2
                if empty:
                    if pos != end:
                        self.reusable = False
                    self.complete = True
                    self._buf = b""
                    self._left = 0
                    return b"".join(parts)
        self._buf = buf[pos:] if pos else buf
        self._left = left
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read(self, limit: int = 1 << 20) -> bytes:
        parts: list[bytes] = []
        size = 0
        while chunk := await self.receive():
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"response body over {limit} bytes")
        return b"".join(parts)


def _chunk_size(line: bytes) -> int:
    """The size of a chunk header line with extensions (``1a;name=value``, ignored)."""
    text = line.split(b";", 1)[0].strip(b" \t")
    if not text or text.strip(_HEX) or len(text) > 16:
        raise ProtocolError(f"the server broke HTTP: bad chunk size {line[:40]!r}")
    return int(text, 16)


def _split(url: str) -> tuple[str, str, int, bytes]:
    """(scheme, host, port, start of the request head: request line and Host) of ``url``."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConnectError(f"unsupported URL {url!r}")
    host = parts.hostname
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal
    host_header = name if parts.port is None else f"{name}:{port}"
    _check_header("host", host_header)
    if any(c <= " " or c == "\x7f" for c in target):
        raise ConnectError(f"unsupported URL {url!r}")
    return scheme, host, port, f"{target} HTTP/1.1\r\nhost: {host_header}\r\n".encode()


def _check_header(name: str, value: str) -> None:
    if _is_token(name) is None:
        raise ConnectError(f"bad HTTP header name {name!r}")
    if "\r" in value or "\n" in value or "\0" in value:
        raise ConnectError(f"bad value for HTTP header {name!r}")  # never echo the value


def _parse_head(head: bytes) -> tuple[bytes, int, list[tuple[bytes, bytes]]]:
    """(HTTP version, status, headers with lower-cased names) of a response head without its
    final CRLF CRLF."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if (
        len(parts) < 2
        or not parts[0].startswith(b"HTTP/1.")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise ProtocolError(f"the server broke HTTP: bad status line {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b"\n" in line or b"\r" in line:
            raise ProtocolError(f"the server broke HTTP: bad header line {line[:80]!r}")
        headers.append((name.lower(), value.strip(b" \t")))
    return parts[0][5:], int(parts[1]), headers


class HttpClient:
    """Pooled HTTP/1.1 client. One per router; ``aclose`` closes idle connections."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._urls: dict[str, tuple[str, str, int, bytes]] = {}
        self._ssl = ssl_context
        self._closed = False
        #: Runs a coroutine function in some task later (``Router.defer``); False if it
        #: cannot. Finishes responses whose reader is done (``Response.finish_later``).
        self.background: Callable[[Callable[[], Awaitable[None]]], bool] | None = None

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

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        connect_timeout: float = 10.0,
        max_connections: int = 64,
    ) -> _Exchange:
        """``async with client.request(...) as response``: sends the request and gives the
        response once its head has arrived. Bad URLs and headers raise ``ConnectError``."""
        split = self._urls.get(url)
        if split is None:
            split = _split(url)
            if len(self._urls) < 256:
                self._urls[url] = split
        scheme, host, port, start = split
        lines = [method.encode("ascii"), b" ", start]
        for name, value in headers:
            _check_header(name, value)
            try:
                lines.append(f"{name}: {value}\r\n".encode("latin-1"))
            except UnicodeEncodeError:
                raise ConnectError(f"bad value for HTTP header {name!r}") from None
        if body or method == "POST":
            lines.append(b"content-length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        lines.append(body)
        origin = self._origin((scheme, host, port), max_connections)
        return _Exchange(
            self, origin, (scheme, host, port, connect_timeout, method), b"".join(lines)
        )

    async def _send(
        self,
        origin: _Origin,
        scheme: str,
        host: str,
        port: int,
        connect_timeout: float,
        method: str,
        data: bytes,
    ) -> Response:
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
                await conn.send_all(data)
                return await self._read_head(conn, method, reused)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                await conn.aclose()
                if reused:
                    continue
                raise ConnectError(f"connection to {host}:{port} failed: {exc}") from None
            except _Stale:
                await conn.aclose()
                continue
            except BaseException:
                await conn.aclose()
                raise

    async def _read_head(self, conn: _Conn, method: str, reused: bool) -> Response:
        buf = b""
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ProtocolError("the server broke HTTP: response head too long")
                try:
                    data = await conn.receive()
                except ProtocolError:
                    if reused and not buf:
                        raise _Stale() from None
                    raise
                if not data:
                    if reused and not buf:
                        raise _Stale()
                    raise ProtocolError("the server closed the connection without answering")
                buf += data
                continue
            version, status, headers = _parse_head(buf[:end])
            buf = buf[end + 4 :]
            if 100 <= status < 200:
                continue  # 100 Continue and other informational responses
            keep_alive = version == b"1.1" and not any(
                k == b"connection" and b"close" in v.lower() for k, v in headers
            )
            return Response(
                conn,
                status,
                headers,
                buf,
                keep_alive=keep_alive,
                no_body=method == "HEAD" or status in (204, 304),
            )

    async def aclose(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            while origin.idle:
                await origin.idle.pop().aclose()


class _Exchange:
    """One request on a pooled connection (``HttpClient.request``). A plain class rather
    than ``asynccontextmanager``: this is on the path of every call."""

    __slots__ = ("_client", "_data", "_dest", "_handed", "_origin", "_response")

    def __init__(
        self,
        client: HttpClient,
        origin: _Origin,
        dest: tuple[str, str, int, float, str],
        data: bytes,
    ) -> None:
        self._client = client
        self._origin = origin
        self._dest = dest
        self._data = data
        self._response: Response | None = None
        self._handed = False

    async def __aenter__(self) -> Response:
        limiter = self._origin.limiter
        try:
            # No scheduler trip while a connection slot is free. The exchange holds the
            # slot (not the task): a response finished later gives it back from another.
            limiter.acquire_on_behalf_of_nowait(self)
        except trio.WouldBlock:
            await limiter.acquire_on_behalf_of(self)
        try:
            scheme, host, port, connect_timeout, method = self._dest
            self._response = await self._client._send(
                self._origin, scheme, host, port, connect_timeout, method, self._data
            )
        except BaseException:
            limiter.release_on_behalf_of(self)
            raise
        return self._response

    async def __aexit__(self, exc_type: object, *exc_info: object) -> None:
        response = self._response
        assert response is not None
        client = self._client
        try:
            conn = response._conn
            if response.complete:
                if response.reusable and not client._closed:
                    self._origin.idle.append(conn)
                    return
            elif (
                response.finish_later
                and exc_type is None
                and response.reusable
                and not client._closed
                and client.background is not None
                and client.background(self._finish)
            ):
                self._handed = True  # the slot is now the background task's
                return
            await conn.aclose()
        finally:
            if not self._handed:
                self._origin.limiter.release_on_behalf_of(self)

    async def _finish(self) -> None:
        """Read the rest of a response its reader was done with (``finish_later``), then
        pool its connection; close it if the rest is slow, long or broken."""
        response = self._response
        assert response is not None
        conn = response._conn
        try:
            size = 0
            with trio.move_on_after(FINISH_TIMEOUT):
                while size <= FINISH_LIMIT and (chunk := await response.receive()):
                    size += len(chunk)
        except ProtocolError:
            pass
        finally:
            try:
                if response.complete and response.reusable and not self._client._closed:
                    self._origin.idle.append(conn)
                else:
                    await conn.aclose()
            finally:
                self._origin.limiter.release_on_behalf_of(self)


class _Stale(Exception):
    """A pooled connection the server had closed before our request: dial a fresh one."""
