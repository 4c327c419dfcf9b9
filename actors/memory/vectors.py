"""The in-memory float32 matrix of one tenant's fact embeddings, kept in sync with the table.

Rows are appended when a fact is committed and masked out when it is deleted; when more than
half the rows are dead the matrix is compacted. Only the event loop mutates it; searches run
in worker threads on a ``Snapshot``. Readers never see a torn row: a new row is written past
the end of every published snapshot, growth and compaction build new buffers and swap them
in, and a reader's old buffers stay alive as long as it holds them. A masked-out row that a
reader still sees is harmless: its fact is gone from the table, so the lookup drops it.
"""

from __future__ import annotations

from dataclasses import dataclass

from convergiod import native

_MIN_CAPACITY = 1024


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent view for one search: ``n`` rows of ``matrix`` and their ``alive`` mask."""

    matrix: memoryview
    alive: memoryview
    ids: list[int]
    n: int

    def top_k(self, query: bytes, k: int) -> list[tuple[int, float]]:
        """``(fact id, score)`` of the ``k`` live rows most similar to ``query``."""
        if self.n == 0 or k <= 0:
            return []
        hits = native.top_k(query, self.matrix, k, metric="dot", allow=self.alive)
        ids = self.ids
        return [(ids[row], score) for row, score in hits]


class VectorIndex:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._row_bytes = 4 * dim
        self._capacity = _MIN_CAPACITY
        self._buf = bytearray(self._capacity * self._row_bytes)
        self._alive = bytearray(self._capacity)
        self._ids: list[int] = []
        self._rows: dict[int, int] = {}
        self._snapshot = self._publish()

    def __len__(self) -> int:
        """Live rows."""
        return len(self._rows)

    @property
    def rows(self) -> int:
        """Rows in the matrix, live or dead."""
        return len(self._ids)

    def __contains__(self, fact_id: int) -> bool:
        return fact_id in self._rows

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def add(self, fact_id: int, vector: bytes) -> None:
        if len(vector) != self._row_bytes:
            raise ValueError(f"vector of {len(vector)} bytes, expected {self._row_bytes}")
        if fact_id in self._rows:
            self.remove(fact_id)
        n = len(self._ids)
        if n == self._capacity:
            self._grow(self._capacity * 2)
        rb = self._row_bytes
        self._buf[n * rb : (n + 1) * rb] = vector
        self._alive[n] = 1
        self._ids.append(fact_id)
        self._rows[fact_id] = n
        self._snapshot = self._publish()

    def remove(self, fact_id: int) -> bool:
        row = self._rows.pop(fact_id, None)
        if row is None:
            return False
        self._alive[row] = 0
        dead = len(self._ids) - len(self._rows)
        if dead > 1024 and dead > len(self._rows):
            self.compact()
        return True

    def compact(self) -> None:
        """Drop dead rows: new buffers, swapped in (readers keep the old ones)."""
        live = sorted(self._rows.values())
        capacity = max(_MIN_CAPACITY, 2 * len(live))
        rb = self._row_bytes
        buf = bytearray(capacity * rb)
        for new, old in enumerate(live):
            buf[new * rb : (new + 1) * rb] = self._buf[old * rb : (old + 1) * rb]
        ids = [self._ids[old] for old in live]
        alive = bytearray(capacity)
        alive[: len(live)] = b"\x01" * len(live)
        self._buf, self._alive, self._ids, self._capacity = buf, alive, ids, capacity
        self._rows = {fid: row for row, fid in enumerate(ids)}
        self._snapshot = self._publish()

    def _grow(self, capacity: int) -> None:
        buf = bytearray(capacity * self._row_bytes)
        buf[: len(self._buf)] = self._buf
        alive = bytearray(capacity)
        alive[: len(self._alive)] = self._alive
        self._buf, self._alive, self._capacity = buf, alive, capacity

    def _publish(self) -> Snapshot:
        n = len(self._ids)
        return Snapshot(
            matrix=memoryview(self._buf)[: n * self._row_bytes],
            alive=memoryview(self._alive)[:n],
            ids=self._ids,
            n=n,
        )
