"""``run_chat``: a model call on the caller's own task (no worker, no channel), the
concurrency bound it shares with the mailbox path, cancellation, usage; and the merging of
output that arrived while the previous read was being handled."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from convergiod.actors.router.actor import RouterActor
from convergiod.actors.router.client import run_chat
from convergiod.actors.router.core import ClientGone, _Stream
from convergiod.actors.router.messages import (
    Chat,
    ChatEvent,
    Failed,
    Finished,
    Message,
    TextDelta,
    Usage,
)
from convergiod.actors.router.providers.base import ProviderRequest
from convergiod.actors.router.providers.openai import OpenAIProvider
from convergiod.runtime import ChildSpec, SupervisorSpec, open_actor_system
from tests.llm_server import LLMServer
from tests.router_helpers import Harness, models

HI = [Message(role="user", content="Hi")]


@pytest.fixture
async def server(nursery: trio.Nursery) -> LLMServer:
    s = LLMServer()
    await nursery.start(s.serve)
    return s


class CountingRouter(RouterActor):
    """Counts the ``Chat`` messages its workers handle (the mailbox path)."""

    mailbox_chats = 0

    async def handle(self, msg: Any) -> Any:
        if type(msg) is Chat:
            CountingRouter.mailbox_chats += 1
        return await super().handle(msg)


def spec(h: Harness) -> SupervisorSpec:
    CountingRouter.mailbox_chats = 0
    start = lambda: CountingRouter(h.config, router=h.router)  # noqa: E731
    return SupervisorSpec(name="root", children=[ChildSpec(name="router", start=start)])


async def recorded(h: Harness, request_id: str) -> Any:
    """The usage record of ``request_id`` once the router has written it (polled)."""
    with trio.fail_after(5):
        while True:
            for r in h.memory.records:
                if r.request_id == request_id:
                    return r
            await trio.sleep(0.005)


async def test_a_call_runs_on_the_callers_task_and_is_accounted(server: LLMServer) -> None:
    h = Harness(server.port, models("m=oa:text;chunks=4"))
    events: list[ChatEvent] = []

    async def on_event(event: ChatEvent) -> None:
        events.append(event)

    async with open_actor_system(spec(h)) as system:
        with trio.fail_after(10):
            terminal = await run_chat(
                system.ref("router"), on_event, tenant="t1", request_id="r1", messages=HI, model="m"
            )
        assert isinstance(terminal, Finished)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == terminal.result.text
        assert isinstance(events[-1], Usage) and events[-1].output_tokens == 4
        assert CountingRouter.mailbox_chats == 0  # no worker ran it
        record = await recorded(h, "r1")
        assert record.output_tokens == 4 and not record.estimated
        assert h.router.slots.value == 512  # the place was given back


async def test_past_the_bound_calls_wait_in_the_mailbox(server: LLMServer) -> None:
    h = Harness(server.port, models("slow=oa:text;chunks=3;delay=0.1", "m=oa:text;chunks=2"))
    h.router.slots = trio.Semaphore(1)
    order: list[str] = []
    first_token = trio.Event()

    async def on_slow(event: ChatEvent) -> None:
        first_token.set()

    async def on_fast(event: ChatEvent) -> None:
        pass

    async with open_actor_system(spec(h)) as system:
        ref = system.ref("router")

        async def slow() -> None:
            t = await run_chat(ref, on_slow, tenant="t1", request_id="a", messages=HI, model="slow")
            assert isinstance(t, Finished)
            order.append("slow")

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                await first_token.wait()
                t = await run_chat(
                    ref, on_fast, tenant="t1", request_id="b", messages=HI, model="m"
                )
                assert isinstance(t, Finished)
                order.append("fast")
        assert order == ["slow", "fast"]  # the second waited for the only place
        assert CountingRouter.mailbox_chats == 1
        assert h.router.slots.value == 1


async def test_cancelling_the_caller_stops_the_call_and_counts_what_streamed(
    server: LLMServer,
) -> None:
    h = Harness(server.port, models("slow=oa:text;chunks=5;delay=0.2"))
    got: list[ChatEvent] = []

    async with open_actor_system(spec(h)) as system:
        with trio.fail_after(10):
            with trio.CancelScope() as scope:

                async def on_event(event: ChatEvent) -> None:
                    got.append(event)
                    scope.cancel()

                await run_chat(
                    system.ref("router"),
                    on_event,
                    tenant="t1",
                    request_id="c",
                    messages=HI,
                    model="slow",
                )
            assert scope.cancelled_caught
            record = await recorded(h, "c")
        assert record.estimated and record.output_tokens > 0
        assert len(got) == 1
        assert h.router.slots.value == 512


async def test_a_callback_that_gives_up_ends_the_call_cancelled(server: LLMServer) -> None:
    h = Harness(server.port, models("slow=oa:text;chunks=5;delay=0.1"))

    async def on_event(event: ChatEvent) -> None:
        raise ClientGone()

    async with open_actor_system(spec(h)) as system:
        with trio.fail_after(10):
            terminal = await run_chat(
                system.ref("router"),
                on_event,
                tenant="t1",
                request_id="d",
                messages=HI,
                model="slow",
            )
        assert isinstance(terminal, Failed) and terminal.code == "cancelled"
        assert (await recorded(h, "d")).estimated


# ----------------------------------------------------------------------------- merging reads


class _Response:
    """A response whose body pieces all "have arrived": ``receive_nowait`` hands them out."""

    status = 200

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def receive(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.pieces.pop(0) if self.pieces else b""

    def receive_nowait(self) -> bytes | None:
        return self.pieces.pop(0) if self.pieces else None


class _Client:
    def __init__(self, response: _Response) -> None:
        self.response = response

    def request(self, *args: object, **kwargs: object) -> _Client:
        return self

    async def __aenter__(self) -> _Response:
        return self.response

    async def __aexit__(self, *exc: object) -> None:
        pass


async def test_output_that_already_arrived_goes_out_together_first_token_alone() -> None:
    h = Harness(1, models("m=oa:text"))
    words = [f"w{i} " for i in range(40)]
    pieces = [
        b'data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % w.encode() for w in words
    ]
    pieces.append(b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":40}}\n\n')
    pieces.append(b"data: [DONE]\n\n")
    provider = OpenAIProvider("oa", h.config.providers["oa"], _Client(_Response(pieces)))  # type: ignore[arg-type]
    out: list[Any] = []

    async def deliver(event: Any) -> None:
        out.append(event)

    request = ProviderRequest(upstream="x", messages=HI, tools=[], max_tokens=10, temperature=None)
    sink = _Stream(deliver)
    outcome = await provider.stream(request, sink)
    await sink.flush()  # the batch that came with the end goes out with the call's end
    texts = [e.text for e in out]
    assert "".join(texts) == "".join(words)  # nothing lost at a merge's bound
    assert texts[0] == "w0 "  # the first token did not wait for the rest
    assert 2 < len(texts) < len(words)  # the rest in a few bounded batches
    assert outcome.output_tokens == 40
