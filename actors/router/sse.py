"""Server-sent events: bytes in, ``(event, data)`` pairs out (the WHATWG event-stream rules
that the providers use: ``event:`` and ``data:`` fields, blank line ends an event, lines
starting with ``:`` are comments, CRLF/CR/LF line ends)."""

from __future__ import annotations

__all__ = ["SSEDecoder"]


class SSEDecoder:
    """Feed bytes as they arrive; get the complete events so far.

    Only complete events are parsed: the bytes after the last blank line wait for the next
    chunk. An event that is a single ``data:`` line (every OpenAI chunk) takes the fast path.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A trailing CR may be half of a CRLF: keep it for the next chunk.
            keep = buf.endswith(b"\r")
            if keep:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep:
                buf += b"\r"
        cut = buf.rfind(b"\n\n")
        if cut < 0:
            self._buf = buf
            return []
        self._buf = buf[cut + 2 :]
        # Complete events only, so no UTF-8 sequence is split: one decode for all of them.
        out: list[tuple[str, str]] = []
        for block in buf[:cut].decode("utf-8", "replace").split("\n\n"):
            if block.startswith("data: ") and "\n" not in block:
                out.append(("message", block[6:]))
            elif block:
                _event(block, out)
        return out


def _event(block: str, out: list[tuple[str, str]]) -> None:
    """Parse the lines of one event (or of several, when blank lines ran together)."""
    data: list[str] = []
    event = ""
    for line in block.split("\n"):
        if not line:  # a blank line inside: the lines before were an event
            if data:
                out.append((event or "message", "\n".join(data)))
            data = []
            event = ""
            continue
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        # "id", "retry", comments (empty name) and unknown fields are ignored
    if data:
        out.append((event or "message", "\n".join(data)))
