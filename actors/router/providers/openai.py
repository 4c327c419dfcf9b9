"""OpenAI-compatible chat completions (OpenAI, OpenRouter, Ollama ``/v1``, vLLM, LM Studio,
llama.cpp server), streamed as server-sent events.

Each ``data:`` line is a ``chat.completion.chunk``; text arrives in ``choices[0].delta.content``,
tool calls as ``delta.tool_calls`` fragments merged by their ``index`` (``id`` and
``function.name`` on the first fragment, ``function.arguments`` pieces after), the finish
reason on the last choice chunk, and — because we send ``stream_options.include_usage`` — a
final chunk with empty ``choices`` and ``usage``. The stream ends with ``data: [DONE]``. A
chunk carrying ``error`` (vLLM and others do this mid-stream) is a provider failure.
"""

from __future__ import annotations

from typing import Any

import msgspec

from convergiod.actors.router.http import HttpClient
from convergiod.actors.router.identity import IdentityCache
from convergiod.actors.router.messages import Message, ToolSpec
from convergiod.actors.router.reliability import ProviderError
from convergiod.config import RouterProviderConfig

from .base import Outcome, ProviderRequest, Sink, api_key
from .sse_http import post_sse

__all__ = ["OpenAIProvider", "to_openai_messages"]


class _Fn(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Fn | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolDelta] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


def to_openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": m.content or None,
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments},
                        }
                        for c in m.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def _tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters or {"type": "object", "properties": {}},
            },
        }
        for t in tools
    ]


#: The tools' JSON for this API, made once per tool list (an agent offers the same list
#: object on every turn); shared: callers only encode it.
_tools_body = IdentityCache(_tools, limit=256)


class OpenAIProvider:
    def __init__(self, name: str, config: RouterProviderConfig, client: HttpClient) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.url = config.base_url.rstrip("/") + "/chat/completions"

    async def stream(self, request: ProviderRequest, sink: Sink) -> Outcome:
        body: dict[str, Any] = {
            "model": request.upstream,
            "messages": to_openai_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.tools:
            body["tools"] = _tools_body(request.tools)
        headers = [("content-type", "application/json"), ("accept", "text/event-stream")]
        key = api_key(self.config.api_key_env)
        if key:
            headers.append(("authorization", f"Bearer {key}"))
        headers.extend(self.config.headers.items())
        outcome = Outcome()
        open_tools: set[int] = set()
        state = {"done": False}

        def on_event(event: str, data: str) -> bool:
            if data == "[DONE]":
                state["done"] = True
                return True
            try:
                chunk = _decode_chunk(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProviderError(f"{self.name}: malformed chunk: {exc}") from None
            if chunk.error is not None:
                raise ProviderError(f"{self.name}: error in stream: {_error_text(chunk.error)}")
            if chunk.usage is not None:
                outcome.input_tokens = chunk.usage.prompt_tokens
                outcome.output_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices or ():
                if choice.index != 0:
                    continue
                delta = choice.delta
                if delta is not None:
                    if delta.content:
                        sink.text(delta.content)
                    for tc in delta.tool_calls or ():
                        open_tools.add(tc.index)
                        fn = tc.function
                        sink.tool_delta(
                            tc.index,
                            id=tc.id,
                            name=fn.name if fn else None,
                            arguments=(fn.arguments or "") if fn else "",
                        )
                if choice.finish_reason:
                    outcome.finish_reason = choice.finish_reason
                    for index in sorted(open_tools):
                        sink.tool_done(index)
                    open_tools.clear()
            return False

        await post_sse(self.client, self.url, headers, body, self.config, self.name, sink, on_event)
        if not state["done"]:
            raise ProviderError(f"{self.name}: the stream ended without [DONE]")
        for index in sorted(open_tools):
            sink.tool_done(index)
        return outcome  # what is still queued on ``sink`` goes out with the call's end


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
