"""Shared by the router tests: a router wired to the local LLM test server, with recorded
sleeps (no real backoff waits) and a fake memory ledger."""

from __future__ import annotations

import random
from typing import Any

import trio

from convergiod.actors.memory.messages import RecordUsage, Spent, UsageQuery
from convergiod.actors.router.core import Router
from convergiod.actors.router.ledger import InProcessLedger, Ledger
from convergiod.actors.router.messages import Chat, ChatEvent, Message, Terminal, ToolSpec
from convergiod.config import parse

BASE = """
[router]
max_retries = {retries}
backoff_base = 0.5
backoff_max = 4.0
cooldown_failures = 3
cooldown = 30.0

[router.providers.oa]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
api_key_env = "CVG_TEST_OPENAI_KEY"
first_token_timeout = {first_token}
idle_timeout = {idle}
total_timeout = 10.0

[router.providers.an]
kind = "anthropic"
base_url = "http://127.0.0.1:{port}/v1"
api_key_env = "CVG_TEST_ANTHROPIC_KEY"
first_token_timeout = {first_token}
idle_timeout = {idle}
total_timeout = 10.0
"""


def models(*specs: str) -> str:
    """``"name=provider:upstream[:key=value,...]"`` -> TOML model tables."""
    out = []
    for spec in specs:
        name, _, rest = spec.partition("=")
        provider, _, rest = rest.partition(":")
        upstream, _, fields = rest.partition("|")
        out.append(f'[router.models."{name}"]\nprovider = "{provider}"\nupstream = "{upstream}"')
        for field in filter(None, fields.split(",")):
            out.append(field)
    return "\n".join(out) + "\n"


class FakeMemory:
    """The memory actor's ledger contract: RecordUsage idempotent by request id, Spent."""

    def __init__(self, spent: float = 0.0) -> None:
        self.ledger = InProcessLedger()
        self.base_spent = spent
        self.records: list[RecordUsage] = []

    async def ask(self, msg: Any) -> Any:
        await trio.lowlevel.checkpoint()
        if isinstance(msg, RecordUsage):
            self.records.append(msg)
            return self.ledger.record(msg)
        if isinstance(msg, Spent):
            return self.base_spent + self.ledger.spent(msg.tenant, msg.agent, msg.since or 0)
        if isinstance(msg, UsageQuery):
            return self.ledger.query(msg)
        raise TypeError(msg)


class Harness:
    def __init__(
        self,
        port: int,
        models: str,
        *,
        retries: int = 2,
        first_token: float = 2.0,
        idle: float = 2.0,
        memory: FakeMemory | None = None,
        extra: str = "",
    ) -> None:
        text = BASE.format(port=port, retries=retries, first_token=first_token, idle=idle)
        self.config = parse((text + models + extra).encode()).router
        self.sleeps: list[float] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.memory = memory or FakeMemory()
        self.router = Router(
            self.config,
            ledger=Ledger(self.memory.ask),
            publish=lambda topic, data: self.events.append((topic, data)),
            rng=random.Random(7),
            sleep=self._sleep,
        )
        self._ids = 0

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await trio.lowlevel.checkpoint()

    async def chat(
        self,
        target: str | None,
        *,
        content: str = "Hi",
        tools: list[ToolSpec] | None = None,
        agent: str | None = None,
        request_id: str | None = None,
        messages: list[Message] | None = None,
        stop_after: int | None = None,
    ) -> tuple[list[ChatEvent], Terminal]:
        """Run one call; ``stop_after`` closes the stream after that many events."""
        self._ids += 1
        send, receive = trio.open_memory_channel[ChatEvent](64)
        chat = Chat(
            tenant="t1",
            request_id=request_id or f"req-{self._ids}",
            messages=messages or [Message(role="user", content=content)],
            stream_to=send,
            agent=agent,
            model=target,
            tools=tools or [],
        )
        events: list[ChatEvent] = []
        result: list[Terminal] = []

        async def run() -> None:
            result.append(await self.router.chat(chat))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                async with receive:
                    async for event in receive:
                        events.append(event)
                        if stop_after is not None and len(events) >= stop_after:
                            break
        return events, result[0]
