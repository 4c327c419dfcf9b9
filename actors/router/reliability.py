"""How the router reacts to failures: which errors are retried, how long to wait, and when a
deployment is put in cooldown.

| failure                                   | retry same model | fall back | counts to cooldown |
|-------------------------------------------|------------------|-----------|--------------------|
| 429, 408, 5xx (incl. 529), ``error`` event | yes (backoff, ``Retry-After``) | yes | yes |
| connect error, timeout, disconnect, malformed chunk (before output) | yes | yes | yes |
| 401, 403                                  | no               | yes       | cooldown at once   |
| 400, 404, 413, 422 (the request is wrong) | no               | no        | no                 |
| any failure after output was streamed     | no (never replay) | no       | yes                |

Time and randomness are injected (``clock``, ``rng``) so tests are exact.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "Cooldowns", "ProviderError", "parse_retry_after"]


class ProviderError(Exception):
    """A failed attempt at one deployment. ``code`` is the protocol error code the client
    sees if nothing else succeeds."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        fallback: bool = True,
        retry_after: float | None = None,
        code: str = "provider_unavailable",
        cooldown_now: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.fallback = fallback
        self.retry_after = retry_after
        self.code = code
        self.cooldown_now = cooldown_now

    @classmethod
    def from_status(
        cls, status: int, body: str, retry_after: float | None, provider: str
    ) -> ProviderError:
        detail = body.strip().replace("\n", " ")[:300]
        message = (
            f"{provider} answered HTTP {status}: {detail}"
            if detail
            else (f"{provider} answered HTTP {status}")
        )
        if status in (401, 403):
            return cls(message, status=status, retryable=False, cooldown_now=True)
        if status == 429 or status == 408 or status >= 500:
            return cls(message, status=status, retry_after=retry_after)
        return cls(message, status=status, retryable=False, fallback=False, code="bad_request")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": half fixed, half random, capped; a server's
    ``Retry-After`` wins when it is longer (capped at ``retry_after_max``)."""

    base: float = 0.25
    maximum: float = 10.0
    retry_after_max: float = 60.0
    rng: random.Random | None = None

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        jitter = (self.rng or random).random()
        ceiling = min(self.maximum, self.base * (2**attempt))
        wait: float = ceiling / 2 + jitter * ceiling / 2
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.retry_after_max))
        return wait


@dataclass
class _State:
    failures: int = 0
    until: float = 0.0
    last_error: str = ""


class Cooldowns:
    """Per-deployment health: ``threshold`` consecutive failures (or one auth failure) take
    a deployment out of rotation for ``period`` seconds; a success resets it. Applies even
    when a group has a single model: callers then get ``provider_unavailable`` at once,
    with ``retry_after``, instead of hammering a failing upstream."""

    def __init__(
        self, threshold: int, period: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.threshold = threshold
        self.period = period
        self.clock = clock
        self._states: dict[str, _State] = {}

    def cooling(self, name: str) -> float | None:
        """Seconds left in cooldown, or None when the deployment may be used."""
        state = self._states.get(name)
        if state is None or not state.until:
            return None
        left = state.until - self.clock()
        if left <= 0:
            return None
        return left

    def failed(self, name: str, error: str, *, now: bool = False) -> bool:
        """Count a failure; True when this put the deployment in cooldown."""
        state = self._states.setdefault(name, _State())
        state.failures += 1
        state.last_error = error
        if now or state.failures >= self.threshold:
            state.until = self.clock() + self.period
            state.failures = 0
            return True
        return False

    def succeeded(self, name: str) -> None:
        state = self._states.get(name)
        if state is not None:
            state.failures = 0
            state.until = 0.0

    def snapshot(self, name: str) -> tuple[float | None, int, str]:
        """(cooldown end as wall time or None, consecutive failures, last error)."""
        state = self._states.get(name)
        if state is None:
            return None, 0, ""
        until = state.until if state.until > self.clock() else None
        return until, state.failures, state.last_error
