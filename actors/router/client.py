"""How callers use the router: ``open_chat`` streams one model call.

::

    from convergiod.actors.router.client import open_chat
    from convergiod.actors.router.messages import Message, TextDelta, Finished, Failed

    async with open_chat(
        system.ref("router"),
        tenant="local",
        request_id="task-7/step-3",
        messages=[Message(role="user", content="Hello")],
        agent="chief",
    ) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                print(event.text, end="")
    terminal = events.terminal   # Finished(result) or Failed(code, message, ...)

The call is sent with ``tell`` (back-pressure when the router's mailbox is full), not ``ask``:
the terminal event travels on the channel, so nothing waits for the router's bookkeeping
after the answer. Leaving the block early closes the channel, which stops the upstream call.
If the router dies mid-call the channel closes without a terminal event, and the stream
ends with ``Failed(code="unavailable")``.
"""

from __future__ import annotations

from typing import Any

import trio

from convergiod.actors.router.messages import (
    Chat,
    ChatEvent,
    Failed,
    Finished,
    Message,
    Terminal,
    TextDelta,
    ToolSpec,
)

__all__ = ["ChatStream", "open_chat"]


class ChatStream:
    """Async iterator over a call's events; the terminal event is yielded last and kept in
    ``terminal``."""

    def __init__(self, receive: trio.MemoryReceiveChannel[ChatEvent]) -> None:
        self._receive = receive
        self._peeked: ChatEvent | None = None
        self.terminal: Terminal | None = None

    def __aiter__(self) -> ChatStream:
        return self

    def take_text(self) -> str:
        """The text of the ``TextDelta`` events already waiting, joined, without blocking:
        lets a caller that forwards text over a network send one frame for many deltas."""
        parts: list[str] = []
        while self._peeked is None:
            try:
                event = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if type(event) is TextDelta:
                parts.append(event.text)
            else:
                self._peeked = event
        return "".join(parts)

    async def __anext__(self) -> ChatEvent:
        if self.terminal is not None:
            raise StopAsyncIteration
        event: ChatEvent
        try:
            if self._peeked is not None:
                event, self._peeked = self._peeked, None
            else:
                event = await self._receive.receive()
        except trio.EndOfChannel:
            self.terminal = Failed(code="unavailable", message="the router stopped mid-call")
            return self.terminal
        if isinstance(event, (Finished, Failed)):
            self.terminal = event
        return event


def open_chat(
    router: Any,
    *,
    tenant: str,
    request_id: str,
    messages: list[Message],
    agent: str | None = None,
    model: str | None = None,
    tools: list[ToolSpec] | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    task: str | None = None,
    buffer: int = 64,
) -> _OpenChat:
    """Start a call on ``router`` (an ``ActorRef``): ``async with open_chat(...) as events``
    yields its event stream; leaving the block closes it (and stops the call)."""
    send, receive = trio.open_memory_channel[ChatEvent](buffer)
    chat = Chat(
        tenant=tenant,
        request_id=request_id,
        messages=messages,
        stream_to=send,
        agent=agent,
        model=model,
        tools=tools or [],
        max_tokens=max_tokens,
        temperature=temperature,
        task=task,
    )
    return _OpenChat(router, chat, receive)


class _OpenChat:
    """The context manager of ``open_chat`` (a plain class: it is on every call's path)."""

    __slots__ = ("_chat", "_receive", "_router")

    def __init__(
        self, router: Any, chat: Chat, receive: trio.MemoryReceiveChannel[ChatEvent]
    ) -> None:
        self._router = router
        self._chat = chat
        self._receive = receive

    async def __aenter__(self) -> ChatStream:
        try:
            await self._router.tell(self._chat)
        except BaseException:
            self._chat.stream_to.close()
            self._receive.close()
            raise
        return ChatStream(self._receive)

    async def __aexit__(self, *exc_info: object) -> None:
        self._receive.close()
