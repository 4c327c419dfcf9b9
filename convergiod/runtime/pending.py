"""``Pending``: an answer that comes later, by callback, with no task waiting for it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import outcome

__all__ = ["Pending"]

logger = logging.getLogger("convergiod.runtime")


def _call(callback: Callable[[outcome.Outcome[Any]], None], result: outcome.Outcome[Any]) -> None:
    """Callbacks must not raise; one that does is logged, and the others still run (they
    run where the answer is produced, e.g. in a writer's completion, which must go on)."""
    try:
        callback(result)
    except Exception:
        logger.exception("a Pending callback raised")


class Pending:
    """What ``Actor.handle_now`` may return for an answer it has started that needs waiting
    (a write that is acknowledged after its group commit): the asker registers a callback
    instead of parking a task. Resolved once, on the Trio thread; later resolutions are
    ignored. Callbacks run at resolution (or at once, if registered after it) and must not
    raise."""

    __slots__ = ("_callbacks", "_outcome")

    def __init__(self) -> None:
        self._outcome: outcome.Outcome[Any] | None = None
        self._callbacks: list[Callable[[outcome.Outcome[Any]], None]] = []

    @property
    def done(self) -> bool:
        return self._outcome is not None

    def resolve(self, value: Any) -> None:
        self._set(outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        self._set(outcome.Error(error))

    def _set(self, result: outcome.Outcome[Any]) -> None:
        if self._outcome is not None:
            return
        self._outcome = result
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call(callback, result)

    def on_done(self, callback: Callable[[outcome.Outcome[Any]], None]) -> None:
        if self._outcome is not None:
            _call(callback, self._outcome)
        else:
            self._callbacks.append(callback)

    def map(self, fn: Callable[[Any], Any]) -> Pending:
        """A ``Pending`` of ``fn(value)`` (an exception from ``fn`` fails it)."""
        child = Pending()

        def relay(result: outcome.Outcome[Any]) -> None:
            if not isinstance(result, outcome.Value):
                child._set(result)
                return
            try:
                child.resolve(fn(result.value))
            except Exception as exc:
                child.fail(exc)

        self.on_done(relay)
        return child
