"""``SupervisorNode``: Erlang/OTP supervisor semantics over Trio tasks."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

from .errors import ActorStopped, ChildStartError, SupervisorEscalation
from .node import ExitNotice, Node, RestartRequest, logger
from .spec import ChildSpec, Restart, Strategy, SupervisorSpec

if TYPE_CHECKING:
    from .system import ActorSystem

__all__ = ["SupervisorNode"]


class SupervisorNode(Node):
    """Starts its children in spec order, watches them, restarts them per strategy.

    Every child runs as a task in this supervisor's nursery. Exits, operator restarts and stop
    requests go through one inbox and are handled one at a time, like an OTP supervisor's
    message queue.
    """

    kind = "supervisor"

    def __init__(
        self,
        system: ActorSystem,
        sup_spec: SupervisorSpec,
        spec: ChildSpec | None,
        parent: SupervisorNode | None,
    ) -> None:
        super().__init__(system, sup_spec.name, spec, parent)
        self.sup_spec = sup_spec
        self.children: list[Node] = []
        self._inbox: deque[ExitNotice | RestartRequest] = deque()
        self._wakeup = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._restart_times: list[float] = []

    # -- inbox -----------------------------------------------------------------------------

    def post(self, item: ExitNotice | RestartRequest) -> None:
        self._inbox.append(item)
        self._wakeup.set()

    def _begin_stop(self) -> None:
        super()._begin_stop()
        self._wakeup.set()

    def retire(self, cause: BaseException | None) -> None:
        super().retire(cause)
        for child in self.children:
            child.retire(cause)

    # -- the run -----------------------------------------------------------------------------

    async def _run(self) -> None:
        outer_cancel = False
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._restart_times = []
                    started: list[Node] = []
                    try:
                        for child in self.children:
                            await child.start(nursery)
                            started.append(child)
                    except ChildStartError as exc:
                        await self._stop_children(reversed(started))
                        self._start_failed(exc)
                        return
                    self._mark_running()
                    escalation = await self._loop()
                    if escalation is not None:
                        self._exit = escalation
                        self.last_error = repr(escalation)
        except BaseException:
            outer_cancel = True
            raise
        finally:
            self._nursery = None
            self._drain_inbox()
            self._finish(post=not outer_cancel)

    async def _loop(self) -> SupervisorEscalation | None:
        while True:
            if self._stop_requested:
                await self._stop_children(reversed(self.children))
                return None
            if not self._inbox:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            item = self._inbox.popleft()
            try:
                if isinstance(item, ExitNotice):
                    escalation = await self._on_exit(item)
                else:
                    escalation = await self._on_restart_request(item)
            finally:
                if isinstance(item, ExitNotice):
                    if item.handled is not None:
                        item.handled.set()
                else:
                    item.done.set()
            if escalation is not None:
                return escalation

    def _drain_inbox(self) -> None:
        while self._inbox:
            item = self._inbox.popleft()
            if isinstance(item, ExitNotice):
                if item.handled is not None:
                    item.handled.set()
            else:
                item.error = ActorStopped(self.name, "supervisor is not running")
                item.done.set()

    # -- decisions ---------------------------------------------------------------------------

    async def _on_exit(self, notice: ExitNotice) -> SupervisorEscalation | None:
        child = notice.node
        if notice.generation != child.generation or child.retired or child.running:
            return None  # stale: that run was already stopped or replaced
        return await self._child_terminated(child, notice.error)

    async def _child_terminated(
        self, child: Node, error: BaseException | None
    ) -> SupervisorEscalation | None:
        restart = child.restart_type
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and error is None):
            child.retire(error)
            return None
        strategy = self.sup_spec.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        elif strategy is Strategy.ONE_FOR_ALL:
            group = list(self.children)
        else:
            group = self.children[self.children.index(child) :]
        return await self._restart_group(child, group)

    async def _restart_group(self, child: Node, group: list[Node]) -> SupervisorEscalation | None:
        assert self._nursery is not None
        while True:
            if not self._add_restart():
                return await self._escalate(
                    f"more than {self.sup_spec.intensity} restarts in "
                    f"{self.sup_spec.period:g}s (last: {child.name!r}: {child.last_error})"
                )
            await self._stop_children(reversed(group))
            members: list[Node] = []
            for node in group:
                if node.restart_type is Restart.TEMPORARY:
                    if not node.retired:
                        node.retire(None)  # OTP: temporary siblings are not restarted
                    continue
                node.state = "restarting"
                members.append(node)
            started: list[Node] = []
            try:
                for node in members:
                    await node.start(self._nursery)
                    started.append(node)
            except ChildStartError:
                # counts as another restart; stop what came up and try the group again
                await self._stop_children(reversed(started))
                group = members
                continue
            return None

    async def _on_restart_request(self, req: RestartRequest) -> SupervisorEscalation | None:
        assert self._nursery is not None
        node = req.node
        if node.running:
            await node.stop()
        node.state = "restarting"
        try:
            await node.start(self._nursery)
        except ChildStartError as exc:
            req.error = exc
            return await self._child_terminated(node, exc.error)
        return None

    def _add_restart(self) -> bool:
        now = self.system.clock()
        threshold = now - self.sup_spec.period
        times = [t for t in self._restart_times if t >= threshold]
        times.append(now)
        self._restart_times = times
        return len(times) <= self.sup_spec.intensity

    async def _escalate(self, reason: str) -> SupervisorEscalation:
        logger.error("supervisor %r gives up: %s", self.name, reason)
        self.emit("escalated", reason=reason)
        await self._stop_children(reversed(self.children))
        return SupervisorEscalation(self.name, reason)

    async def _stop_children(self, children: Iterable[Node]) -> None:
        for child in children:
            await child.stop()
