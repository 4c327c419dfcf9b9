"""The protocol module: codecs, error reporting, and its agreement with docs/protocol.md."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convergiod import protocol as p

DOC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()


@pytest.mark.parametrize(
    "msg",
    [
        p.Request(id=1, op=p.Ping()),
        p.Request(id=2**63 - 1, op=p.Ping(echo=b"\x00\xff", count=3, interval=0.5), deadline=2),
        p.Request(id=3, op=p.Status()),
        p.Request(id=4, op=p.ActorKill(name="health")),
        p.Request(id=5, op=p.ActorRestart(name="core")),
        p.Request(id=6, op=p.Shutdown()),
        p.Cancel(id=7),
    ],
)
def test_client_messages_round_trip(msg: p.ClientMessage) -> None:
    assert p.decode_client(p.encode(msg)) == msg


def test_server_messages_round_trip() -> None:
    msgs: list[p.ServerMessage] = [
        p.Event(id=1, seq=1, body=p.Tick(n=1)),
        p.Event(id=1, seq=2, body=p.TokenDelta(text="hé", agent="ali")),
        p.Result(id=1, body=p.Pong(version="0", protocol=1, pid=2)),
        p.Failure(id=0, code="overloaded", message="busy", retry_after=0.1),
    ]
    for msg in msgs:
        assert p.decode_server(p.encode(msg)) == msg


def test_wire_form_is_a_plain_map_tagged_by_type() -> None:
    raw = msgspec.msgpack.decode(p.encode(p.Request(id=9, op=p.Ping(count=2))))
    assert raw == {"type": "request", "id": 9, "op": {"type": "ping", "count": 2}}


def test_wrongly_typed_field_is_named_and_keeps_the_request_id() -> None:
    frame = msgspec.msgpack.encode(
        {"type": "request", "id": 42, "op": {"type": "ping", "count": "x"}}
    )
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client(frame)
    assert info.value.code == "bad_request"
    assert info.value.request_id == 42
    assert "$.op.count" in info.value.message


def test_oversized_frame_is_refused_before_decoding() -> None:
    with pytest.raises(p.ProtocolError, match="exceeds the maximum of 1024"):
        p.decode_client(b"\x00" * 2048, max_bytes=1024)


def test_other_protocol_version_is_refused_with_its_own_code() -> None:
    frame = msgspec.msgpack.encode({"type": "request", "id": 5, "op": {"type": "ping"}, "v": 99})
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client(frame)
    assert (info.value.code, info.value.request_id) == ("unsupported_version", 5)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_protocol_error(frame: bytes) -> None:
    try:
        p.decode_client(frame)
    except p.ProtocolError as exc:
        assert exc.code in p.ERROR_CODES
        assert exc.message


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=500)
@given(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["request", "cancel", "bogus"]), "id": json_values},
        optional={
            "op": json_values
            | st.fixed_dictionaries(
                {"type": st.sampled_from(["ping", "status", "actor.kill"])},
                optional={"name": json_values, "count": json_values, "echo": json_values},
            ),
            "deadline": json_values,
            "v": json_values,
        },
    )
)
def test_right_format_wrong_types_is_refused_cleanly(obj: dict[str, object]) -> None:
    frame = msgspec.msgpack.encode(obj)
    try:
        msg = p.decode_client(frame)
    except p.ProtocolError as exc:
        assert exc.code in ("bad_request", "unsupported_version")
        rid = obj.get("id")
        if exc.request_id:
            assert exc.request_id == rid
    else:
        assert isinstance(msg, (p.Request, p.Cancel))


def test_docs_list_every_error_code_op_and_body() -> None:
    for code in p.ERROR_CODES:
        assert f"| `{code}` |" in DOC, code
    tags = [
        t.__struct_config__.tag
        for union in (p.Op, p.EventBody, p.ResultBody)
        for t in union.__args__
    ]
    for tag in tags:
        assert re.search(rf"`{re.escape(str(tag))}`", DOC), tag
    assert f"version {p.PROTOCOL_VERSION}" in DOC
