"""Agent definitions: Markdown files with TOML front matter between ``+++`` lines.

::

    +++
    name = "coder"
    description = "Writes and changes code in the workspace"
    model = "default"            # a model or model group of the router
    fallback = ["local"]         # tried in order when the preferred one is unavailable
    tools = ["fs.read", "fs.edit"]
    delegates = []               # agents this one may hand work to (through `delegate`)
    [limits]
    max_steps = 12
    +++
    You are the coder of the team...

The body is the system prompt. Shipped definitions live in ``agents/``; files in the user's
config directory (``<config>/agents/*.md``) override shipped ones by name or add new ones.
An invalid file is reported with its path and the offending key; the others still load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from convergiod.validation import describe

NAME_RE = r"^[a-z][a-z0-9_-]{0,39}$"
SHIPPED_DIR = Path(__file__).resolve().parent.parent.parent / "agents"

Positive = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]


class Limits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    max_steps: Positive = 12
    max_tool_calls: Positive = 50
    max_tokens: Positive = 200_000
    timeout: Seconds = 120.0
    max_cost: Annotated[float, msgspec.Meta(ge=0)] = 1.0


class AgentFront(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    name: Annotated[str, msgspec.Meta(pattern=NAME_RE)]
    description: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    model: str = "default"
    fallback: list[str] = []
    tools: list[str] = []
    delegates: list[str] = []
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.3
    limits: Limits = Limits()


@dataclass(frozen=True, kw_only=True)
class AgentDef:
    name: str
    description: str
    model: str
    fallback: tuple[str, ...]
    tools: tuple[str, ...]
    delegates: tuple[str, ...]
    temperature: float
    limits: Limits
    prompt: str
    source: Path

    @property
    def can_delegate(self) -> bool:
        return bool(self.delegates)


class AgentError(Exception):
    """An agent file that cannot be used; the message names the file and the key."""


_FRONT = re.compile(r"\A\+\+\+[ \t]*\r?\n(.*?)\r?\n\+\+\+[ \t]*(?:\r?\n|\Z)(.*)\Z", re.S)


def parse(text: str, source: Path) -> AgentDef:
    match = _FRONT.match(text)
    if match is None:
        raise AgentError(f"{source}: no TOML front matter between '+++' lines at the top")
    front_text, body = match.groups()
    try:
        front = msgspec.toml.decode(front_text.encode(), type=AgentFront)
    except msgspec.ValidationError as exc:
        raise AgentError(f"{source}: {describe(exc)}") from None
    except msgspec.DecodeError as exc:
        raise AgentError(f"{source}: front matter is not valid TOML: {exc}") from None
    prompt = body.strip()
    if not prompt:
        raise AgentError(f"{source}: the system prompt (the body after the front matter) is empty")
    if front.name in front.delegates:
        raise AgentError(f"{source}: key 'delegates': an agent cannot delegate to itself")
    return AgentDef(
        name=front.name,
        description=front.description,
        model=front.model,
        fallback=tuple(front.fallback),
        tools=tuple(front.tools),
        delegates=tuple(front.delegates),
        temperature=front.temperature,
        limits=front.limits,
        prompt=prompt,
        source=source,
    )


@dataclass(frozen=True)
class AgentSet:
    agents: dict[str, AgentDef]
    errors: tuple[str, ...]

    def get(self, name: str) -> AgentDef | None:
        return self.agents.get(name)


def load(dirs: Iterable[Path]) -> AgentSet:
    """Load every ``*.md`` of ``dirs`` in order; a later directory overrides by name.

    Delegation targets that do not exist are reported and dropped, so a broken override
    never leaves an agent pointing at nothing.
    """
    agents: dict[str, AgentDef] = {}
    errors: list[str] = []
    for directory in dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.md")):
            try:
                text = path.read_text(encoding="utf-8")
                agent = parse(text, path)
            except (OSError, UnicodeDecodeError) as exc:
                errors.append(f"{path}: cannot read: {exc}")
                continue
            except AgentError as exc:
                errors.append(str(exc))
                continue
            agents[agent.name] = agent
    for name, agent in list(agents.items()):
        missing = [d for d in agent.delegates if d not in agents]
        if missing:
            errors.append(f"{agent.source}: key 'delegates': unknown agents {missing}")
            agents[name] = _replace_delegates(
                agent, tuple(d for d in agent.delegates if d in agents)
            )
    return AgentSet(agents=agents, errors=tuple(errors))


def _replace_delegates(agent: AgentDef, delegates: tuple[str, ...]) -> AgentDef:
    from dataclasses import replace

    return replace(agent, delegates=delegates)


def default_dirs(config_dir: Path) -> list[Path]:
    return [SHIPPED_DIR, config_dir / "agents"]
