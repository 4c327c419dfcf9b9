"""Per-tenant admission on the TCP door: a token bucket for the request rate and a count of
requests in flight. Both answer with how long to wait, never by queueing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TenantLimits:
    rate: float
    burst: int
    max_in_flight: int


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    in_flight: int = 0


@dataclass
class TenantLimiter:
    """``limits_for(tenant)`` is read on every admission, so a ``tenant add`` override or a
    reloaded config applies at once. ``clock`` is injectable for tests."""

    limits_for: Callable[[str], TenantLimits]
    clock: Callable[[], float]
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def admit(self, tenant: str) -> float | None:
        """Take one token: ``None`` when admitted, else seconds until a token is there."""
        limits = self.limits_for(tenant)
        now = self.clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(tokens=float(limits.burst), stamp=now)
        else:
            bucket.tokens = min(
                float(limits.burst), bucket.tokens + (now - bucket.stamp) * limits.rate
            )
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / limits.rate

    def enter(self, tenant: str) -> int | None:
        """Count one more request in flight: ``None`` when admitted, else the limit hit."""
        limits = self.limits_for(tenant)
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(tokens=limits.burst, stamp=self.clock())
        if bucket.in_flight >= limits.max_in_flight:
            return limits.max_in_flight
        bucket.in_flight += 1
        return None

    def leave(self, tenant: str) -> None:
        self._buckets[tenant].in_flight -= 1

    def in_flight(self, tenant: str) -> int:
        bucket = self._buckets.get(tenant)
        return bucket.in_flight if bucket else 0
