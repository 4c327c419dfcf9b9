"""The service actors (memory, router, tool, plugin, orchestrator) under the ``services``
supervisor, in start order: each may depend on the ones before it.

Each actor package exposes ``child_spec(daemon) -> ChildSpec``; add it to ``SERVICES``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from convergiod.runtime import ChildSpec

if TYPE_CHECKING:
    from convergiod.daemon import Daemon

#: Modules (under ``convergiod.actors``) providing ``child_spec``, in start order.
SERVICES: tuple[str, ...] = ("memory", "router", "tool", "plugin", "orchestrator")


def service_specs(daemon: Daemon) -> list[ChildSpec]:
    specs: list[ChildSpec] = []
    for name in SERVICES:
        module = importlib.import_module(f"convergiod.actors.{name}")
        specs.append(module.child_spec(daemon))
    return specs
