"""The in-memory float32 matrix of one tenant's fact embeddings, kept in sync with the table.

Rows are appended when a fact is committed and masked out when it is deleted; when more than
half the rows are dead the matrix is compacted. Only the event loop mutates it; searches run
in worker threads on a ``Snapshot``. Readers never see a torn row: a new row is written past
the end of every published snapshot, growth and compaction build new buffers and swap them
in, and a reader's old buffers stay alive as long as it holds them. A masked-out row that a
reader still sees is harmless: its fact is gone from the table, so the lookup drops it.

Beside the float32 matrix lives an int8 copy (one scale per row, ``native.quantize_into``).
A search over a large matrix scans the int8 copy first, 4x less memory to read, and
re-scores only its best ``candidates`` rows exactly in float32 (``native.top_k_quantized``):
the scores returned are always the exact float32 ones, and the rows are the exact top-k
unless one of them ranked below that many others by the int8 approximation (with 1024
candidates for k = 40: identical on the benchmark's 600 queries at 100,000 facts; rows of
equal score at the cut may be picked differently). Small matrices are scanned exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from convergiod import native

_MIN_CAPACITY = 1024
#: From this many rows on, searches preselect on the int8 copy (below, an exact scan of the
#: float32 matrix takes about a millisecond anyway).
QUANTIZED_MIN_ROWS = 16384
#: Rows the int8 scan hands to the exact re-rank: at least this many, and 16 per wanted row.
MIN_CANDIDATES = 1024
CANDIDATES_PER_ROW = 16


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent view for one search: ``n`` rows of ``matrix`` (and of its int8 copy
    ``qmatrix`` with ``scales``) and their ``alive`` mask."""

    matrix: memoryview
    qmatrix: memoryview
    scales: memoryview
    alive: memoryview
    ids: list[int]
    n: int

    def top_k(self, query: bytes, k: int) -> list[tuple[int, float]]:
        """``(fact id, score)`` of the ``k`` live rows most similar to ``query``."""
        if self.n == 0 or k <= 0:
            return []
        if self.n >= QUANTIZED_MIN_ROWS and k < self.n:
            hits = native.top_k_quantized(
                query,
                self.matrix,
                self.qmatrix,
                self.scales,
                k,
                candidates=max(MIN_CANDIDATES, CANDIDATES_PER_ROW * k),
                allow=self.alive,
            )
        else:
            hits = native.top_k(query, self.matrix, k, metric="dot", allow=self.alive)
        ids = self.ids
        return [(ids[row], score) for row, score in hits]


class VectorIndex:
    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._row_bytes = 4 * dim
        self._capacity = _MIN_CAPACITY
        self._buf = bytearray(self._capacity * self._row_bytes)
        self._q8 = bytearray(self._capacity * dim)
        self._scales = bytearray(self._capacity * 4)
        self._alive = bytearray(self._capacity)
        self._ids: list[int] = []
        self._rows: dict[int, int] = {}
        self._snapshot: Snapshot | None = None

    def __len__(self) -> int:
        """Live rows."""
        return len(self._rows)

    @property
    def rows(self) -> int:
        """Rows in the matrix, live or dead."""
        return len(self._ids)

    @property
    def last_id(self) -> int:
        """The newest fact id in the matrix (0 when empty): ids only grow."""
        return self._ids[-1] if self._ids else 0

    def __contains__(self, fact_id: int) -> bool:
        return fact_id in self._rows

    def snapshot(self) -> Snapshot:
        """The current view, published lazily (many adds in a row publish once)."""
        snap = self._snapshot
        if snap is None:
            snap = self._snapshot = self._publish()
        return snap

    def add(self, fact_id: int, vector: bytes, quantized: bytes | None = None) -> None:
        """Append (or replace) the row of ``fact_id``. ``quantized``, when given, is
        ``native.quantize_row(vector)`` computed beforehand (e.g. off the event loop)."""
        rb, dim = self._row_bytes, self.dim
        if len(vector) != rb:
            raise ValueError(f"vector of {len(vector)} bytes, expected {rb}")
        if fact_id in self._rows:
            self.remove(fact_id)
        n = len(self._ids)
        if n == self._capacity:
            self._grow(self._capacity * 2)
        self._buf[n * rb : (n + 1) * rb] = vector
        if quantized is None:
            quantized = native.quantize_row(vector)
        elif len(quantized) != dim + 4:
            raise ValueError(f"quantized row of {len(quantized)} bytes, expected {dim + 4}")
        self._q8[n * dim : (n + 1) * dim] = quantized[:dim]
        self._scales[4 * n : 4 * n + 4] = quantized[dim:]
        self._alive[n] = 1
        self._ids.append(fact_id)
        self._rows[fact_id] = n
        self._snapshot = None

    def add_many(self, ids: list[int], vectors: bytes) -> None:
        """``add`` for several rows: their float32 ``vectors`` one after the other, quantized
        here in one call."""
        k, rb, dim = len(ids), self._row_bytes, self.dim
        if len(vectors) != k * rb:
            raise ValueError(f"vectors of {len(vectors)} bytes, expected {k} x {rb}")
        rows = self._rows
        if len(set(ids)) != k or any(fid in rows for fid in ids):  # rows replaced: one by one
            for i, fid in enumerate(ids):
                self.add(fid, vectors[i * rb : (i + 1) * rb])
            return
        n = len(self._ids)
        capacity = self._capacity
        while n + k > capacity:
            capacity *= 2
        if capacity != self._capacity:
            self._grow(capacity)
        self._buf[n * rb : (n + k) * rb] = vectors
        native.quantize_into(
            vectors,
            dim,
            memoryview(self._q8)[n * dim : (n + k) * dim],
            memoryview(self._scales)[4 * n : 4 * (n + k)],
        )
        self._alive[n : n + k] = b"\x01" * k
        self._ids.extend(ids)
        rows.update(zip(ids, range(n, n + k), strict=True))
        self._snapshot = None

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
        rb, dim = self._row_bytes, self.dim
        buf = bytearray(capacity * rb)
        q8 = bytearray(capacity * dim)
        scales = bytearray(capacity * 4)
        for new, old in enumerate(live):
            buf[new * rb : (new + 1) * rb] = self._buf[old * rb : (old + 1) * rb]
            q8[new * dim : (new + 1) * dim] = self._q8[old * dim : (old + 1) * dim]
            scales[4 * new : 4 * new + 4] = self._scales[4 * old : 4 * old + 4]
        ids = [self._ids[old] for old in live]
        alive = bytearray(capacity)
        alive[: len(live)] = b"\x01" * len(live)
        self._buf, self._q8, self._scales = buf, q8, scales
        self._alive, self._ids, self._capacity = alive, ids, capacity
        self._rows = {fid: row for row, fid in enumerate(ids)}
        self._snapshot = None

    def _grow(self, capacity: int) -> None:
        def grown(old: bytearray, per_row: int) -> bytearray:
            new = bytearray(capacity * per_row)
            new[: len(old)] = old
            return new

        self._buf = grown(self._buf, self._row_bytes)
        self._q8 = grown(self._q8, self.dim)
        self._scales = grown(self._scales, 4)
        self._alive = grown(self._alive, 1)
        self._capacity = capacity
        self._snapshot = None

    def _publish(self) -> Snapshot:
        n = len(self._ids)
        return Snapshot(
            matrix=memoryview(self._buf)[: n * self._row_bytes],
            qmatrix=memoryview(self._q8)[: n * self.dim],
            scales=memoryview(self._scales)[: 4 * n],
            alive=memoryview(self._alive)[:n],
            ids=self._ids,
            n=n,
        )
