"""The memory actor's messages: the contract every other actor codes against.

msgspec Structs, so the same messages can cross a process boundary. Every message names its
tenant: one SQLite database per tenant. A handler answers with the Struct named in each
docstring, or raises ``convergiod.errors.OpError`` with a protocol error code.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class _Msg(msgspec.Struct, kw_only=True):
    tenant: str


# ----------------------------------------------------------------------------- facts


class Remember(_Msg):
    """Store a fact; answered with ``Fact`` once committed. ``supersedes`` closes the
    validity of an older fact (sets its ``valid_to``) instead of erasing it."""

    text: str
    kind: str = "note"
    source: str = "user"
    importance: float = 0.5
    conversation: str | None = None
    supersedes: int | None = None


class Fact(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    text: str
    kind: str
    source: str
    importance: float
    conversation: str | None
    valid_from: float
    valid_to: float | None
    access_count: int = 0


class Search(_Msg):
    """Hybrid search (FTS5 bm25 + vector, fused by reciprocal rank fusion); answered with
    ``list[Hit]`` best first. ``at`` restricts to facts valid at that time (default: now)."""

    query: str
    limit: int = 10
    kind: str | None = None
    conversation: str | None = None
    at: float | None = None


class Hit(msgspec.Struct, frozen=True, kw_only=True):
    fact: Fact
    score: float
    keyword_rank: int | None = None
    vector_rank: int | None = None


class Forget(_Msg):
    """Delete a fact; answered with ``bool`` (False when there was no such fact)."""

    id: int


# ----------------------------------------------------------------------------- conversations


class AppendMessage(_Msg):
    """Append a message to a conversation (created on first use); answered with its id."""

    conversation: str
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    agent: str | None = None
    tokens: int = 0
    cost: float = 0.0
    parent: int | None = None


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    conversation: str
    role: str
    content: str
    agent: str | None
    tokens: int
    cost: float
    parent: int | None
    created: float


class History(_Msg):
    """The last ``limit`` messages of a conversation, oldest first: ``list[StoredMessage]``."""

    conversation: str
    limit: int = 50


# ----------------------------------------------------------------------------- usage ledger


class RecordUsage(_Msg):
    """One model call in the ledger. Idempotent by ``request_id``: answered with ``True`` when
    recorded, ``False`` when that request id was already counted."""

    request_id: str
    model: str
    provider: str
    agent: str | None = None
    task: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    estimated: bool = False
    time: float | None = None


class UsageQuery(_Msg):
    """Totals grouped by agent, model or day since ``since``: ``list[UsageRow]``."""

    by: Literal["agent", "model", "day"] = "day"
    since: float | None = None


class UsageRow(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


class Spent(_Msg):
    """Cost spent since ``since`` (default: the start of today, local time), optionally for one
    agent: answered with ``float``."""

    agent: str | None = None
    since: float | None = None


# ----------------------------------------------------------------------------- approvals


class LookupApproval(_Msg):
    """A remembered ``always`` approval for this tool and key: answered with ``bool``."""

    tool: str
    key: str


class RememberApproval(_Msg):
    """Remember that the user approved ``tool`` for ``key`` ``always``; answered with None."""

    tool: str
    key: str


# ----------------------------------------------------------------------------- task checkpoints


class SaveTask(_Msg):
    """Create or update a task record (status: running, done, failed, interrupted, cancelled);
    answered with None. With ``message`` (of the same tenant), that message is appended to
    its conversation in the same write: both or neither."""

    task: str
    status: str
    request: str
    agent: str
    conversation: str | None = None
    result: str | None = None
    message: AppendMessage | None = None


class SaveStep(_Msg):
    """Checkpoint one completed step of a task (a model turn or a tool result). ``step`` is
    unique per task: saving the same step twice keeps the first. Answered with ``bool``."""

    task: str
    step: str
    kind: Literal["model", "tool", "delegation", "final"]
    payload: bytes


class SaveSteps(_Msg):
    """Checkpoint several completed steps of a task at once, in order (one write: all or
    none), with ``SaveStep``'s rule for a step saved twice. Answered with ``list[bool]``."""

    task: str
    steps: list[tuple[str, Literal["model", "tool", "delegation", "final"], bytes]]


class TaskRecord(msgspec.Struct, frozen=True, kw_only=True):
    task: str
    status: str
    request: str
    agent: str
    conversation: str | None
    result: str | None
    created: float
    updated: float
    steps: list[tuple[str, str, bytes]] = []


class LoadTask(_Msg):
    """A task with its steps in order: ``TaskRecord``; ``not_found`` OpError if unknown."""

    task: str


class ListTasks(_Msg):
    """Tasks, newest first, optionally filtered by status: ``list[TaskRecord]`` (no steps)."""

    status: str | None = None
    limit: int = 50


# ----------------------------------------------------------------------------- operations


class Stats(_Msg):
    """Counts and sizes of the tenant's memory: answered with ``MemoryStats``."""


class MemoryStats(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    facts: int
    current_facts: int
    conversations: int
    messages: int
    usage_records: int
    tasks: int
    entities: int
    bytes: int
    schema_version: int
    vectors: int
    dim: int
    writes: int
    group_commits: int


class Export(_Msg):
    """Write every fact to ``path`` (absolute) as JSONL with a checksum per line, atomically:
    answered with ``Transferred``. ``progress``, in-process only, is an async callable
    ``(message, done, total)`` called as the work goes on."""

    path: str
    progress: Any = None


class Import(_Msg):
    """Import an export file (absolute ``path``), verifying every line first; idempotent (a
    fact already present is skipped): answered with ``Transferred``."""

    path: str
    progress: Any = None


class Backup(_Msg):
    """Online backup of the tenant database to ``path`` (absolute) while writes go on:
    answered with ``Transferred`` (``records`` = pages copied)."""

    path: str
    progress: Any = None


class Transferred(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    records: int
    added: int = 0


MemoryMessage = (
    Remember
    | Search
    | Forget
    | AppendMessage
    | History
    | RecordUsage
    | UsageQuery
    | Spent
    | LookupApproval
    | RememberApproval
    | SaveTask
    | SaveStep
    | SaveSteps
    | LoadTask
    | ListTasks
    | Stats
    | Export
    | Import
    | Backup
)
