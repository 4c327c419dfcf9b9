"""A scripted model for orchestrator tests: an OpenAI-compatible chat-completions server (the
same byte-accurate SSE as ``tests/llm_server.py``) whose answers come from a Python function
of the request, so a test can script a whole team: who delegates, who calls which tool, what
the final answer is.

The script gets a ``Turn``: which agent is speaking (from its system prompt), the messages
so far and the tool results it has received; it returns a ``Reply`` (text, tool calls, how
slowly to stream). Every request is recorded with its start and end time, so a test can
assert that specialists worked at the same time.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from tests.llm_server import LLMServer, Stream, _chunk

AGENT_RE = re.compile(r"You are (?:Ali\b|the (?:data )?(\w+)\b|(\w+)\.)")


@dataclass
class Turn:
    agent: str
    messages: list[dict[str, Any]]
    tools: list[str]

    @property
    def tool_results(self) -> list[str]:
        return [m.get("content") or "" for m in self.messages if m["role"] == "tool"]

    @property
    def task(self) -> str:
        users = [m.get("content") or "" for m in self.messages if m["role"] == "user"]
        return users[-1] if users else ""


@dataclass
class Reply:
    text: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    chunks: int = 4
    delay: float = 0.0


@dataclass
class Span:
    agent: str
    start: float
    end: float = 0.0
    task: str = ""


#: Compact JSON, as ``_compact`` writes it but faster (this server shares the benchmarks'
#: CPU with the daemon they measure).
_encode = msgspec.json.Encoder().encode


def agent_of(messages: list[dict[str, Any]]) -> str:
    system = next((m.get("content") or "" for m in messages if m["role"] == "system"), "")
    match = AGENT_RE.search(system)
    if match is None:
        return "?"
    return (match.group(1) or match.group(2) or "ali").lower()


@dataclass
class ScriptServer(LLMServer):
    script: Callable[[Turn], Reply] = lambda turn: Reply(text="ok")
    spans: list[Span] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    async def _route(self, stream: Stream, method: str, path: str, body: Any) -> bool:
        if not (method == "POST" and path.endswith("/chat/completions")):
            return await super()._route(stream, method, path, body)
        messages = body.get("messages", [])
        turn = Turn(
            agent=agent_of(messages),
            messages=messages,
            tools=[t["function"]["name"] for t in body.get("tools", [])],
        )
        reply = self.script(turn)
        span = Span(turn.agent, time.monotonic(), task=turn.task)
        self.spans.append(span)
        # An answer without delays goes out in one write (a model that has it all at once;
        # and one send per event would make this server cost more CPU than the daemon it
        # is measured against); a paced one event by event.
        out = [
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        ]

        async def flush() -> None:
            data = b"".join(out)
            out.clear()
            await stream.send_all(data)

        prefix = {
            "id": "chatcmpl-script",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", "script"),
        }

        async def event(
            delta: dict[str, Any] | None,
            finish: str | None = None,
            usage: Any = None,
            choices: bool = True,
        ) -> None:
            obj = dict(prefix)
            obj["choices"] = (
                [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                if choices
                else []
            )
            obj["usage"] = usage
            out.append(_chunk(b"data: " + _encode(obj) + b"\n\n"))
            if reply.delay:
                await flush()

        await event({"role": "assistant", "content": ""})
        if reply.text:
            words = reply.text.split(" ")
            per = max(1, len(words) // max(1, reply.chunks))
            for i in range(0, len(words), per):
                piece = " ".join(words[i : i + per])
                await event({"content": piece if i == 0 else " " + piece})
                if reply.delay:
                    await trio.sleep(reply.delay)
        for index, (name, args) in enumerate(reply.calls):
            call_id = f"call_{next(self._ids)}"
            text = json.dumps(args)
            await event(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            half = len(text) // 2
            for piece in (text[:half], text[half:]):
                await event({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        await event({}, "tool_calls" if reply.calls else "stop")
        prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 10
        completion = len(reply.text) // 4 + 5 * len(reply.calls) + 1
        await event(
            None,
            usage={
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
            choices=False,
        )
        out.append(_chunk(b"data: [DONE]\n\n"))
        out.append(_chunk(b""))
        await flush()
        span.end = time.monotonic()
        return True


def router_config(port: int, *, tools: bool = True, extra: str = "") -> str:
    return f"""
[router]
default = "script"
max_retries = 0

[router.providers.test]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"

[router.models.script]
provider = "test"
upstream = "script"
context_window = 200000
input_price = 1.0
output_price = 2.0
tools = {"true" if tools else "false"}
{extra}
"""
