"""The router against a local server speaking the real wire formats: streams, tool calls,
usage, and every scripted failure with its documented behaviour (retry, fallback, cooldown,
clean error, never a replay)."""

from __future__ import annotations

import itertools
import time
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from convergiod.actors.router.core import _Stream, _Watchdog, channel_deliver
from convergiod.actors.router.messages import (
    Chat,
    Failed,
    Finished,
    Message,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolSpec,
    Usage,
)
from convergiod.actors.router.reliability import Backoff, parse_retry_after
from convergiod.actors.router.sse import SSEDecoder
from tests.llm_server import WORDS, LLMServer
from tests.router_helpers import Harness, models

WEATHER = ToolSpec(
    name="get_weather",
    description="Weather of a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


@pytest.fixture
async def server(nursery: trio.Nursery) -> LLMServer:
    s = LLMServer()
    await nursery.start(s.serve)
    return s


def texts(events: list[object]) -> str:
    """The text the caller got. Text that arrived in one read comes as one ``TextDelta``,
    so only the concatenation is fixed (and no delta is empty)."""
    parts = [e.text for e in events if isinstance(e, TextDelta)]
    assert all(parts)
    return "".join(parts)


def hits(server: LLMServer, upstream: str) -> int:
    return server.counts.get(upstream, 0)


# ----------------------------------------------------------------------------- streams


async def test_openai_text_stream_arrives_in_order_with_reported_usage(
    server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CVG_TEST_OPENAI_KEY", "sk-test-123")
    h = Harness(server.port, models("m=oa:text;chunks=5|input_price = 2.0,output_price = 10.0"))
    events, terminal = await h.chat("m")
    assert texts(events) == "Hello from the test server"
    assert isinstance(terminal, Finished)
    assert terminal.result.text == "Hello from the test server"
    usage = terminal.result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.estimated) == (21, 5, False)
    assert usage.cost == pytest.approx((21 * 2.0 + 5 * 10.0) / 1e6)
    assert isinstance(events[-2], Usage) and events[-1] == terminal
    req = server.requests[-1]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer sk-test-123"
    assert req.body["stream"] is True
    assert req.body["stream_options"] == {"include_usage": True}
    assert req.body["messages"] == [{"role": "user", "content": "Hi"}]


async def test_anthropic_text_stream_sends_version_key_system_and_max_tokens(
    server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CVG_TEST_ANTHROPIC_KEY", "ak-test")
    h = Harness(server.port, models("c=an:text;chunks=3|max_output_tokens = 99"))
    messages = [Message(role="system", content="Be brief."), Message(role="user", content="Hi")]
    events, terminal = await h.chat("c", messages=messages)
    assert texts(events) == "Hello from the"
    assert isinstance(terminal, Finished)
    assert (terminal.result.usage.input_tokens, terminal.result.usage.output_tokens) == (25, 3)
    assert terminal.result.finish_reason == "stop"
    req = server.requests[-1]
    assert req.path == "/v1/messages"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["x-api-key"] == "ak-test"
    assert req.body["system"] == "Be brief."
    assert req.body["max_tokens"] == 99
    assert req.body["messages"] == [{"role": "user", "content": "Hi"}]


async def test_openai_tool_call_fragments_merge_by_index(server: LLMServer) -> None:
    h = Harness(server.port, models("m=oa:tools"))
    events, terminal = await h.chat("m", tools=[WEATHER])
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0].id == "call_DdmO9pD3xa9XTPNJ32zg2hcA" and deltas[0].name == "get_weather"
    assert "".join(d.arguments for d in deltas) == '{"city":"Paris"}'
    done = [e for e in events if isinstance(e, ToolCallDone)]
    call = ToolCall(
        id="call_DdmO9pD3xa9XTPNJ32zg2hcA", name="get_weather", arguments='{"city":"Paris"}'
    )
    assert done == [ToolCallDone(index=0, call=call)]
    assert isinstance(terminal, Finished)
    assert terminal.result.tool_calls == [call]
    assert terminal.result.finish_reason == "tool_calls"
    sent = server.requests[-1].body["tools"]
    assert sent[0]["type"] == "function" and sent[0]["function"]["name"] == "get_weather"


async def test_anthropic_tool_use_blocks_become_complete_tool_calls(server: LLMServer) -> None:
    h = Harness(server.port, models("c=an:tools"))
    history = [
        Message(role="user", content="Weather?"),
        Message(
            role="assistant",
            tool_calls=[ToolCall(id="toolu_0", name="get_weather", arguments='{"city": "Rome"}')],
        ),
        Message(role="tool", tool_call_id="toolu_0", content="sunny"),
        Message(role="user", content="And Paris?"),
    ]
    events, terminal = await h.chat("c", tools=[WEATHER], messages=history)
    assert texts(events) == "Let me check."
    done = [e for e in events if isinstance(e, ToolCallDone)]
    assert [d.call for d in done] == [
        ToolCall(
            id="toolu_01T1x1fJ34qAmk2tNTrN7Up6", name="get_weather", arguments='{"city": "Paris"}'
        )
    ]
    assert done[0].index == 0  # block index 1 upstream, first tool call for the caller
    assert isinstance(terminal, Finished) and terminal.result.finish_reason == "tool_calls"
    body = server.requests[-1].body
    assert body["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    assert body["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "toolu_0",
        "name": "get_weather",
        "input": {"city": "Rome"},
    }
    assert body["messages"][2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_0",
        "content": "sunny",
    }


@pytest.mark.parametrize("provider", ["oa", "an"])
async def test_usage_is_estimated_when_the_provider_sends_none(
    server: LLMServer, provider: str
) -> None:
    h = Harness(server.port, models(f"m={provider}:text;usage=0;chunks=4"))
    _, terminal = await h.chat("m", content="What is the weather like today in Paris?")
    assert isinstance(terminal, Finished)
    usage = terminal.result.usage
    assert usage.estimated
    assert usage.input_tokens > 5 and usage.output_tokens > 0


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("provider", ["oa", "an"])
async def test_429_waits_for_retry_after_then_retries(server: LLMServer, provider: str) -> None:
    up = f"status;code=429;times=1;retry_after=3@{provider}"
    h = Harness(server.port, models(f"m={provider}:{up}"))
    events, terminal = await h.chat("m")
    assert isinstance(terminal, Finished) and terminal.result.attempts == 2
    assert h.sleeps == [3.0]  # Retry-After wins over the shorter backoff
    assert hits(server, up) == 2
    assert texts(events) == "Hello from the test server"


async def test_500_is_retried_with_backoff_then_falls_back_and_cools_down(
    server: LLMServer,
) -> None:
    h = Harness(
        server.port,
        models("bad=oa:status;code=500@a", "good=an:text"),
        extra='[router.groups]\nteam = ["bad", "good"]\n',
    )
    _, terminal = await h.chat("team")
    assert isinstance(terminal, Finished)
    assert terminal.result.model == "good" and terminal.result.attempts == 4
    assert hits(server, "status;code=500@a") == 3  # 1 + max_retries
    assert len(h.sleeps) == 2
    assert 0.25 <= h.sleeps[0] <= 0.5 and 0.5 <= h.sleeps[1] <= 1.0  # equal jitter
    # Three failures in a row: "bad" is cooling down, the next call skips it at once.
    assert h.router.cooldowns.cooling("bad") is not None
    _, terminal = await h.chat("team")
    assert isinstance(terminal, Finished) and terminal.result.attempts == 1
    assert hits(server, "status;code=500@a") == 3


async def test_cooldown_applies_to_a_single_model_too(server: LLMServer) -> None:
    h = Harness(server.port, models("only=oa:status;code=503@s"), retries=5)
    _, terminal = await h.chat("only")
    assert isinstance(terminal, Failed) and terminal.code == "provider_unavailable"
    assert hits(server, "status;code=503@s") == 3  # the cooldown threshold stops the retries
    _, terminal = await h.chat("only")
    assert isinstance(terminal, Failed) and terminal.code == "provider_unavailable"
    assert terminal.retry_after is not None and 29 < terminal.retry_after <= 30
    assert hits(server, "status;code=503@s") == 3


async def test_400_is_neither_retried_nor_fallen_back(server: LLMServer) -> None:
    h = Harness(
        server.port,
        models("bad=oa:status;code=400@b", "good=oa:text"),
        extra='[router.groups]\nteam = ["bad", "good"]\n',
    )
    _, terminal = await h.chat("team")
    assert isinstance(terminal, Failed) and terminal.code == "bad_request"
    assert "HTTP 400" in terminal.message
    assert hits(server, "status;code=400@b") == 1 and hits(server, "text") == 0
    assert h.sleeps == []


async def test_401_falls_back_at_once_and_cools_the_deployment(server: LLMServer) -> None:
    h = Harness(
        server.port,
        models("locked=an:status;code=401@k", "good=oa:text"),
        extra='[router.groups]\nteam = ["locked", "good"]\n',
    )
    _, terminal = await h.chat("team")
    assert isinstance(terminal, Finished) and terminal.result.model == "good"
    assert hits(server, "status;code=401@k") == 1 and h.sleeps == []
    assert h.router.cooldowns.cooling("locked") is not None


async def test_disconnect_mid_stream_ends_with_an_error_and_never_replays(
    server: LLMServer,
) -> None:
    h = Harness(
        server.port,
        models("cut=oa:disconnect;after=2", "good=oa:text@never"),
        extra='[router.groups]\nteam = ["cut", "good"]\n',
    )
    events, terminal = await h.chat("team")
    assert texts(events) == "Hello from"
    assert isinstance(terminal, Failed) and terminal.partial
    assert terminal.code == "provider_unavailable" and terminal.model == "cut"
    assert events[-1] == terminal
    assert hits(server, "disconnect;after=2") == 1  # no retry after output
    assert hits(server, "text@never") == 0  # and no fallback: text is never replayed
    assert h.memory.records and h.memory.records[0].estimated  # partial usage is recorded


async def test_disconnect_before_any_output_is_retried_then_falls_back(
    server: LLMServer,
) -> None:
    h = Harness(
        server.port,
        models("cut=an:disconnect;after=0", "good=oa:text"),
        extra='[router.groups]\nteam = ["cut", "good"]\n',
        retries=1,
    )
    events, terminal = await h.chat("team")
    assert isinstance(terminal, Finished) and terminal.result.model == "good"
    assert hits(server, "disconnect;after=0") == 2
    assert texts(events) == "Hello from the test server"


async def test_slow_first_token_times_out_and_falls_back(server: LLMServer) -> None:
    h = Harness(
        server.port,
        models("slow=oa:text;first=5", "good=an:text"),
        extra='[router.groups]\nteam = ["slow", "good"]\n',
        retries=0,
        first_token=0.3,
    )
    start = time.monotonic()
    _, terminal = await h.chat("team")
    assert isinstance(terminal, Finished) and terminal.result.model == "good"
    assert time.monotonic() - start < 3
    assert hits(server, "text;first=5") == 1


async def test_idle_stream_after_text_ends_with_timeout_error(server: LLMServer) -> None:
    h = Harness(server.port, models("m=oa:text;chunks=3;delay=5"), idle=0.3)
    events, terminal = await h.chat("m")
    assert texts(events) == "Hello"
    assert isinstance(terminal, Failed) and terminal.partial and terminal.code == "timeout"
    assert "idle timeout" in terminal.message


@pytest.mark.parametrize("provider", ["oa", "an"])
async def test_malformed_chunk_after_text_ends_with_error(server: LLMServer, provider: str) -> None:
    h = Harness(server.port, models(f"m={provider}:malformed;after=2"))
    events, terminal = await h.chat("m")
    assert texts(events) == "Hello from"
    assert isinstance(terminal, Failed) and terminal.partial
    assert "malformed" in terminal.message
    assert hits(server, "malformed;after=2") == 1


async def test_malformed_first_chunk_is_retried(server: LLMServer) -> None:
    h = Harness(
        server.port,
        models("m=oa:malformed;after=0", "good=oa:text"),
        extra='[router.groups]\nteam = ["m", "good"]\n',
        retries=1,
    )
    _, terminal = await h.chat("team")
    assert isinstance(terminal, Finished) and terminal.result.model == "good"
    assert hits(server, "malformed;after=0") == 2


@pytest.mark.parametrize("provider", ["oa", "an"])
async def test_error_event_mid_stream_ends_the_stream(server: LLMServer, provider: str) -> None:
    h = Harness(server.port, models(f"m={provider}:error;after=1"))
    events, terminal = await h.chat("m")
    assert texts(events) == "Hello"
    assert isinstance(terminal, Failed) and terminal.partial
    if provider == "an":
        assert "overloaded_error" in terminal.message


async def test_caller_closing_the_stream_stops_the_call(server: LLMServer) -> None:
    h = Harness(server.port, models("m=oa:text;chunks=50;delay=0.05"))
    events, _ = await h.chat("m", stop_after=2)
    assert texts(events).startswith("Hello from")  # two events, 50 ms apart upstream
    assert h.memory.records and h.memory.records[0].output_tokens > 0


async def test_prompt_over_the_context_window_is_refused_before_any_request(
    server: LLMServer,
) -> None:
    h = Harness(server.port, models("tiny=oa:text|context_window = 16"))
    _, terminal = await h.chat("tiny", content="word " * 200)
    assert isinstance(terminal, Failed) and terminal.code == "bad_request"
    assert "context window" in terminal.message
    assert server.requests == []


async def test_unknown_model_is_not_found(server: LLMServer) -> None:
    h = Harness(server.port, models("m=oa:text"))
    _, terminal = await h.chat("nope")
    assert isinstance(terminal, Failed) and terminal.code == "not_found"


# ----------------------------------------------------------------------------- coalescing


@pytest.mark.parametrize("provider", ["oa", "an"])
async def test_text_that_arrives_together_goes_out_as_fewer_events(
    server: LLMServer, provider: str
) -> None:
    h = Harness(server.port, models(f"m={provider}:text;chunks=20;burst=1"))
    events, terminal = await h.chat("m")
    deltas = [e for e in events if isinstance(e, TextDelta)]
    expected = "".join(WORDS[i % len(WORDS)] for i in range(20))
    assert texts(events) == expected
    assert 1 <= len(deltas) < 5  # one write upstream: a read or two here, not 20 events
    assert isinstance(terminal, Finished) and terminal.result.text == expected
    assert terminal.result.usage.output_tokens == 20


@pytest.mark.parametrize("provider", ["oa", "an"])
async def test_text_is_never_held_back_waiting_for_more(server: LLMServer, provider: str) -> None:
    h = Harness(server.port, models(f"m={provider}:text;chunks=3;delay=0.3"))
    arrivals: list[tuple[float, str]] = []
    send, receive = trio.open_memory_channel[object](64)

    async def consume() -> None:
        async with receive:
            async for event in receive:
                if isinstance(event, TextDelta):
                    arrivals.append((time.monotonic(), event.text))

    chat = Chat(
        tenant="t1",
        request_id="prompt",
        messages=[Message(role="user", content="Hi")],
        stream_to=send,
        model="m",
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        terminal = await h.router.chat(chat)
    assert isinstance(terminal, Finished)
    # Each word went out when it arrived, not with the next one 0.3 s later.
    assert [text for _, text in arrivals] == ["Hello", " from", " the"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert all(gap > 0.15 for gap in gaps), gaps


async def test_tool_call_fragments_that_arrive_together_are_merged(server: LLMServer) -> None:
    h = Harness(server.port, models("m=oa:tools;burst=1"))
    events, terminal = await h.chat("m", tools=[WEATHER])
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas == [
        ToolCallDelta(
            index=0,
            id="call_DdmO9pD3xa9XTPNJ32zg2hcA",
            name="get_weather",
            arguments='{"city":"Paris"}',
        )
    ]
    call = ToolCall(
        id="call_DdmO9pD3xa9XTPNJ32zg2hcA", name="get_weather", arguments='{"city":"Paris"}'
    )
    assert [e for e in events if isinstance(e, ToolCallDone)] == [ToolCallDone(index=0, call=call)]
    assert isinstance(terminal, Finished) and terminal.result.tool_calls == [call]


@pytest.mark.parametrize("provider", ["oa", "an"])
async def test_text_before_a_failure_in_the_same_read_still_goes_out(
    server: LLMServer, provider: str
) -> None:
    h = Harness(server.port, models(f"m={provider}:malformed;after=2;burst=1"))
    events, terminal = await h.chat("m")
    assert texts(events) == "Hello from"
    assert isinstance(terminal, Failed) and terminal.partial and "malformed" in terminal.message
    assert hits(server, "malformed;after=2;burst=1") == 1  # never replayed


@pytest.mark.parametrize("provider", ["oa", "an"])
@pytest.mark.parametrize("burst", ["1", "0"])
async def test_a_broken_end_after_the_streams_own_end_fails_nothing(
    server: LLMServer, provider: str, burst: str
) -> None:
    """The answer is whole at ``[DONE]`` / ``message_stop``: broken framing after it (read
    with the answer, or later in the background) costs the connection, not the answer."""
    h = Harness(server.port, models(f"m={provider}:text;burst={burst};badend=1"))
    for _ in range(2):  # the broken connection is not reused
        events, terminal = await h.chat("m")
        assert isinstance(terminal, Finished), terminal
        assert texts(events) == terminal.result.text == "".join(WORDS[:5])


async def test_disconnect_after_a_burst_ends_with_an_error_and_keeps_the_text(
    server: LLMServer,
) -> None:
    h = Harness(server.port, models("m=oa:disconnect;after=3;burst=1"))
    events, terminal = await h.chat("m")
    assert texts(events) == "Hello from the"
    assert isinstance(terminal, Failed) and terminal.partial


async def test_sink_merges_runs_in_order() -> None:
    send, receive = trio.open_memory_channel[object](64)
    sink = _Stream(channel_deliver(send))
    sink.text("a")
    sink.text("b")
    sink.tool_delta(7, id="c1", name="f", arguments="")
    sink.tool_delta(7, id=None, name=None, arguments='{"x"')
    sink.tool_delta(7, id=None, name=None, arguments=":1}")
    sink.tool_delta(9, id="c2", name="g", arguments="{}")
    sink.tool_delta(7, id=None, name=None, arguments="")  # empty: dropped
    sink.text("c")
    sink.tool_done(7)
    await sink.flush()
    await sink.flush()  # nothing queued: nothing sent
    send.close()
    got = [e async for e in receive]
    assert got == [
        TextDelta("ab"),
        ToolCallDelta(index=0, id="c1", name="f", arguments='{"x":1}'),
        ToolCallDelta(index=1, id="c2", name="g", arguments="{}"),
        TextDelta("c"),
        ToolCallDone(index=0, call=ToolCall(id="c1", name="f", arguments='{"x":1}')),
    ]
    assert sink.tool_calls()[0].arguments == '{"x":1}'


# ----------------------------------------------------------------------------- pieces


def test_sse_decoder_handles_split_crlf_comments_and_multiline_data() -> None:
    d = SSEDecoder()
    assert d.feed(b": comment\r\nevent: a\r") == []
    assert d.feed(b"\ndata: one\r\ndata: two\r\n\r") == []
    assert d.feed(b"\ndata:x\n\n") == [("a", "one\ntwo"), ("message", "x")]


_SSE_PIECES = [
    b'data: {"a":1}\n\n',
    b"event: x\ndata: y\n\n",
    b": comment\n",
    b"data:z\r\n\r\n",
    b"data: a\ndata: b\n\n",
    b"\n\n",
    b"event: e\n",
    b"data\n\n",
    b"id: 3\ndata: q\r\r",
    b"data: \xc3\xa9\n\n",
    b"data: t\n\n\n",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_SSE_PIECES), min_size=1, max_size=8),
    st.lists(st.integers(min_value=0, max_value=200), max_size=4),
)
def test_sse_decoder_gives_the_same_events_however_the_bytes_are_split(
    pieces: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(pieces) + b"\n\n"
    whole = SSEDecoder().feed(stream)
    d = SSEDecoder()
    got: list[tuple[str, str]] = []
    prev = 0
    for cut in [*sorted(c % (len(stream) + 1) for c in cuts), len(stream)]:
        got += d.feed(stream[prev:cut])
        prev = cut
    assert got == whole


async def test_watchdog_deadline_stays_within_slack_of_the_exact_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The watchdog moves its deadline lazily; it is never earlier than the exact rule
    (first token, then idle since the last activity, capped by total) nor later than
    ``slack`` after it."""
    import random

    rng = random.Random(5)
    for _ in range(300):
        first, idle, total = (rng.choice(v) for v in ([0.3, 2, 120], [0.3, 2, 60], [1, 10, 600]))
        timeouts = SimpleNamespace(
            first_token_timeout=first, idle_timeout=idle, total_timeout=total
        )
        scope = trio.CancelScope()  # never entered: only its deadline is looked at
        dog = _Watchdog(scope, timeouts)
        start = trio.current_time()
        got_token = False
        for at in sorted(rng.uniform(0, 5) for _ in range(rng.randint(0, 20))):
            autojump_clock.jump(max(0.0, start + at - trio.current_time()))
            now = trio.current_time()
            if rng.random() < 0.5:
                got_token = True
                dog.token()
            else:
                dog.activity()
            exact = min(now + idle, start + total)
            if not got_token:
                exact = min(exact, start + first)
            assert exact - 1e-9 <= scope.deadline <= exact + min(1.0, idle / 20) + 1e-9


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


def test_backoff_grows_exponentially_with_jitter_and_cap() -> None:
    import random

    b = Backoff(base=1.0, maximum=8.0, retry_after_max=20.0, rng=random.Random(1))
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        assert ceiling / 2 <= b.delay(attempt) <= ceiling
    assert b.delay(0, retry_after=60) == 20.0
