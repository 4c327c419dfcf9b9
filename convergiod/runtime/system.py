"""``ActorSystem`` and ``open_actor_system``: one supervision tree inside one Trio nursery."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from .cell import ActorCell
from .errors import (
    ActorKilled,
    ActorNotFound,
    ActorStopped,
    ChildStartError,
    SupervisorEscalation,
)
from .events import ActorInfo, EventCallback
from .node import ExitNotice, Node, RestartRequest, logger
from .ref import ActorRef
from .spec import ChildSpec, SupervisorSpec
from .supervisor import SupervisorNode
from .timer import AskTimer

__all__ = ["ActorSystem", "open_actor_system"]


class ActorSystem:
    """The running tree. Create it with ``open_actor_system``."""

    def __init__(
        self,
        root: SupervisorSpec,
        *,
        on_event: EventCallback | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._on_event = on_event
        self._nodes: dict[str, Node] = {}
        self._refs: dict[str, ActorRef] = {}
        self._changed = trio.Event()
        self._failure: SupervisorEscalation | None = None
        self._body_scope: trio.CancelScope | None = None
        self._timer = AskTimer()
        self._root = self._build(root, None, None)
        self._root.exit_sink = self._root_exited

    def _build(
        self, sup_spec: SupervisorSpec, spec: ChildSpec | None, parent: SupervisorNode | None
    ) -> SupervisorNode:
        node = SupervisorNode(self, sup_spec, spec, parent)
        self._register(node)
        for child_spec in sup_spec.children:
            child: Node
            if isinstance(child_spec.start, SupervisorSpec):
                if child_spec.start.name != child_spec.name:
                    raise ValueError(
                        f"ChildSpec {child_spec.name!r} wraps supervisor "
                        f"{child_spec.start.name!r}: the names must match"
                    )
                child = self._build(child_spec.start, child_spec, node)
            else:
                child = ActorCell(self, child_spec, child_spec.start, node)
                self._register(child)
            child.exit_sink = node.post
            node.children.append(child)
        return node

    def _register(self, node: Node) -> None:
        if node.name in self._nodes:
            raise ValueError(f"duplicate actor/supervisor name {node.name!r} in the tree")
        self._nodes[node.name] = node

    # -- public API ---------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False once the tree has failed (the root supervisor gave up or crashed)."""
        return self._failure is None

    @property
    def failure(self) -> SupervisorEscalation | None:
        return self._failure

    def ref(self, name: str) -> ActorRef:
        """A stable reference to the actor ``name``; ActorNotFound if there is none."""
        ref = self._refs.get(name)
        if ref is None:
            node = self._nodes.get(name)
            if not isinstance(node, ActorCell):
                raise ActorNotFound(name)
            ref = self._refs[name] = ActorRef(node, self._timer)
        return ref

    def info(self) -> list[ActorInfo]:
        """Status of every supervisor and actor, in tree (start) order."""
        out: list[ActorInfo] = []

        def walk(node: Node) -> None:
            out.append(
                ActorInfo(
                    name=node.name,
                    kind=node.kind,
                    parent=node.parent.name if node.parent is not None else None,
                    state=node.state,
                    restarts=node.restarts,
                    mailbox_depth=len(node.mailbox) if isinstance(node, ActorCell) else 0,
                    handled=node.handled if isinstance(node, ActorCell) else 0,
                    last_error=node.last_error,
                    started_at=node.started_at,
                )
            )
            if isinstance(node, SupervisorNode):
                for child in node.children:
                    walk(child)

        walk(self._root)
        return out

    async def restart(self, name: str) -> None:
        """Operator restart: orderly stop (``stopping()``, shutdown timeout) and a fresh start
        of that one child (no strategy applied to siblings). Counted in ``restarts`` but not in
        the supervisor's restart intensity, because it is not a crash. Also revives a child that
        is stopped for good. If the new instance fails to start, that is a crash (the
        supervisor's strategy applies) and this raises ChildStartError."""
        node = self._node(name)
        parent = node.parent
        if parent is None:
            raise ValueError("the root supervisor cannot be restarted; restart its children")
        if not parent.running or parent.state != "running":
            raise ActorStopped(parent.name, "its supervisor is not running")
        req = RestartRequest(node, trio.Event())
        parent.post(req)
        await req.done.wait()
        if req.error is not None:
            raise req.error

    async def kill(self, name: str) -> None:
        """Crash an actor or supervisor abnormally (error ActorKilled): in-flight asks fail with
        ActorCrashed, its supervisor applies its strategy. Returns once the supervisor has
        dealt with the crash (restarted it, or escalated). Killing the root fails the system."""
        node = self._node(name)
        if not node.running or node.state != "running":
            raise ActorStopped(name, "not running")
        handled = trio.Event()
        node._kill_handled = handled
        node.crash(ActorKilled(f"{node.kind} {name!r} killed by operator"))
        await handled.wait()

    def all_running(self) -> bool:
        return all(node.state == "running" for node in self._nodes.values() if not node.retired)

    async def wait_healthy(self, timeout: float | None = 5.0) -> None:
        """Wait until every child that is not gone for good is running. Raises the system's
        failure if it fails, TimeoutError after ``timeout``."""
        with trio.fail_after(timeout if timeout is not None else float("inf")):
            while True:
                if self._failure is not None:
                    raise self._failure
                if self.all_running():
                    return
                await self._changed.wait()

    # -- internals ----------------------------------------------------------------------------

    def _node(self, name: str) -> Node:
        node = self._nodes.get(name)
        if node is None:
            raise ActorNotFound(name)
        return node

    def _emit(self, topic: str, data: dict[str, Any]) -> None:
        callback = self._on_event
        if callback is None:
            return
        try:
            callback(topic, data)
        except Exception:
            logger.exception("on_event callback raised for %s", topic)

    def _state_changed(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _root_exited(self, notice: ExitNotice) -> None:
        root = self._root
        reason = repr(notice.error) if notice.error is not None else "exited"
        if isinstance(notice.error, SupervisorEscalation):
            self._failure = notice.error
        else:
            self._failure = SupervisorEscalation(root.name, reason)
        logger.critical("actor system failed: %s", self._failure)
        root.retire(notice.error if notice.error is not None else self._failure)
        if self._body_scope is not None:
            self._body_scope.cancel()
        if notice.handled is not None:
            notice.handled.set()
        self._state_changed()

    async def _shutdown(self) -> None:
        root = self._root
        if root.running:
            await root.stop()
        if not root.retired:
            root.retire(None)


@asynccontextmanager
async def open_actor_system(
    root: SupervisorSpec,
    *,
    on_event: EventCallback | None = None,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[ActorSystem]:
    """Start the tree (spec order, each ``started()`` done before the next), yield the system,
    and on exit stop it in reverse order (per-child shutdown timeouts, then hard cancel).

    If the root supervisor fails (exceeds its restart intensity, or is killed), the body is
    cancelled and this raises SupervisorEscalation. If a child fails to start initially, this
    raises ChildStartError (the already-started children are stopped first).
    """
    system = ActorSystem(root, on_event=on_event, clock=clock)
    start_error: ChildStartError | None = None
    body_error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(system._timer.run, name="ask-timer")
        try:
            await system._root.start(nursery)
        except ChildStartError as exc:
            start_error = exc
            system._root.retire(exc)
        else:
            with trio.CancelScope() as body_scope:
                system._body_scope = body_scope
                try:
                    yield system
                except trio.Cancelled:
                    raise
                except BaseException as exc:  # re-raised below, outside the nursery
                    body_error = exc
                finally:
                    system._body_scope = None
                    with trio.CancelScope(shield=True):
                        await system._shutdown()
        nursery.cancel_scope.cancel()  # the ask timer
    if body_error is not None:
        raise body_error
    if start_error is not None:
        raise start_error
    if system._failure is not None:
        raise system._failure
