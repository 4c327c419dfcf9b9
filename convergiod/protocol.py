"""The wire protocol between clients and the daemon: the single source of truth.

Every message is a msgspec Struct encoded as MessagePack, one message per ZeroMQ frame.
Unions are tagged by the ``type`` field. ``docs/protocol.md`` is the human-readable spec of
exactly these types; when you change one, change the other and bump ``PROTOCOL_VERSION``
for anything that is not a backwards-compatible addition.

A client sends ``Request`` (and ``Cancel``); for each request the daemon sends zero or more
``Event`` frames and then exactly one terminal ``Result`` or ``Failure``.

This module imports nothing heavier than msgspec: the CLI imports it on every command.
"""

from collections.abc import Sequence
from typing import Annotated, Any, Final, Literal

import msgspec

PROTOCOL_VERSION: Final = 1
#: Largest accepted frame from a client, in bytes. Larger frames are answered with
#: ``bad_request`` (and never decoded).
MAX_FRAME_BYTES: Final = 1 << 20

ErrorCode = Literal[
    "bad_request",
    "unsupported_version",
    "unauthorized",
    "forbidden",
    "not_found",
    "overloaded",
    "unavailable",
    "timeout",
    "cancelled",
    "budget_exceeded",
    "provider_unavailable",
    "sandbox_denied",
    "internal",
]
#: The stable set of error codes, in the order of ``docs/protocol.md``.
ERROR_CODES: Final[tuple[str, ...]] = ErrorCode.__args__  # type: ignore[attr-defined]


RequestId = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=10 * 365 * 86400)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class _Base(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    pass


# --------------------------------------------------------------------------- ops (client → daemon)


class Ping(_Base, tag="ping"):
    """Liveness check. With ``count`` > 0 the daemon first streams that many ``Tick`` events,
    ``interval`` seconds apart: a diagnostic for streaming, deadlines and cancellation."""

    echo: Annotated[bytes, msgspec.Meta(max_length=65536)] = b""
    count: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    interval: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.0


class Status(_Base, tag="status"):
    """Version, pid, uptime, gateway counters and the state of every actor."""


class ActorRestart(_Base, tag="actor.restart"):
    """Gracefully restart one actor or supervisor (admin)."""

    name: Name


class ActorKill(_Base, tag="actor.kill"):
    """Make an actor or supervisor crash abnormally, so its supervisor's strategy applies
    (admin; for operators and fault tests)."""

    name: Name


class Shutdown(_Base, tag="daemon.shutdown"):
    """Stop taking requests, let in-flight ones finish, exit 0 (admin)."""


# -- service integration (reload)


class DaemonReload(_Base, tag="daemon.reload"):
    """Re-read the configuration (and what reloadable actors load: agents, providers, budgets,
    plugins) without a restart; connections and in-flight requests are kept (admin). A bad
    configuration is refused with ``bad_request`` naming the key; the old one stays in force."""


# -- memory


class MemoryRemember(_Base, tag="memory.remember"):
    """Store a fact in the caller's tenant; answered with ``memory.fact`` once committed.
    ``supersedes`` closes the validity of an older fact instead of erasing it."""

    text: str
    kind: Name = "note"
    importance: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    conversation: Name | None = None
    supersedes: int | None = None


class MemorySearch(_Base, tag="memory.search"):
    """Hybrid search (keyword bm25 + vector, reciprocal rank fusion): ``memory.hits``, best
    first. ``at`` restricts to facts valid at that time (default: now)."""

    query: str
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    kind: Name | None = None
    conversation: Name | None = None
    at: float | None = None


class MemoryForget(_Base, tag="memory.forget"):
    """Delete a fact: ``ack``, or ``not_found``."""

    id: int


class MemoryStats(_Base, tag="memory.stats"):
    """Counts and sizes of the caller's memory: ``memory.stats``."""


class MemoryExport(_Base, tag="memory.export"):
    """Write every fact to ``path`` (absolute, on the daemon's machine) as JSONL with a
    checksum per line, atomically; streams ``progress``; answered with ``memory.transfer``."""

    path: str


class MemoryImport(_Base, tag="memory.import"):
    """Import an export file (absolute ``path``), every line verified first; idempotent;
    streams ``progress``; answered with ``memory.transfer`` (``added`` new facts)."""

    path: str


class MemoryBackup(_Base, tag="memory.backup"):
    """Online backup of the caller's database to ``path`` (absolute) while the daemon keeps
    serving; streams ``progress``; answered with ``memory.transfer`` (``records`` = pages)."""

    path: str


MemoryOp = (
    MemoryRemember
    | MemorySearch
    | MemoryForget
    | MemoryStats
    | MemoryExport
    | MemoryImport
    | MemoryBackup
)

# -- tools


class ToolList(_Base, tag="tool.list"):
    """Every tool the daemon offers, with its JSON schema and effective policy: ``tools``."""


class ToolRun(_Base, tag="tool.run"):
    """Run one tool in the sandbox of ``workspace`` (the client's directory, absolute; empty:
    the first ``tools.roots``), under the tool's approval policy: ``ask`` streams an
    ``approval_request`` event and waits for the answer. Answered with ``tool.output``; refused
    with ``sandbox_denied``, ``bad_request`` (arguments, naming the field), ``not_found``
    (unknown tool) or ``timeout``."""

    name: Name
    args: dict[str, Any] = {}
    workspace: str = ""
    timeout: Seconds | None = None


class TrashList(_Base, tag="trash.list"):
    """What ``fs.delete`` and ``fs.edit`` put in the caller's trash, newest first: ``trash``."""


class TrashRestore(_Base, tag="trash.restore"):
    """Put trash item ``id`` back at its path: ``ack``. Refused with ``bad_request`` when
    something is there, unless ``force`` (then that goes to the trash first)."""

    id: Name
    force: bool = False


ToolOp = ToolList | ToolRun | TrashList | TrashRestore

# -- router (models, usage, budgets)


class ChatMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One turn of a ``model.chat`` conversation."""

    role: Literal["system", "user", "assistant"]
    content: Annotated[str, msgspec.Meta(max_length=1 << 20)]


class ModelChat(_Base, tag="model.chat"):
    """Call a model (or group) directly, without an agent: streams ``token`` events, then
    ``chat_result``. ``model`` absent: the agent's preference, then ``router.default``, then
    the embedded model. Refused with ``not_found`` (unknown model), ``bad_request`` (prompt
    over the context window), ``budget_exceeded``, ``provider_unavailable``, ``timeout``."""

    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1, max_length=10_000)]
    model: Name | None = None
    agent: Name | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None


class ModelsList(_Base, tag="models.list"):
    """Configured models, their groups, cooldown state and, with ``probe``, whether each
    provider answers: ``models``."""

    probe: bool = False


class UsageReport(_Base, tag="usage"):
    """The caller's usage ledger grouped by agent, model or day, since ``since`` (default:
    all): ``usage_report``."""

    by: Literal["agent", "model", "day"] = "day"
    since: float | None = None


class BudgetShowOp(_Base, tag="budget.show"):
    """Today's budgets of the caller's tenant with what was spent: ``budgets``."""


class BudgetSetOp(_Base, tag="budget.set"):
    """Set the daily limit of the tenant, or of one ``agent`` (0 removes it); persisted
    (admin): ``budgets`` with the changed line."""

    limit: Annotated[float, msgspec.Meta(ge=0, le=1e9)]
    agent: Name | None = None


RouterOp = ModelChat | ModelsList | UsageReport | BudgetShowOp | BudgetSetOp

# -- plugins


class PluginInstall(_Base, tag="plugin.install"):
    """Install (or replace) the plugin at ``path`` on the daemon's machine: a directory or a
    ``.tar.gz`` with ``plugin.toml`` and its module (admin). ``grants`` answer the manifest's
    permission requests: ``dir:/guest``, ``dir:/guest:ro``, ``env:NAME``; ``grant_all``
    grants all of them as asked. Answered with ``plugin``; refused with ``bad_request``
    (manifest, naming the key), ``sandbox_denied`` (a non-WASI import) or ``not_found``."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    grant_all: bool = False
    grants: Annotated[list[str], msgspec.Meta(max_length=256)] = []


class PluginList(_Base, tag="plugin.list"):
    """Installed plugins: ``plugins``."""


class PluginShow(_Base, tag="plugin.info"):
    """One installed plugin, its tools, what it asked for and what was granted: ``plugin``."""

    name: Name


class PluginRemove(_Base, tag="plugin.remove"):
    """Uninstall a plugin; its tools leave the tool registry (admin): ``ack``."""

    name: Name


class PluginCall(_Base, tag="plugin.call"):
    """Call ``tool`` of ``plugin`` directly, without an agent or an approval (admin):
    ``plugin.output``. Refused with ``bad_request`` (arguments, naming the field),
    ``not_found``, ``timeout`` (time or fuel limit), ``sandbox_denied`` (memory or stack
    limit, output cap, changed module hash) or ``internal`` (the plugin crashed, exited
    non-zero or wrote no JSON)."""

    plugin: Name
    tool: Name
    args: dict[str, Any] = {}


PluginOp = PluginInstall | PluginList | PluginShow | PluginRemove | PluginCall


# --------------------------------------------------------------------------- orchestrator ops


class Ask(_Base, tag="ask"):
    """Ask the team: ``agent`` (default the chief of staff) answers, delegating as it sees
    fit. Streams ``token``, ``tool_call``, ``tool_result``, ``delegation``,
    ``delegation_end``, ``usage``, ``notice`` and ``approval_request`` events; the result is
    an ``answer``. ``workspace`` is the absolute directory tools work in (the client's
    current directory by default). ``conversation`` continues an earlier one."""

    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=1_000_000)]
    agent: Name | None = None
    conversation: Name | None = None
    workspace: str = ""


class AgentsList(_Base, tag="agents.list"):
    """The loaded agent definitions and the errors of files that did not load."""


class AgentsShow(_Base, tag="agents.show"):
    name: Name


class TaskListOp(_Base, tag="task.list"):
    """Tasks newest first; unfinished tasks of an earlier daemon show as ``interrupted``."""

    status: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50


class TaskShowOp(_Base, tag="task.show"):
    task: Name


class TaskResume(_Base, tag="task.resume"):
    """Continue an interrupted task from its last completed step (completed model turns and
    tool calls are not run again). Streams like ``ask``."""

    task: Name
    workspace: str = ""


OrchestratorOp = Ask | AgentsList | AgentsShow | TaskListOp | TaskShowOp | TaskResume


# -- remote access (tenants, paired clients)

Role = Literal["admin", "user"]
Z85Key = Annotated[str, msgspec.Meta(min_length=40, max_length=40)]


class ClientPair(_Base, tag="client.pair"):
    """Admin: list a client's CURVE public key for the TCP door, in ``tenant`` with ``role``."""

    name: Name
    public_key: Z85Key
    tenant: Name = "local"
    role: Role = "user"


class ClientsList(_Base, tag="clients.list"):
    """Admin: the paired clients."""


class ClientRevoke(_Base, tag="client.revoke"):
    """Admin: unlist a client; its open connections get no further reply."""

    name: Name


class TenantAdd(_Base, tag="tenant.add"):
    """Admin: a new tenant, with optional limits (0: the ``gateway.tenant_*`` defaults) and
    the directories its tools may use as workspaces."""

    name: Name
    rate: Annotated[float, msgspec.Meta(ge=0, le=1e6)] = 0.0
    burst: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    max_in_flight: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    roots: list[str] = []


class TenantList(_Base, tag="tenant.list"):
    """Admin: the tenants."""


class TenantRemove(_Base, tag="tenant.remove"):
    """Admin: remove a tenant and revoke its clients (its data stays on disk)."""

    name: Name


AccessOp = ClientPair | ClientsList | ClientRevoke | TenantAdd | TenantList | TenantRemove

Op = (
    Ping
    | Status
    | ActorRestart
    | ActorKill
    | Shutdown
    | DaemonReload
    | MemoryOp
    | ToolOp
    | RouterOp
    | PluginOp
    | OrchestratorOp
    | AccessOp
)


# --------------------------------------------------------------------------- frames


class Request(_Base, tag="request"):
    """``id`` is chosen by the client and must be unique among its requests in flight.
    ``deadline`` is a relative budget in seconds, counted from receipt by the daemon.

    ``batch``: the client takes batch frames (``encode_batch``: a msgpack array of
    ``Event``/``Result``/``Failure`` messages, in order). While the client has other
    requests in flight, the daemon then sends this request's events and its terminal
    message together with the other messages for the same client made in the same pass of
    its scheduler, in one frame. Without it (the default, and what a daemon that does not
    know the field does) every message is a frame of its own.
    """

    id: RequestId
    op: Op
    deadline: Seconds | None = None
    v: int = PROTOCOL_VERSION
    batch: bool = False


class Cancel(_Base, tag="cancel"):
    """Cancel the in-flight request ``id``; it then ends with ``Failure(code="cancelled")``.
    Cancelling an unknown or finished request is a no-op."""

    id: RequestId


ApprovalDecision = Literal["once", "always", "deny"]


class ApprovalAnswer(_Base, tag="approval"):
    """The client's answer to an ``approval_request`` event of request ``id``. ``once``
    approves this call, ``always`` approves it and remembers the approval for the tenant,
    ``deny`` refuses it. Answers to unknown or expired approvals are ignored."""

    id: RequestId
    approval: Annotated[int, msgspec.Meta(ge=1, le=2**31)]
    decision: ApprovalDecision


ClientMessage = Request | Cancel | ApprovalAnswer


# --------------------------------------------------------------------------- event bodies


class Tick(_Base, tag="tick"):
    n: int


class Progress(_Base, tag="progress"):
    message: str
    done: int = 0
    total: int | None = None


class TokenDelta(_Base, tag="token"):
    text: str
    agent: str | None = None


class ApprovalRequest(_Base, tag="approval_request"):
    """The daemon wants the user's approval before a tool runs. Answer with ``approval``
    (an ``ApprovalAnswer`` frame) before ``timeout`` seconds pass, or it counts as ``deny``."""

    approval: int
    tool: str
    summary: str
    args: dict[str, Any] = {}
    agent: str | None = None
    timeout: float = 60.0


class ToolCallStarted(_Base, tag="tool_call"):
    agent: str
    call: str
    tool: str
    args: dict[str, Any] = {}


class ToolCallFinished(_Base, tag="tool_result"):
    agent: str
    call: str
    tool: str
    ok: bool
    summary: str = ""
    code: str | None = None


class DelegationStarted(_Base, tag="delegation"):
    agent: str
    to: str
    call: str
    task: str


class DelegationFinished(_Base, tag="delegation_end"):
    agent: str
    to: str
    call: str
    ok: bool
    summary: str = ""


class UsageEvent(_Base, tag="usage"):
    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cost: float


class Notice(_Base, tag="notice"):
    message: str
    agent: str | None = None


EventBody = (
    Tick
    | Progress
    | TokenDelta
    | ApprovalRequest
    | ToolCallStarted
    | ToolCallFinished
    | DelegationStarted
    | DelegationFinished
    | UsageEvent
    | Notice
)


# --------------------------------------------------------------------------- result bodies


class Pong(_Base, tag="pong"):
    version: str
    protocol: int
    pid: int
    echo: bytes = b""


class ActorStatus(_Base, tag="actor"):
    name: str
    kind: str
    parent: str | None
    state: str
    restarts: int
    mailbox_depth: int
    handled: int
    last_error: str | None = None


class GatewayStats(_Base, tag="gateway"):
    endpoint: str
    events_endpoint: str
    in_flight: int
    requests: int
    failures: int


class StatusReply(_Base, tag="status"):
    version: str
    protocol: int
    pid: int
    uptime: float
    home: str
    tenant: str
    role: str
    healthy: bool
    loop_lag_ms: float
    gateway: GatewayStats
    actors: list[ActorStatus]


class Ack(_Base, tag="ack"):
    message: str = ""


# -- service integration (reload)


class ReloadReply(_Base, tag="reload"):
    """``changed``: dotted keys whose value changed; ``restart_needed``: those of them that take
    effect only at the next start; ``actors``: the actors that reloaded; ``failed``: actors
    that refused to apply the new configuration (each keeps its old state)."""

    changed: list[str] = []
    restart_needed: list[str] = []
    actors: list[str] = []
    failed: list[str] = []


# -- memory


class MemoryFact(_Base, tag="memory.fact"):
    id: int
    text: str
    kind: str
    source: str
    importance: float
    valid_from: float
    conversation: str | None = None
    valid_to: float | None = None
    access_count: int = 0


class MemoryHit(_Base, tag="memory.hit"):
    fact: MemoryFact
    score: float
    keyword_rank: int | None = None
    vector_rank: int | None = None


class MemoryHits(_Base, tag="memory.hits"):
    hits: list[MemoryHit] = []


class MemoryStatsReply(_Base, tag="memory.stats"):
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


class MemoryTransfer(_Base, tag="memory.transfer"):
    path: str
    records: int
    added: int


MemoryResult = MemoryFact | MemoryHits | MemoryStatsReply | MemoryTransfer

# -- tools


class ToolSpec(_Base, tag="tool"):
    name: str
    description: str
    schema: dict[str, Any]
    policy: str
    owner: str = "builtin"


class ToolListReply(_Base, tag="tools"):
    tools: list[ToolSpec] = []


class ToolOutputReply(_Base, tag="tool.output"):
    content: str
    data: Any = None
    truncated: bool = False


class TrashEntry(_Base, tag="trash.item"):
    id: str
    path: str
    kind: str
    time: float
    size: int
    is_dir: bool = False


class TrashListReply(_Base, tag="trash"):
    items: list[TrashEntry] = []


ToolResult = ToolListReply | ToolOutputReply | TrashListReply

# -- router


class ChatReply(_Base, tag="chat_result"):
    """The answer of ``model.chat``; its text was streamed as ``token`` events too."""

    model: str
    provider: str
    text: str
    finish_reason: str
    input_tokens: int
    output_tokens: int
    cost: float
    estimated: bool = False
    attempts: int = 1
    downgraded: bool = False


class ModelEntry(_Base, tag="model"):
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


class ModelsReply(_Base, tag="models"):
    default: str
    models: list[ModelEntry]


class UsageRowEntry(_Base, tag="usage_row"):
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


class UsageReply(_Base, tag="usage_report"):
    by: str
    rows: list[UsageRowEntry]


class BudgetEntry(_Base, tag="budget"):
    scope: str
    limit: float
    spent: float
    fraction: float
    state: str


class BudgetsReply(_Base, tag="budgets"):
    tenant: str
    budgets: list[BudgetEntry]


RouterResult = ChatReply | ModelsReply | UsageReply | BudgetsReply

# -- plugins


class PluginToolEntry(_Base, tag="plugin.tool"):
    name: str
    description: str
    policy: str
    args: dict[str, Any] = {}


class PluginDirEntry(_Base, tag="plugin.dir"):
    host: str
    guest: str
    write: bool = False


class PluginDetail(_Base, tag="plugin"):
    name: str
    version: str
    description: str
    sha256: str
    path: str
    tools: list[PluginToolEntry]
    limits: dict[str, Any]
    asked_dirs: list[PluginDirEntry] = []
    asked_env: list[str] = []
    granted_dirs: list[PluginDirEntry] = []
    granted_env: list[str] = []
    installed_at: float = 0.0


class PluginListReply(_Base, tag="plugins"):
    plugins: list[PluginDetail] = []


class PluginOutput(_Base, tag="plugin.output"):
    plugin: str
    tool: str
    output: Any = None
    elapsed_ms: float = 0.0


PluginResult = PluginDetail | PluginListReply | PluginOutput


# --------------------------------------------------------------------------- orchestrator results


class AgentUsage(_Base, tag="agent_usage"):
    agent: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost: float


class Answer(_Base, tag="answer"):
    task: str
    conversation: str
    agent: str
    text: str
    usage: list[AgentUsage] = []
    steps: int = 0
    resumed: bool = False


class AgentSummary(_Base, tag="agent_summary"):
    name: str
    description: str
    model: str
    tools: list[str]
    delegates: list[str]
    source: str


class AgentsReply(_Base, tag="agents"):
    agents: list[AgentSummary]
    errors: list[str] = []


class AgentDetail(_Base, tag="agent_detail"):
    name: str
    description: str
    model: str
    fallback: list[str]
    tools: list[str]
    delegates: list[str]
    temperature: float
    limits: dict[str, Any]
    prompt: str
    source: str


class TaskEntry(_Base, tag="task"):
    task: str
    status: str
    agent: str
    request: str
    conversation: str | None
    created: float
    updated: float
    result: str | None = None
    steps: int = 0


class TasksReply(_Base, tag="tasks"):
    tasks: list[TaskEntry]


class TaskDetail(_Base, tag="task_detail"):
    task: TaskEntry
    transcript: list[dict[str, Any]]


OrchestratorResult = Answer | AgentsReply | AgentDetail | TasksReply | TaskDetail


# -- remote access results


class ClientPaired(_Base, tag="client.paired"):
    name: str
    tenant: str
    role: Role
    #: The TCP door's endpoint as bound (empty while ``gateway.tcp`` is off).
    endpoint: str
    server_key: str


class ClientEntry(_Base, tag="client"):
    name: str
    tenant: str
    role: Role
    public_key: str
    created: float


class ClientsReply(_Base, tag="clients"):
    clients: list[ClientEntry]


class TenantEntry(_Base, tag="tenant"):
    name: str
    created: float
    rate: float
    burst: int
    max_in_flight: int
    roots: list[str] = []
    clients: int = 0


class TenantsReply(_Base, tag="tenants"):
    tenants: list[TenantEntry]


AccessResult = ClientPaired | ClientsReply | TenantsReply

ResultBody = (
    Pong
    | StatusReply
    | Ack
    | ReloadReply
    | MemoryResult
    | ToolResult
    | RouterResult
    | PluginResult
    | OrchestratorResult
    | AccessResult
)


# --------------------------------------------------------------------------- server frames


class Event(_Base, tag="event"):
    id: int
    seq: int
    body: EventBody


class Result(_Base, tag="result"):
    id: int
    body: ResultBody


class Failure(_Base, tag="failure"):
    """``id`` is 0 when the daemon could not read the request's id."""

    id: int
    code: ErrorCode
    message: str
    retry_after: float | None = None


ServerMessage = Event | Result | Failure


class PubEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The payload frame on the ``PUB`` socket; the frame before it is the topic."""

    topic: str
    time: float
    data: dict[str, Any] = {}


# --------------------------------------------------------------------------- codecs


class ProtocolError(Exception):
    """A frame the daemon cannot accept; carries the code and the id if one was readable."""

    def __init__(self, code: ErrorCode, message: str, request_id: int = 0) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.request_id = request_id


_encoder = msgspec.msgpack.Encoder()
_client_decoder = msgspec.msgpack.Decoder(ClientMessage)
_server_decoder = msgspec.msgpack.Decoder(ServerMessage)
_pub_decoder = msgspec.msgpack.Decoder(PubEvent)
_loose_decoder = msgspec.msgpack.Decoder()

encode = _encoder.encode


def decode_client(frame: bytes | memoryview, max_bytes: int = MAX_FRAME_BYTES) -> ClientMessage:
    """Decode one client frame, or raise ``ProtocolError`` naming what is wrong."""
    if len(frame) > max_bytes:
        raise ProtocolError(
            "bad_request", f"frame of {len(frame)} bytes exceeds the maximum of {max_bytes}"
        )
    try:
        msg: ClientMessage = _client_decoder.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError("bad_request", f"invalid message: {exc}", _salvage_id(frame)) from None
    except Exception as exc:  # msgspec may surface e.g. UnicodeDecodeError; still a bad frame
        raise ProtocolError(
            "bad_request", f"invalid message: {type(exc).__name__}: {exc}", _salvage_id(frame)
        ) from None
    if isinstance(msg, Request) and msg.v != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported_version",
            f"protocol version {msg.v} is not supported (this daemon speaks {PROTOCOL_VERSION})",
            msg.id,
        )
    return msg


def _salvage_id(frame: bytes | memoryview) -> int:
    """Best effort: the id of a request whose other fields are wrong, so the client can match
    the ``Failure`` to its request."""
    try:
        loose = _loose_decoder.decode(frame)
    except Exception:  # anything undecodable simply has no id
        return 0
    if isinstance(loose, dict):
        rid = loose.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < 1 << 63:
            return rid
    return 0


def decode_server(frame: bytes | memoryview) -> ServerMessage:
    msg: ServerMessage = _server_decoder.decode(frame)
    return msg


# A batch (``Request.batch``): one frame holding several daemon messages, a msgpack array
# of them in order. A message alone is a msgpack map, so the first byte tells them apart.
_batch_decoder = msgspec.msgpack.Decoder(list[ServerMessage])
_raw_batch_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_ARRAY_HEADS = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])
#: Most messages in one batch frame (a msgpack array16 header).
MAX_BATCH_MESSAGES = 0xFFFF


def encode_batch(frames: Sequence[bytes]) -> bytes:
    """Encoded messages (``encode``) as one batch frame: a msgpack array of them, made
    without decoding or encoding them again."""
    n = len(frames)
    if not 1 < n <= MAX_BATCH_MESSAGES:
        raise ValueError(f"a batch holds 2 to {MAX_BATCH_MESSAGES} messages, not {n}")
    head = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return head + b"".join(frames)


def is_batch(frame: bytes | memoryview) -> bool:
    """Whether a daemon frame is a batch (``encode_batch``) rather than one message."""
    return len(frame) > 0 and frame[0] in _ARRAY_HEADS


def decode_server_frame(frame: bytes | memoryview) -> list[ServerMessage]:
    """The messages of a daemon frame: one, or those of a batch (in one decoding pass).
    A batch with a message that does not decode raises ``msgspec.DecodeError`` or
    ``ValidationError``; ``decode_batch_loosely`` then salvages the others."""
    if is_batch(frame):
        msgs: list[ServerMessage] = _batch_decoder.decode(frame)
        return msgs
    return [_server_decoder.decode(frame)]


def decode_batch_loosely(frame: bytes | memoryview) -> tuple[list[ServerMessage], int]:
    """A batch's messages one by one: those that decode, and how many did not."""
    good: list[ServerMessage] = []
    bad = 0
    for raw in _raw_batch_decoder.decode(frame):
        try:
            good.append(_server_decoder.decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError):
            bad += 1
    return good, bad


def decode_pub(frame: bytes | memoryview) -> PubEvent:
    return _pub_decoder.decode(frame)


def to_builtins(obj: Any) -> Any:
    """A JSON-friendly view of any protocol object (for ``--json`` output)."""
    return msgspec.to_builtins(obj, enc_hook=repr)
