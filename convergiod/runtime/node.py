"""What actors and supervisors share as nodes of the supervision tree."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import trio

from .errors import ActorCrashed, ActorStopped, ChildStartError
from .spec import ChildSpec, Restart

if TYPE_CHECKING:
    from .supervisor import SupervisorNode
    from .system import ActorSystem

__all__ = ["ExitNotice", "Node", "RestartRequest", "State", "logger"]

logger = logging.getLogger("convergiod.runtime")

State = Literal["starting", "running", "restarting", "stopped", "failed"]


@dataclass(slots=True, eq=False)
class ExitNotice:
    """A child's run ended without its supervisor asking for it (crash or normal exit)."""

    node: Node
    generation: int
    error: BaseException | None  # None: normal exit
    handled: trio.Event | None = None  # set once the supervisor has dealt with it


@dataclass(slots=True, eq=False)
class RestartRequest:
    """An operator's graceful restart of one child, run by its supervisor."""

    node: Node
    done: trio.Event
    error: BaseException | None = None


class Node:
    """A named place in the tree. Instances come and go; the node (and its name) stays."""

    kind: ClassVar[Literal["actor", "supervisor"]]

    def __init__(
        self, system: ActorSystem, name: str, spec: ChildSpec | None, parent: SupervisorNode | None
    ) -> None:
        self.system = system
        self.name = name
        self.spec = spec
        self.parent = parent
        self._state: State = "stopped"
        self.restarts = 0
        self.last_error: str | None = None
        self.started_at: float | None = None
        self.generation = 0
        self.retired = False  # gone for good (until an operator or group restart revives it)
        self.exit_sink: Callable[[ExitNotice], None] | None = None
        self._topic = f"{self.kind}.{name}."
        # per run
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._done.set()
        self._start_done = trio.Event()
        self._start_error: BaseException | None = None
        self._exit: BaseException | None = None  # why the current run crashed
        self._stop_requested = False
        self._parent_stopping = False
        self._kill_handled: trio.Event | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        self._state = value
        self.system._state_changed()

    @property
    def restart_type(self) -> Restart:
        return self.spec.restart if self.spec is not None else Restart.PERMANENT

    @property
    def shutdown_timeout(self) -> float:
        return self.spec.shutdown if self.spec is not None else math.inf

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def emit(self, event: str, **data: Any) -> None:
        self.system._emit(self._topic + event, {"name": self.name, "kind": self.kind, **data})

    # -- lifecycle, driven by the parent supervisor --------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Start a new run; returns once ``started()`` completed. Raises ChildStartError."""
        self.generation += 1
        self.retired = False
        self._done = trio.Event()
        self._start_done = trio.Event()
        self._start_error = None
        self._exit = None
        self._stop_requested = False
        self._parent_stopping = False
        self._kill_handled = None
        if self._state != "restarting":
            self.state = "starting"
        self._revive()
        nursery.start_soon(self._run, name=f"{self.kind}:{self.name}")
        await self._start_done.wait()
        if self._start_error is not None:
            raise ChildStartError(self.name, self._start_error)

    async def stop(self) -> None:
        """Orderly stop requested by the parent: bounded by the shutdown timeout."""
        self._parent_stopping = True
        if self._done.is_set():
            return
        self._begin_stop()
        await self._done.wait()

    def crash(self, error: BaseException) -> None:
        """Crash the current run abnormally (first reason wins) and cancel it."""
        if self._exit is not None or self._done.is_set():
            return
        self._exit = error
        self.last_error = repr(error)
        self.state = "failed"  # until the supervisor decides (restarting, or for good)
        logger.error(
            "%s %r crashed (parent=%s, restarts=%d, generation=%d): %r",
            self.kind,
            self.name,
            self.parent.name if self.parent is not None else None,
            self.restarts,
            self.generation,
            error,
            exc_info=error,
        )
        self.emit("crashed", error=repr(error))
        if self._scope is not None:
            self._scope.cancel()

    def retire(self, cause: BaseException | None) -> None:
        """Gone for good: fail what is queued and refuse new messages."""
        self.retired = True
        self.state = "failed" if cause is not None else "stopped"

    # -- for subclasses ------------------------------------------------------------------

    async def _run(self) -> None:
        raise NotImplementedError

    def _begin_stop(self) -> None:
        self._stop_requested = True
        if self._scope is not None:
            self._scope.deadline = min(
                self._scope.deadline, trio.current_time() + self.shutdown_timeout
            )

    def _revive(self) -> None:
        pass

    def _mark_running(self) -> None:
        self.started_at = time.time()
        self.state = "running"
        if self.generation > 1:
            self.restarts += 1
            self.emit("restarted", restarts=self.restarts)
        else:
            self.emit("started")
        self._start_done.set()

    def _start_failed(self, error: BaseException) -> None:
        self._start_error = error
        self.last_error = repr(error)
        logger.error(
            "%s %r failed to start (parent=%s): %r",
            self.kind,
            self.name,
            self.parent.name if self.parent is not None else None,
            error,
            exc_info=error,
        )
        self.emit("crashed", error=repr(error), during="start")

    def _finish(self, *, post: bool) -> None:
        """End of a run: record the state and tell the parent, unless it asked for the stop."""
        self._scope = None
        error = self._exit
        handled, self._kill_handled = self._kill_handled, None
        if not self._start_done.is_set() and self._start_error is None:
            # ended (killed, cancelled) before started() completed: a failed start
            self._start_error = error if error is not None else ActorStopped(self.name)
        if self._start_error is not None:
            self._state = "failed"
            post = False  # the starter gets the error from start()
        elif error is not None:
            self._state = "failed"
        else:
            self._state = "stopped"
            if post or self._parent_stopping:
                self.emit("stopped")
        self._start_done.set()
        self._done.set()
        self.system._state_changed()
        if post and not self._parent_stopping and self.exit_sink is not None:
            self.exit_sink(ExitNotice(self, self.generation, error, handled))
        elif handled is not None:
            handled.set()

    def interrupted_error(self) -> ActorCrashed | ActorStopped:
        """The error for a message whose handling was cancelled."""
        node: Node | None = self
        while node is not None:
            if node._exit is not None:
                return ActorCrashed(self.name, repr(node._exit))
            node = node.parent
        return ActorStopped(self.name, "stopped while handling the message")
