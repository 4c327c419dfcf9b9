"""The memory actor: durable, searchable memory on SQLite (apsw), one database per tenant.

Other actors talk to it with the messages in ``convergiod.actors.memory.messages``::

    fact = await system.ref("memory").ask(Remember(tenant="local", text="the sky is blue"))
    hits = await system.ref("memory").ask(Search(tenant="local", query="sky colour"))

Writes (a fact, a conversation message, a usage record, a task record or checkpoint) can
also skip the actor's mailbox and tasks: ``asks.ask(ref, msg)`` submits them to the group
commit at once and waits for their COMMIT (``MemoryActor.handle_now``); writes submitted
one after the other commit in that order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convergiod.runtime import ChildSpec

if TYPE_CHECKING:
    from convergiod.daemon import Daemon

NAME = "memory"


def child_spec(daemon: Daemon) -> ChildSpec:
    from .actor import MemoryActor

    root = daemon.paths.data_dir / "tenants"
    config = daemon.config.memory
    return ChildSpec(
        name=NAME,
        start=lambda: MemoryActor(root, config),
        shutdown=15.0,
        mailbox_size=8192,
    )
