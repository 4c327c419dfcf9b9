"""The ``orchestrator`` actor: owns the team (agent definitions) and the set of live tasks.

The agent loop itself runs in the task of the client's request (``engine.TaskRun``), so a
``Cancel`` from the client, its deadline or the daemon's drain reach every agent under it,
and one failing task never disturbs another. This actor is the shared state they consult:
which agents exist (reloaded on ``daemon reload``) and which tasks are running in this
daemon, so that a task left ``running`` by a killed daemon shows as ``interrupted``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import trio

from convergiod.actors.orchestrator.agents import AgentSet, default_dirs, load
from convergiod.errors import OpError
from convergiod.runtime import Actor
from convergiod.service.reload import Reload

log = logging.getLogger("convergiod.orchestrator")


@dataclass(frozen=True, slots=True)
class GetTeam:
    """Answered with the current ``AgentSet``."""


@dataclass(frozen=True, slots=True)
class TaskBegin:
    """Mark a task live in this daemon; ``bad_request`` when it already is."""

    tenant: str
    task: str


@dataclass(frozen=True, slots=True)
class TaskEnd:
    tenant: str
    task: str


@dataclass(frozen=True, slots=True)
class IsLive:
    tenant: str
    task: str


class OrchestratorActor(Actor):
    reply_errors = (OpError,)
    reloadable: ClassVar[bool] = True
    concurrency: ClassVar[int] = 4

    def __init__(self, config_dir: Path, live: set[tuple[str, str]]) -> None:
        self._config_dir = config_dir
        # Owned by the daemon, not this instance: a restart of the actor must not forget
        # which tasks are running.
        self._live = live
        self._team: AgentSet | None = None

    async def started(self) -> None:
        self._team = await trio.to_thread.run_sync(load, default_dirs(self._config_dir))
        for error in self._team.errors:
            log.warning("agent definition refused: %s", error)
        log.info("loaded %d agents", len(self._team.agents))

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, GetTeam):
            assert self._team is not None
            return self._team
        if isinstance(msg, TaskBegin):
            key = (msg.tenant, msg.task)
            if key in self._live:
                raise OpError("bad_request", f"task {msg.task} is already running")
            self._live.add(key)
            return None
        if isinstance(msg, TaskEnd):
            self._live.discard((msg.tenant, msg.task))
            return None
        if isinstance(msg, IsLive):
            return (msg.tenant, msg.task) in self._live
        if isinstance(msg, Reload):
            return await self._reload(msg)
        raise TypeError(f"orchestrator cannot handle {type(msg).__name__}")

    async def _reload(self, msg: Reload) -> None:
        team = await trio.to_thread.run_sync(load, default_dirs(self._config_dir))
        default = msg.config.orchestrator.default_agent
        if default not in team.agents:
            raise OpError(
                "bad_request",
                f"orchestrator.default_agent: no agent named {default!r} "
                f"({'; '.join(team.errors) or 'no definition file'})",
            )
        if not msg.dry_run:
            self._team = team
            for error in team.errors:
                log.warning("agent definition refused: %s", error)
