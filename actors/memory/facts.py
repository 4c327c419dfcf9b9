"""Facts: remember, forget, and hybrid search (FTS5 bm25 + vectors, reciprocal rank fusion).

Functions here are blocking and take a connection: writes run inside the writer's group
commit, reads on a reader thread. Every query names the tenant's own database only, so
isolation between tenants is a property of which file is open, not of a ``WHERE`` clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import apsw

from convergiod import native
from convergiod.errors import OpError

from .messages import Fact, Hit, Remember
from .schema import fact_uid
from .store import scalar
from .vectors import Snapshot, VectorIndex
from .writer import Post

COLUMNS = "id, text, kind, source, importance, conversation, valid_from, valid_to, access_count"
#: Reciprocal rank fusion constant (Cormack et al.): score = sum of 1 / (RRF_K + rank).
RRF_K = 60
#: Words of a query that reach FTS5; the rest are ignored.
MAX_QUERY_TERMS = 32
_WORD = re.compile(r"\w+")


def to_fact(row: Any) -> Fact:
    fid, text, kind, source, importance, conversation, valid_from, valid_to, access = row
    return Fact(
        id=fid,
        text=text,
        kind=kind,
        source=source,
        importance=importance,
        conversation=conversation,
        valid_from=valid_from,
        valid_to=valid_to,
        access_count=access,
    )


# ----------------------------------------------------------------------------- writes


def remember(
    con: apsw.Connection, post: Post, msg: Remember, now: float, index: VectorIndex
) -> Fact:
    vector = native.embed(msg.text, index.dim).tobytes()
    if msg.supersedes is not None:
        old = con.execute("SELECT valid_to FROM facts WHERE id = ?", (msg.supersedes,)).fetchone()
        if old is None:
            raise OpError("not_found", f"fact {msg.supersedes} does not exist")
        con.execute(
            "UPDATE facts SET valid_to = ? WHERE id = ? AND valid_to IS NULL",
            (now, msg.supersedes),
        )
    uid = fact_uid(msg.text, msg.kind, msg.source, msg.conversation, now)
    row = con.execute(
        "INSERT INTO facts (text, kind, source, importance, conversation, valid_from, uid,"
        " embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (uid) DO NOTHING"
        f" RETURNING {COLUMNS}",
        (msg.text, msg.kind, msg.source, msg.importance, msg.conversation, now, uid, vector),
    ).fetchone()
    if row is None:  # the very same fact at the very same instant: it is already there
        row = con.execute(f"SELECT {COLUMNS} FROM facts WHERE uid = ?", (uid,)).fetchone()
        return to_fact(row)
    post.append(lambda: index.add(row[0], vector))
    return to_fact(row)


def forget(con: apsw.Connection, post: Post, fact_id: int, index: VectorIndex) -> bool:
    con.execute("DELETE FROM facts WHERE id = ?", (fact_id,))
    if con.changes() == 0:
        return False
    post.append(lambda: index.remove(fact_id))
    return True


# ----------------------------------------------------------------------------- search


def fts_query(text: str) -> str | None:
    """A safe FTS5 query for any user text: every word quoted, joined by OR (bm25 ranks
    documents matching more and rarer words first). None when the text has no words."""
    words = _WORD.findall(text)[:MAX_QUERY_TERMS]
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)


@dataclass(frozen=True, slots=True)
class Filter:
    at: float
    kind: str | None = None
    conversation: str | None = None

    def sql(self, alias: str = "") -> tuple[str, list[Any]]:
        p = f"{alias}." if alias else ""
        clauses = [f"{p}valid_from <= ?", f"({p}valid_to IS NULL OR {p}valid_to > ?)"]
        params: list[Any] = [self.at, self.at]
        if self.kind is not None:
            clauses.append(f"{p}kind = ?")
            params.append(self.kind)
        if self.conversation is not None:
            clauses.append(f"{p}conversation = ?")
            params.append(self.conversation)
        return " AND ".join(clauses), params


def keyword_candidates(con: apsw.Connection, query: str, filt: Filter, n: int) -> list[Fact]:
    where, params = filt.sql("f")
    cols = ", ".join(f"f.{c.strip()}" for c in COLUMNS.split(","))
    try:
        rows = con.execute(
            f"SELECT {cols} FROM facts_fts JOIN facts f ON f.id = facts_fts.rowid"
            f" WHERE facts_fts MATCH ? AND {where} ORDER BY bm25(facts_fts) LIMIT ?",
            [query, *params, n],
        ).fetchall()
    except apsw.SQLError as exc:  # fts_query() should make this impossible; never a crash
        raise OpError("bad_request", f"invalid search query: {exc}") from None
    return [to_fact(r) for r in rows]


def vector_candidates(
    con: apsw.Connection,
    snapshot: Snapshot,
    query: bytes,
    filt: Filter,
    n: int,
    min_similarity: float,
) -> list[tuple[Fact, float]]:
    """Up to ``n`` facts passing ``filt``, most similar first. Asks the matrix for more rows
    while filters or deleted rows leave too few."""
    where, params = filt.sql()
    k = max(2 * n, 32)
    while True:
        hits = [(fid, s) for fid, s in snapshot.top_k(query, k) if s >= min_similarity]
        if not hits:
            return []
        marks = ",".join("?" * len(hits))
        found = {
            row[0]: row
            for row in con.execute(
                f"SELECT {COLUMNS} FROM facts WHERE id IN ({marks}) AND {where}",
                [*(fid for fid, _ in hits), *params],
            )
        }
        out = [(to_fact(found[fid]), s) for fid, s in hits if fid in found]
        exhausted = len(hits) < k or k >= snapshot.n
        if len(out) >= n or exhausted:
            return out[:n]
        k *= 4


def fuse(keyword: list[Fact], vector: list[tuple[Fact, float]], limit: int) -> list[Hit]:
    """Reciprocal rank fusion of the two ranked lists; ties go to the older fact."""
    facts: dict[int, Fact] = {}
    krank: dict[int, int] = {}
    vrank: dict[int, int] = {}
    for rank, fact in enumerate(keyword, 1):
        facts[fact.id] = fact
        krank[fact.id] = rank
    for rank, (fact, _) in enumerate(vector, 1):
        facts.setdefault(fact.id, fact)
        vrank[fact.id] = rank
    scored = []
    for fid, fact in facts.items():
        score = 0.0
        if fid in krank:
            score += 1.0 / (RRF_K + krank[fid])
        if fid in vrank:
            score += 1.0 / (RRF_K + vrank[fid])
        scored.append((-score, fid, fact))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [
        Hit(
            fact=fact,
            score=round(-neg, 9),
            keyword_rank=krank.get(fid),
            vector_rank=vrank.get(fid),
        )
        for neg, fid, fact in scored[:limit]
    ]


# ----------------------------------------------------------------------------- stats


def stats(con: apsw.Connection) -> dict[str, int]:
    def one(sql: str) -> int:
        return int(scalar(con, sql))

    with con:  # one snapshot for every count
        counts = {
            "facts": one("SELECT count(*) FROM facts"),
            "current_facts": one("SELECT count(*) FROM facts WHERE valid_to IS NULL"),
            "conversations": one("SELECT count(*) FROM conversations"),
            "messages": one("SELECT count(*) FROM messages"),
            "usage_records": one("SELECT count(*) FROM usage"),
            "tasks": one("SELECT count(*) FROM tasks"),
            "entities": one("SELECT count(*) FROM entities"),
            "bytes": one("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size"),
            "schema_version": one("PRAGMA user_version"),
        }
    return counts
