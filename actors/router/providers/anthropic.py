"""Anthropic messages API, streamed as server-sent events.

The sequence: ``message_start`` (with input token usage), then per content block
``content_block_start`` (``text`` or ``tool_use`` with id and name), ``content_block_delta``
(``text_delta`` or ``input_json_delta`` with ``partial_json``), ``content_block_stop``; then
``message_delta`` (``stop_reason``, cumulative output usage) and ``message_stop``. ``ping``
events may appear anywhere; an ``error`` event (e.g. ``overloaded_error``) may arrive
mid-stream. ``max_tokens`` is required; the ``anthropic-version`` header is sent.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from convergiod.actors.router.http import HttpClient
from convergiod.actors.router.identity import IdentityCache
from convergiod.actors.router.messages import Message, ToolSpec
from convergiod.actors.router.reliability import ProviderError
from convergiod.config import RouterProviderConfig

from .base import Outcome, ProviderRequest, Sink, api_key
from .sse_http import post_sse

__all__ = ["AnthropicProvider", "to_anthropic"]


class _Event(msgspec.Struct):
    type: str
    index: int = 0
    message: dict[str, Any] | None = None
    content_block: dict[str, Any] | None = None
    delta: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


_decode_event = msgspec.json.Decoder(_Event).decode

_STOP_REASONS = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def to_anthropic(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, messages): tool results become ``tool_result`` blocks of a user
    turn; consecutive ones share a turn, as the API requires alternating roles."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.content)
            continue
        if m.role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id or "",
                "content": m.content,
            }
            last = out[-1] if out else None
            if last and last["role"] == "user" and isinstance(last["content"], list):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if m.role == "assistant" and m.tool_calls:
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            for c in m.tool_calls:
                try:
                    args = json.loads(c.arguments) if c.arguments else {}
                except ValueError:
                    args = {}
                blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": args})
            out.append({"role": "assistant", "content": blocks})
            continue
        out.append({"role": m.role, "content": m.content})
    return "\n\n".join(system), out


def _tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "description": t.description,
            "input_schema": t.parameters or {"type": "object", "properties": {}},
        }
        for t in tools
    ]


#: The tools' JSON for this API, made once per tool list (an agent offers the same list
#: object on every turn); shared: callers only encode it.
_tools_body = IdentityCache(_tools, limit=256)


class AnthropicProvider:
    def __init__(self, name: str, config: RouterProviderConfig, client: HttpClient) -> None:
        self.name = name
        self.config = config
        self.client = client
        self.url = (config.base_url or "https://api.anthropic.com/v1").rstrip("/") + "/messages"

    async def stream(self, request: ProviderRequest, sink: Sink) -> Outcome:
        system, messages = to_anthropic(request.messages)
        body: dict[str, Any] = {
            "model": request.upstream,
            "max_tokens": request.max_tokens,
            "messages": messages,
            "stream": True,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.tools:
            body["tools"] = _tools_body(request.tools)
        headers = [
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            ("anthropic-version", self.config.anthropic_version),
        ]
        key = api_key(self.config.api_key_env)
        if key:
            headers.append(("x-api-key", key))
        headers.extend(self.config.headers.items())
        outcome = Outcome()
        tool_blocks: set[int] = set()
        state = {"done": False}

        def on_event(name: str, data: str) -> bool:
            try:
                ev = _decode_event(data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise ProviderError(f"{self.name}: malformed event: {exc}") from None
            kind = ev.type
            if kind == "content_block_delta":
                delta = ev.delta or {}
                dtype = delta.get("type")
                if dtype == "text_delta":
                    text = delta.get("text") or ""
                    if text:
                        sink.text(text)
                elif dtype == "input_json_delta":
                    sink.tool_delta(
                        ev.index, id=None, name=None, arguments=delta.get("partial_json") or ""
                    )
            elif kind == "content_block_start":
                block = ev.content_block or {}
                if block.get("type") == "tool_use":
                    tool_blocks.add(ev.index)
                    sink.tool_delta(
                        ev.index, id=block.get("id"), name=block.get("name"), arguments=""
                    )
                elif block.get("type") == "text" and block.get("text"):
                    sink.text(block["text"])
            elif kind == "content_block_stop":
                if ev.index in tool_blocks:
                    tool_blocks.discard(ev.index)
                    sink.tool_done(ev.index)
            elif kind == "message_start":
                usage = (ev.message or {}).get("usage") or {}
                if "input_tokens" in usage:
                    outcome.input_tokens = _input_tokens(usage)
                if "output_tokens" in usage:
                    outcome.output_tokens = int(usage["output_tokens"])
            elif kind == "message_delta":
                delta = ev.delta or {}
                reason = delta.get("stop_reason")
                if reason:
                    outcome.finish_reason = _STOP_REASONS.get(reason, reason)
                usage = ev.usage or {}
                if "output_tokens" in usage:
                    outcome.output_tokens = int(usage["output_tokens"])
                if usage.get("input_tokens") is not None:
                    outcome.input_tokens = _input_tokens(usage)
            elif kind == "message_stop":
                state["done"] = True
                return True
            elif kind == "error":
                err = ev.error or {}
                etype = str(err.get("type") or "error")
                message = f"{self.name}: {etype}: {err.get('message') or ''}".rstrip(": ")
                if etype == "invalid_request_error":
                    raise ProviderError(
                        message, retryable=False, fallback=False, code="bad_request"
                    )
                raise ProviderError(message)
            # "ping" and unknown event types are ignored, as the API asks
            return False

        await post_sse(self.client, self.url, headers, body, self.config, self.name, sink, on_event)
        if not state["done"]:
            raise ProviderError(f"{self.name}: the stream ended without message_stop")
        return outcome


def _input_tokens(usage: dict[str, Any]) -> int:
    return int(
        (usage.get("input_tokens") or 0)
        + (usage.get("cache_creation_input_tokens") or 0)
        + (usage.get("cache_read_input_tokens") or 0)
    )
