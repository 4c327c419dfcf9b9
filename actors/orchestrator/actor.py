"""The ``orchestrator`` actor: owns the team (agent definitions) and the set of live tasks.

The agent loop itself runs in the task of the client's request (``engine.TaskRun``), so a
``Cancel`` from the client, its deadline or the daemon's drain reach every agent under it,
and one failing task never disturbs another. This actor is the shared state they consult:
which agents exist (reloaded on ``daemon reload``), which tasks are running in this
daemon (so that a task left ``running`` by a killed daemon shows as ``interrupted``) and the
router's models (for which of them take tools; cached until the next reload).

Everything but a reload and the first ``GetModels`` is answered at once on the asker's task
(``handle_now``, through ``ActorRef.ask_now``): a task's start and end cost no trip through
the mailbox.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import trio

from convergiod.actors.orchestrator.agents import AgentSet, default_dirs, load
from convergiod.actors.router import messages as rt
from convergiod.errors import OpError
from convergiod.runtime import NOT_NOW, Actor, ActorRef
from convergiod.service.reload import Reload

log = logging.getLogger("convergiod.orchestrator")


@dataclass(frozen=True, slots=True)
class GetTeam:
    """Answered with the current ``AgentSet``."""


@dataclass(frozen=True, slots=True)
class GetModels:
    """Answered with the router's models by name (``rt.ModelInfo``), as they were at the
    first ask after the last reload: use them for what the configuration says (``tools``),
    not for availability."""


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
        self._models: dict[str, rt.ModelInfo] | None = None

    async def started(self) -> None:
        self._team = await trio.to_thread.run_sync(load, default_dirs(self._config_dir))
        for error in self._team.errors:
            log.warning("agent definition refused: %s", error)
        log.info("loaded %d agents", len(self._team.agents))

    def handle_now(self, msg: Any) -> Any:
        kind = type(msg)
        if kind is GetTeam:
            assert self._team is not None
            return self._team
        if kind is TaskBegin:
            key = (msg.tenant, msg.task)
            if key in self._live:
                raise OpError("bad_request", f"task {msg.task} is already running")
            self._live.add(key)
            return None
        if kind is TaskEnd:
            self._live.discard((msg.tenant, msg.task))
            return None
        if kind is IsLive:
            return (msg.tenant, msg.task) in self._live
        if kind is GetModels and self._models is not None:
            return self._models
        return NOT_NOW

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, GetModels):
            if self._models is None:
                found: rt.ModelList = await self.ref("router").ask(rt.ListModels(), timeout=30.0)
                self._models = {m.name: m for m in found.models}
            return self._models
        if isinstance(msg, Reload):
            return await self._reload(msg)
        answer = self.handle_now(msg)
        if answer is NOT_NOW:
            raise TypeError(f"orchestrator cannot handle {type(msg).__name__}")
        return answer

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
            self._models = None  # the router, reloaded before us, may have changed them
            for error in team.errors:
                log.warning("agent definition refused: %s", error)


async def ask_soon(ref: ActorRef, msg: Any, timeout: float | None = 30.0) -> Any:
    """``ref.ask_now(msg)``, or through the mailbox when the actor cannot answer at once."""
    answer = ref.ask_now(msg)
    if answer is NOT_NOW:
        answer = await ref.ask(msg, timeout=timeout)
    return answer
