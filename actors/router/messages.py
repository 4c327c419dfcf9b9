"""The router actor's messages: the contract the orchestrator and the ops code against.

A model call is one ``Chat`` message carrying the send half of a Trio memory channel
(``stream_to``). The router streams ``ChatEvent`` values into it — text deltas, tool-call
fragments, complete tool calls, usage — and always ends with exactly one terminal event,
``Finished`` or ``Failed``, then closes the channel. The same terminal value is the reply to
the ``ask``. Expected failures are values (``Failed`` with a protocol error code), never
exceptions, so a failing provider never crashes the router. Use ``open_chat`` in
``convergiod.actors.router.client`` rather than wiring this by hand.

Everything here is a msgspec Struct except ``Chat.stream_to`` (an in-process channel): an
out-of-process transport would carry the events as frames instead.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A complete tool call of the model: ``arguments`` is the JSON text of its input."""

    id: str
    name: str
    arguments: str


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the conversation, in a provider-neutral shape.

    An assistant turn that called tools carries ``tool_calls``; the answer to a call is a
    ``tool`` message with its ``tool_call_id``. Providers translate (Anthropic: ``system``
    goes to the top level, tool results become ``tool_result`` blocks of a user turn).
    """

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A tool the model may call: ``parameters`` is a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = {}


# ----------------------------------------------------------------------------- stream events


class TextDelta(msgspec.Struct, frozen=True, tag="text"):
    text: str


class ToolCallDelta(msgspec.Struct, frozen=True, kw_only=True, tag="tool_call_delta"):
    """A fragment of tool call number ``index``: ``id``/``name`` on the first fragment,
    then pieces of the JSON ``arguments`` text in order."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class ToolCallDone(msgspec.Struct, frozen=True, kw_only=True, tag="tool_call"):
    """Tool call number ``index`` is complete."""

    index: int
    call: ToolCall


class Usage(msgspec.Struct, frozen=True, kw_only=True, tag="usage"):
    """Tokens and cost of the call; ``estimated`` when the provider reported none."""

    model: str
    provider: str
    input_tokens: int
    output_tokens: int
    cost: float
    estimated: bool = False


class ChatResult(msgspec.Struct, frozen=True, kw_only=True):
    """The whole answer, assembled."""

    model: str
    provider: str
    text: str
    tool_calls: list[ToolCall]
    finish_reason: str
    usage: Usage
    attempts: int = 1
    downgraded: bool = False


class Finished(msgspec.Struct, frozen=True, tag="finished"):
    """Terminal: the call succeeded."""

    result: ChatResult


class Failed(msgspec.Struct, frozen=True, kw_only=True, tag="failed"):
    """Terminal: the call failed. ``partial`` is True when some output had already been
    streamed (it is never replayed); ``code`` is a protocol error code."""

    code: str
    message: str
    retry_after: float | None = None
    partial: bool = False
    model: str | None = None


ChatEvent = TextDelta | ToolCallDelta | ToolCallDone | Usage | Finished | Failed
Terminal = Finished | Failed


# ----------------------------------------------------------------------------- requests


class Chat(msgspec.Struct, kw_only=True):
    """Call a model and stream the answer into ``stream_to``; the reply is ``Terminal``.

    ``model`` names a model or a group; None uses the agent's preference
    (``[router.agents]``), then ``router.default``, then the embedded model.
    ``request_id`` makes usage recording idempotent: retries and fallbacks inside the
    router, and a repeated ``Chat`` with the same id, are counted once.
    """

    tenant: str
    request_id: str
    messages: list[Message]
    stream_to: Any  # trio.MemorySendChannel[ChatEvent]; the router closes it
    agent: str | None = None
    model: str | None = None
    tools: list[ToolSpec] = []
    max_tokens: int | None = None
    temperature: float | None = None
    task: str | None = None


class ChatSlot(msgspec.Struct, frozen=True):
    """``ask_now`` only: a ``ChatLease`` (``convergiod.actors.router.core``) to run one call
    on the asker's task, or ``NOT_NOW`` when the router is at its concurrency (then send a
    ``Chat``). Use ``client.run_chat``, which does both."""


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    provider: str
    kind: str
    upstream: str
    context_window: int
    input_price: float
    output_price: float
    tools: bool
    groups: list[str]
    default: bool
    available: bool
    reachable: bool | None = None
    detail: str = ""
    cooldown_until: float | None = None
    failures: int = 0


class ModelList(msgspec.Struct, frozen=True, kw_only=True):
    default: str
    models: list[ModelInfo]


class ListModels(msgspec.Struct, frozen=True, kw_only=True):
    """Configured models with cooldown state; ``probe`` also checks reachability
    (a ``GET /models`` per provider). Reply: ``ModelList``."""

    probe: bool = False


class BudgetLine(msgspec.Struct, frozen=True, kw_only=True):
    scope: str  # "tenant" or "agent:<name>"
    limit: float  # per day; 0 = none
    spent: float
    fraction: float
    state: Literal["ok", "warn", "downgrade", "block", "none"]


class BudgetShow(msgspec.Struct, frozen=True, kw_only=True):
    """Today's budgets of ``tenant`` with what was spent: ``list[BudgetLine]``."""

    tenant: str


class BudgetSet(msgspec.Struct, frozen=True, kw_only=True):
    """Set a daily limit (0 removes it) for the tenant or one agent; persisted in the data
    directory, overriding the config. Reply: ``BudgetLine``."""

    tenant: str
    limit: float
    agent: str | None = None


RouterMessage = Chat | ListModels | BudgetShow | BudgetSet
