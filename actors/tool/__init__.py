"""The tool actor: typed tools in a workspace sandbox, with human approval.

Ask the actor named ``"tool"`` with the messages of ``convergiod.actors.tool.messages``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convergiod.runtime import ChildSpec

if TYPE_CHECKING:
    from convergiod.daemon import Daemon


def child_spec(daemon: Daemon) -> ChildSpec:
    from .actor import ToolActor, ToolState

    state = ToolState.for_daemon(daemon)
    return ChildSpec(
        name="tool",
        start=lambda: ToolActor(state),
        mailbox_size=4096,
        shutdown=daemon.config.supervisor.shutdown,
    )
