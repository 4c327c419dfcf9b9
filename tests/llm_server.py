"""A local LLM test server speaking both wire formats, byte for byte as the providers document
them, with scripted failures. No test talks to the internet: they talk to this.

- ``POST /v1/chat/completions``: OpenAI chat completions with ``"stream": true`` — chunked
  ``text/event-stream`` of ``data: {chat.completion.chunk}`` lines, a usage-only chunk with
  empty ``choices`` when ``stream_options.include_usage`` is set (other chunks then carry
  ``"usage":null``), then ``data: [DONE]``.
- ``POST /v1/messages``: Anthropic messages — ``event:``/``data:`` pairs: ``message_start``,
  ``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta`` /
  ``input_json_delta``), ``content_block_stop``, ``message_delta``, ``message_stop``; errors
  as ``event: error``.
- ``GET /v1/models``: a model list (reachability probes).

The request's ``model`` picks the behaviour: ``scenario[;key=value...][@tag]``. A counter per
full model string lets a failure happen only the first ``times`` requests (use a unique
``@tag`` per test).

- ``text``: ``chunks`` words (default 5), ``delay`` s apart, ``first`` s before the first;
  ``usage=0`` omits usage.
- ``burst=1`` (any scenario): the whole body goes out in one write at the end, so the client
  gets many events in one read.
- ``badend=1`` (any scenario): the body ends with broken chunk framing instead of the last
  chunk (after the stream's own end, ``[DONE]`` or ``message_stop``).
- ``tools``: one tool call ``get_weather({"city": "Paris"})`` split in fragments (after a
  short text in Anthropic's format).
- ``status``: HTTP ``code`` (default 500), with a ``Retry-After`` of ``retry_after`` if given,
  for the first ``times`` requests (default: always); then ``text``.
- ``disconnect``: ``after`` text chunks, then the TCP connection is cut (no end of body).
- ``malformed``: ``after`` text chunks, then a chunk that is not JSON.
- ``error``: ``after`` text chunks, then the provider's in-stream error.

Run alone (for the benchmark): ``python -m tests.llm_server [--port N]`` prints the port.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

WORDS = ["Hello", " from", " the", " test", " server", ".", " More", " words", " follow", "!"]


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Stream:
    """A connection's socket read and written with ``os.read``/``os.write`` on its file
    descriptor (trio's ``SocketStream`` costs several times more per call, and this server
    shares the benchmarks' CPU with the daemon they measure). The same errors as
    ``SocketStream``: ``trio.BrokenResourceError`` for a lost connection,
    ``trio.ClosedResourceError`` once closed."""

    __slots__ = ("_fd", "stream")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._fd = stream.socket.fileno()

    async def receive_some(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._fd < 0:
                raise trio.ClosedResourceError("the connection is closed")
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from None
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def send_all(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        while view:
            if self._fd < 0:
                raise trio.ClosedResourceError("the connection is closed")
            try:
                sent = os.write(self._fd, view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._fd)
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from None
            view = view[sent:]
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        self._fd = -1
        await self.stream.aclose()


#: The one header the server needs on every request (the others only when recording).
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE).search


def _headers(head: bytes) -> dict[str, str]:
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return headers


def _decode_body(data: bytes) -> Any:
    """A request's JSON body (msgspec: this server is on the benchmarks' CPU, and
    ``json.loads`` was a tenth of its time per request)."""
    return msgspec.json.decode(data)


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of a ``Transfer-Encoding: chunked`` body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass
class Scenario:
    kind: str
    params: dict[str, str]
    key: str

    @classmethod
    def parse(cls, model: str) -> Scenario:
        base = model.split("@", 1)[0]
        kind, *rest = base.split(";")
        params = dict(p.split("=", 1) for p in rest if "=" in p)
        return cls(kind or "text", params, model)

    def num(self, name: str, default: float) -> float:
        return float(self.params.get(name, default))


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class LLMServer:
    """Serve with ``await nursery.start(server.serve)``; ``port`` is set once listening."""

    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    record: bool = True

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    # ------------------------------------------------------------------ HTTP

    async def _connection(self, socket_stream: trio.SocketStream) -> None:
        stream = Stream(socket_stream)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                method, path, _ = head.partition(b"\r\n")[0].decode("latin-1").split(" ", 2)
                found = _CONTENT_LENGTH(head)
                length = int(found.group(1)) if found else 0
                while len(buf) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                body_bytes, buf = buf[:length], buf[length:]
                body = _decode_body(body_bytes) if body_bytes else None
                if self.record:
                    self.requests.append(Recorded(method, path, _headers(head), body))
                keep = await self._route(stream, method, path, body)
                if not keep:
                    await stream.aclose()
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _plain(self, stream: Stream, status: int, body: bytes, extra: str = "") -> None:
        reason = {
            200: "OK",
            400: "Bad Request",
            401: "Unauthorized",
            404: "Not Found",
            429: "Too Many Requests",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }.get(status, "Status")
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n"
        ).encode()
        await stream.send_all(head + body)

    async def _route(self, stream: Stream, method: str, path: str, body: Any) -> bool:
        if method == "GET" and path.endswith("/models"):
            await self._plain(stream, 200, _compact({"object": "list", "data": []}))
            return True
        if method != "POST" or not isinstance(body, dict):
            await self._plain(stream, 404, b'{"error":"not found"}')
            return True
        anthropic = path.endswith("/messages")
        sc = Scenario.parse(str(body.get("model", "text")))
        n = self.counts[sc.key] = self.counts.get(sc.key, 0) + 1
        if sc.kind == "status" and n <= sc.num("times", 1e9):
            code = int(sc.num("code", 500))
            extra = (
                f"retry-after: {sc.params['retry_after']}\r\n" if "retry_after" in sc.params else ""
            )
            if anthropic:
                err = {
                    "type": "error",
                    "error": {
                        "type": "rate_limit_error" if code == 429 else "api_error",
                        "message": f"status {code}",
                    },
                }
            else:
                err = {"error": {"message": f"status {code}", "type": "server_error", "code": None}}
            await self._plain(stream, code, _compact(err), extra)
            return True
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        writer = _Anthropic(sc, body) if anthropic else _OpenAI(sc, body)
        first = sc.num("first", 0)
        if first:
            await trio.sleep(first)
        ok = await writer.write(stream)
        end = b"0\r\n\r\n" if sc.params.get("badend") != "1" else b"zz\r\nnot a chunk\r\n"
        await writer.flush(stream, end if ok else b"")
        return ok


class _Writer:
    def __init__(self, sc: Scenario, body: dict[str, Any]) -> None:
        self.sc = sc
        self.body = body
        self.model = str(body.get("model"))
        self.words = [WORDS[i % len(WORDS)] for i in range(int(sc.num("chunks", 5)))]
        self.delay = sc.num("delay", 0)
        self.cut_after = int(sc.num("after", 2))
        self.burst: list[bytes] | None = [] if sc.params.get("burst") == "1" else None

    async def _send(self, stream: Stream, data: bytes) -> None:
        if self.burst is not None:
            self.burst.append(_chunk(data))
            return
        await stream.send_all(_chunk(data))

    async def flush(self, stream: Stream, end: bytes = b"") -> None:
        """Send what ``burst`` held back (and ``end``) in one write."""
        if self.burst is not None:
            data, self.burst = b"".join(self.burst) + end, None
            await stream.send_all(data)
        elif end:
            await stream.send_all(end)

    async def write(self, stream: Stream) -> bool:
        raise NotImplementedError

    async def words_then_fault(self, stream: Stream, send_word: Any) -> bool:
        """Shared by both formats: stream words; inject the scenario's fault."""
        kind = self.sc.kind
        words = self.words
        if kind in ("disconnect", "malformed", "error"):
            words = words[: self.cut_after]
        for i, word in enumerate(words):
            if i and self.delay:
                await trio.sleep(self.delay)
            await send_word(word)
        if kind == "disconnect":
            # Cut the connection mid-body: no terminating chunk.
            await self.flush(stream)
            await stream.aclose()
            return False
        if kind == "malformed":
            await self._send(stream, b'data: {"choices":[{"index":0,"delta":{"content":"x"\n\n')
            return True
        return True


class _OpenAI(_Writer):
    def __init__(self, sc: Scenario, body: dict[str, Any]) -> None:
        super().__init__(sc, body)
        self.include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.prefix = {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": "fp_44709d6fcb",
        }

    def _event(
        self,
        delta: dict[str, Any] | None,
        finish: str | None = None,
        usage: Any = None,
        choices: bool = True,
    ) -> bytes:
        obj = dict(self.prefix)
        obj["choices"] = (
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if choices
            else []
        )
        if self.include_usage:
            obj["usage"] = usage
        return b"data: " + _compact(obj) + b"\n\n"

    async def write(self, stream: Stream) -> bool:
        send = self._send
        await send(stream, self._event({"role": "assistant", "content": "", "refusal": None}))
        if self.sc.kind == "tools":
            await send(
                stream,
                self._event(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    }
                ),
            )
            for piece in ['{"', "city", '":"', "Paris", '"}']:
                await send(
                    stream,
                    self._event({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                )
            finish = "tool_calls"
            out_tokens = 17
        else:

            async def word(w: str) -> None:
                await send(stream, self._event({"content": w}))

            if not await self.words_then_fault(stream, word):
                return False
            if self.sc.kind == "error":
                await send(
                    stream,
                    b"data: "
                    + _compact(
                        {
                            "error": {
                                "message": "The server had an error while processing your request.",
                                "type": "server_error",
                            }
                        }
                    )
                    + b"\n\n",
                )
                return True
            if self.sc.kind == "malformed":
                return True
            finish = "stop"
            out_tokens = len(self.words)
        await send(stream, self._event({}, finish))
        if self.include_usage and self.sc.params.get("usage") != "0":
            usage = {
                "prompt_tokens": 21,
                "completion_tokens": out_tokens,
                "total_tokens": 21 + out_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            }
            await send(stream, self._event(None, usage=usage, choices=False))
        await send(stream, b"data: [DONE]\n\n")
        return True


class _Anthropic(_Writer):
    def _event(self, name: str, obj: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _compact(obj) + b"\n\n"

    async def write(self, stream: Stream) -> bool:
        send = self._send
        ev = self._event
        usage = self.sc.params.get("usage") != "0"
        start_usage = {
            "input_tokens": 25,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 1,
            "service_tier": "standard",
        }
        message = {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
        }
        if usage:
            message["usage"] = start_usage
        await send(stream, ev("message_start", {"type": "message_start", "message": message}))
        await send(
            stream,
            ev(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
        )
        await send(stream, ev("ping", {"type": "ping"}))
        if self.sc.kind == "tools":
            await send(
                stream,
                ev(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "Let me check."},
                    },
                ),
            )
            await send(stream, ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
            await send(
                stream,
                ev(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 1,
                        "content_block": {
                            "type": "tool_use",
                            "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                            "name": "get_weather",
                            "input": {},
                        },
                    },
                ),
            )
            for piece in ["", '{"city"', ': "Par', 'is"}']:
                await send(
                    stream,
                    ev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 1,
                            "delta": {"type": "input_json_delta", "partial_json": piece},
                        },
                    ),
                )
            await send(stream, ev("content_block_stop", {"type": "content_block_stop", "index": 1}))
            stop, out_tokens = "tool_use", 19
        else:

            async def word(w: str) -> None:
                await send(
                    stream,
                    ev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": w},
                        },
                    ),
                )

            if not await self.words_then_fault(stream, word):
                return False
            if self.sc.kind == "error":
                await send(
                    stream,
                    ev(
                        "error",
                        {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": "Overloaded"},
                        },
                    ),
                )
                return True
            if self.sc.kind == "malformed":
                return True
            await send(stream, ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
            stop, out_tokens = "end_turn", len(self.words)
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
        }
        if usage:
            delta["usage"] = {"output_tokens": out_tokens}
        await send(stream, ev("message_delta", delta))
        await send(stream, ev("message_stop", {"type": "message_stop"}))
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = LLMServer(port=args.port, record=False)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve)
            # Started: what it has built lives as long as it does; out of the collector's
            # sight, so no full collection of it stalls a benchmark's measured phase.
            gc.collect()
            gc.freeze()
            print(port, flush=True)

    trio.run(run)


if __name__ == "__main__":
    main()
