"""Server-sent events: bytes in, ``(event, data)`` pairs out (the WHATWG event-stream rules
that the providers use: ``event:`` and ``data:`` fields, blank line ends an event, lines
starting with ``:`` are comments, CRLF/CR/LF line ends)."""

from __future__ import annotations

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Feed bytes as they arrive; get the complete events so far."""

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        buf = self._buf + chunk
        if b"\r" in buf:
            # A trailing CR may be half of a CRLF: keep it for the next chunk.
            keep = buf.endswith(b"\r")
            if keep:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep:
                buf += b"\r"
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[tuple[str, str]] = []
        for raw in lines:
            if not raw:
                if self._data:
                    out.append((self._event or "message", "\n".join(self._data)))
                self._event = ""
                self._data = []
                continue
            line = raw.decode("utf-8", "replace")
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            # "id", "retry", comments (empty name) and unknown fields are ignored
        return out
