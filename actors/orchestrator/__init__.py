"""The orchestrator: a team of agents, parallel delegation and convergence.

``agents`` loads the definitions, ``engine`` runs the agent loop of one task, ``context``
packs memory into a model's context, ``actor`` holds the shared state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convergiod.runtime import ChildSpec

if TYPE_CHECKING:
    from convergiod.daemon import Daemon


def child_spec(daemon: Daemon) -> ChildSpec:
    from convergiod.actors.orchestrator.actor import OrchestratorActor

    live: set[tuple[str, str]] = set()
    return ChildSpec(
        name="orchestrator",
        start=lambda: OrchestratorActor(daemon.paths.config_dir, live),
        shutdown=5.0,
    )
