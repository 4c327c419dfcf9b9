"""``ActorCell``: the stable home of one actor name (mailbox, counters) and its runs."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from .actor import Actor
from .errors import ActorCrashed, ActorError, ActorStopped
from .mailbox import Mailbox
from .node import Node, logger
from .spec import ChildSpec

if TYPE_CHECKING:
    from .supervisor import SupervisorNode
    from .system import ActorSystem

__all__ = ["ActorCell"]

_BURST = 64  # messages a worker handles back to back before yielding to the scheduler


class ActorCell(Node):
    """One actor of the tree. The mailbox outlives instances, so queued messages survive."""

    kind = "actor"

    def __init__(
        self,
        system: ActorSystem,
        spec: ChildSpec,
        factory: Callable[[], Actor],
        parent: SupervisorNode,
    ) -> None:
        super().__init__(system, spec.name, spec, parent)
        self.factory = factory
        self.mailbox = Mailbox(spec.name, spec.mailbox_size)
        self.handled = 0
        self.instance: Actor | None = None
        self._tasks: trio.Nursery | None = None  # the running instance's worker nursery

    def request_self_stop(self, instance: Actor) -> None:
        """``Actor.stop()``: a normal exit of the current instance."""
        if instance is not self.instance or self._stop_requested or self._done.is_set():
            return
        self.state = "stopped"  # draining; the supervisor decides what comes next
        self._begin_stop()

    def _begin_stop(self) -> None:
        super()._begin_stop()
        self.mailbox.wake_all()

    def _revive(self) -> None:
        self.mailbox.reopen()

    def retire(self, cause: BaseException | None) -> None:
        super().retire(cause)
        name = self.name
        error: Callable[[], ActorError]
        if cause is None:
            error = lambda: ActorStopped(name)  # noqa: E731
        else:
            reason = repr(cause)
            error = lambda: ActorCrashed(name, reason)  # noqa: E731
        self.mailbox.close(error)

    async def _run(self) -> None:
        outer_cancel = False
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                try:
                    instance = self.factory()
                    if not isinstance(instance, Actor):
                        raise TypeError(f"factory of {self.name!r} returned {instance!r}")
                    instance.name = self.name
                    instance.system = self.system
                    instance._cell = self
                    self.instance = instance
                    await instance.started()
                except Exception as exc:
                    self._start_failed(exc)
                    return
                self._mark_running()
                if not self._stop_requested:
                    async with trio.open_nursery() as workers:
                        for i in range(max(1, instance.concurrency)):
                            workers.start_soon(self._worker, instance, name=f"{self.name}#{i}")
                        self._tasks = workers
                    self._tasks = None
                if self._exit is None:
                    try:
                        await instance.stopping()
                    except Exception as exc:
                        self.last_error = repr(exc)
                        logger.exception("actor %r: stopping() raised", self.name)
            if scope.cancelled_caught and self._exit is None:
                logger.warning(
                    "actor %r did not stop within %gs; cancelled", self.name, self.shutdown_timeout
                )
        except BaseException:
            outer_cancel = True
            raise
        finally:
            self._tasks = None
            self.instance = None
            # The daemon moves what it built at start-up out of the collector's sight
            # (``gc.freeze``); an instance from then, with its reference cycles (bound
            # methods it handed out), would never be collected once it is done.
            gc.unfreeze()
            self._finish(post=not outer_cancel)

    def start_soon(self, instance: Actor, fn: Callable[..., Any], args: tuple[Any, ...]) -> bool:
        """``Actor.start_soon``."""
        tasks = self._tasks
        if tasks is None or instance is not self.instance or self._stop_requested:
            return False
        try:
            tasks.start_soon(self._side_task, instance, fn, args)
        except RuntimeError:  # the workers' nursery closed (a crash) before _tasks was cleared
            return False
        return True

    async def _side_task(
        self, instance: Actor, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        try:
            await fn(*args)
        except Exception as exc:
            if instance is self.instance:
                self.crash(exc)
            else:
                logger.exception("actor %r: a task of a former instance raised", self.name)

    async def _worker(self, instance: Actor) -> None:
        mailbox = self.mailbox
        queue = mailbox.queue
        handle = instance.handle
        name = self.name
        burst = 0
        while not self._stop_requested:
            if not queue:
                burst = 0
                await mailbox.wait_nonempty()
                continue
            env = queue.popleft()
            if mailbox._putters:
                mailbox._putters.unpark()
            try:
                result: Any = await handle(env.msg)
            except instance.reply_errors as exc:
                # An expected failure is the answer to this message, not a crash.
                self.handled += 1
                if env.task is None:
                    logger.info("actor %r: %s (no one asked)", name, exc)
                env.fail(exc)
            except Exception as exc:
                self.handled += 1
                env.fail(ActorCrashed(name, repr(exc)))
                self.crash(exc)
                return
            except BaseException:
                env.fail(self.interrupted_error())
                raise
            else:
                self.handled += 1
                env.reply(result)
            burst += 1
            if burst >= _BURST:
                burst = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
