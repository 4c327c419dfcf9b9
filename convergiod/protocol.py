"""The wire protocol between clients and the daemon: the single source of truth.

Every message is a msgspec Struct encoded as MessagePack, one message per ZeroMQ frame.
Unions are tagged by the ``type`` field. ``docs/protocol.md`` is the human-readable spec of
exactly these types; when you change one, change the other and bump ``PROTOCOL_VERSION``
for anything that is not a backwards-compatible addition.

A client sends ``Request`` (and ``Cancel``); for each request the daemon sends zero or more
``Event`` frames and then exactly one terminal ``Result`` or ``Failure``.

This module imports nothing heavier than msgspec: the CLI imports it on every command.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

PROTOCOL_VERSION: Final = 1
#: Largest accepted frame from a client, in bytes. Larger frames are answered with
#: ``bad_request`` (and never decoded).
MAX_FRAME_BYTES: Final = 1 << 20

ErrorCode = Literal[
    "bad_request",
    "unsupported_version",
    "unauthorized",
    "forbidden",
    "not_found",
    "overloaded",
    "unavailable",
    "timeout",
    "cancelled",
    "budget_exceeded",
    "provider_unavailable",
    "sandbox_denied",
    "internal",
]
#: The stable set of error codes, in the order of ``docs/protocol.md``.
ERROR_CODES: Final[tuple[str, ...]] = ErrorCode.__args__  # type: ignore[attr-defined]


RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86400)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class _Base(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    pass


# --------------------------------------------------------------------------- ops (client → daemon)


class Ping(_Base, tag="ping"):
    """Liveness check. With ``count`` > 0 the daemon first streams that many ``Tick`` events,
    ``interval`` seconds apart: a diagnostic for streaming, deadlines and cancellation."""

    echo: Annotated[bytes, msgspec.Meta(max_length=65536)] = b""
    count: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    interval: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.0


class Status(_Base, tag="status"):
    """Version, pid, uptime, gateway counters and the state of every actor."""


class ActorRestart(_Base, tag="actor.restart"):
    """Gracefully restart one actor or supervisor (admin)."""

    name: Name


class ActorKill(_Base, tag="actor.kill"):
    """Make an actor or supervisor crash abnormally, so its supervisor's strategy applies
    (admin; for operators and fault tests)."""

    name: Name


class Shutdown(_Base, tag="daemon.shutdown"):
    """Stop taking requests, let in-flight ones finish, exit 0 (admin)."""


Op = Ping | Status | ActorRestart | ActorKill | Shutdown


# --------------------------------------------------------------------------- frames


class Request(_Base, tag="request"):
    """``id`` is chosen by the client and must be unique among its requests in flight.
    ``deadline`` is a relative budget in seconds, counted from receipt by the daemon."""

    id: RequestId
    op: Op
    deadline: Seconds | None = None
    v: int = PROTOCOL_VERSION


class Cancel(_Base, tag="cancel"):
    """Cancel the in-flight request ``id``; it then ends with ``Failure(code="cancelled")``.
    Cancelling an unknown or finished request is a no-op."""

    id: RequestId


ApprovalDecision = Literal["once", "always", "deny"]


class ApprovalAnswer(_Base, tag="approval"):
    """The client's answer to an ``approval_request`` event of request ``id``. ``once``
    approves this call, ``always`` approves it and remembers the approval for the tenant,
    ``deny`` refuses it. Answers to unknown or expired approvals are ignored."""

    id: RequestId
    approval: Annotated[int, msgspec.Meta(ge=1, le=2**31)]
    decision: ApprovalDecision


ClientMessage = Request | Cancel | ApprovalAnswer


# --------------------------------------------------------------------------- event bodies


class Tick(_Base, tag="tick"):
    n: int


class Progress(_Base, tag="progress"):
    message: str
    done: int = 0
    total: int | None = None


class TokenDelta(_Base, tag="token"):
    text: str
    agent: str | None = None


class ApprovalRequest(_Base, tag="approval_request"):
    """The daemon wants the user's approval before a tool runs. Answer with ``approval``
    (an ``ApprovalAnswer`` frame) before ``timeout`` seconds pass, or it counts as ``deny``."""

    approval: int
    tool: str
    summary: str
    args: dict[str, Any] = {}
    agent: str | None = None
    timeout: float = 60.0


EventBody = Tick | Progress | TokenDelta | ApprovalRequest


# --------------------------------------------------------------------------- result bodies


class Pong(_Base, tag="pong"):
    version: str
    protocol: int
    pid: int
    echo: bytes = b""


class ActorStatus(_Base, tag="actor"):
    name: str
    kind: str
    parent: str | None
    state: str
    restarts: int
    mailbox_depth: int
    handled: int
    last_error: str | None = None


class GatewayStats(_Base, tag="gateway"):
    endpoint: str
    events_endpoint: str
    in_flight: int
    requests: int
    failures: int


class StatusReply(_Base, tag="status"):
    version: str
    protocol: int
    pid: int
    uptime: float
    home: str
    tenant: str
    role: str
    healthy: bool
    loop_lag_ms: float
    gateway: GatewayStats
    actors: list[ActorStatus]


class Ack(_Base, tag="ack"):
    message: str = ""


ResultBody = Pong | StatusReply | Ack


# --------------------------------------------------------------------------- server frames


class Event(_Base, tag="event"):
    id: int
    seq: int
    body: EventBody


class Result(_Base, tag="result"):
    id: int
    body: ResultBody


class Failure(_Base, tag="failure"):
    """``id`` is 0 when the daemon could not read the request's id."""

    id: int
    code: ErrorCode
    message: str
    retry_after: float | None = None


ServerMessage = Event | Result | Failure


class PubEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The payload frame on the ``PUB`` socket; the frame before it is the topic."""

    topic: str
    time: float
    data: dict[str, Any] = {}


# --------------------------------------------------------------------------- codecs


class ProtocolError(Exception):
    """A frame the daemon cannot accept; carries the code and the id if one was readable."""

    def __init__(self, code: ErrorCode, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.request_id = request_id


_encoder = msgspec.msgpack.Encoder()
_client_decoder = msgspec.msgpack.Decoder(ClientMessage)
_server_decoder = msgspec.msgpack.Decoder(ServerMessage)
_pub_decoder = msgspec.msgpack.Decoder(PubEvent)
_loose_decoder = msgspec.msgpack.Decoder()

encode = _encoder.encode


def decode_client(frame: bytes | memoryview, max_bytes: int = MAX_FRAME_BYTES) -> ClientMessage:
    """Decode one client frame, or raise ``ProtocolError`` naming what is wrong."""
    if len(frame) > max_bytes:
        raise ProtocolError(
            "bad_request", f"frame of {len(frame)} bytes exceeds the maximum of {max_bytes}"
        )
    try:
        msg: ClientMessage = _client_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError("bad_request", f"invalid message: {exc}", _salvage_id(frame)) from None
    except Exception as exc:  # msgspec may surface e.g. UnicodeDecodeError; still a bad frame
        raise ProtocolError(
            "bad_request", f"invalid message: {type(exc).__name__}: {exc}", _salvage_id(frame)
        ) from None
    if isinstance(msg, Request) and msg.v != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {msg.v} is not supported (this daemon speaks {PROTOCOL_VERSION})",
            msg.id,
        )
    return msg


def _salvage_id(frame: bytes | memoryview) -> int:
    """Best effort: the id of a request whose other fields are wrong, so the client can match
    the ``Failure`` to its request."""
    try:
        loose = _loose_decoder.decode(frame)
    except Exception:  # anything undecodable simply has no id
        return 0
    if isinstance(loose, dict):
        rid = loose.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < 1 << 63:
            return rid
    return 0


def decode_server(frame: bytes | memoryview) -> ServerMessage:
    msg: ServerMessage = _server_decoder.decode(frame)
    return msg


def decode_pub(frame: bytes | memoryview) -> PubEvent:
    return _pub_decoder.decode(frame)


def to_builtins(obj: Any) -> Any:
    """A JSON-friendly view of any protocol object (for ``--json`` output)."""
    return msgspec.to_builtins(obj, enc_hook=repr)
