"""Facts: remember, forget, and hybrid search (FTS5 bm25 + vectors, reciprocal rank fusion).

Functions here are blocking and take a connection: writes run inside the writer's group
commit, reads on a reader thread. Every query names the tenant's own database only, so
isolation between tenants is a property of which file is open, not of a ``WHERE`` clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import apsw

from convergiod import native
from convergiod.errors import OpError

from .messages import Fact, Hit, Remember
from .schema import fact_uid
from .store import scalar
from .terms import TermStats
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
    con: apsw.Connection,
    post: Post,
    msg: Remember,
    now: float,
    index: VectorIndex,
    vector: bytes | None = None,
) -> Fact:
    """Store a fact (``vector``: its embedding, when computed beforehand). Without
    ``supersedes`` it changes the database with one statement, the last thing that can
    fail: an ``atomic`` write (see writer.py)."""
    if vector is None:
        vector = native.embed_bytes(msg.text, index.dim)
    quantized = native.quantize_row(vector)
    uid = fact_uid(msg.text, msg.kind, msg.source, msg.conversation, now)
    if msg.supersedes is not None:
        old = con.execute("SELECT valid_to FROM facts WHERE id = ?", (msg.supersedes,)).fetchone()
        if old is None:
            raise OpError("not_found", f"fact {msg.supersedes} does not exist")
        con.execute(
            "UPDATE facts SET valid_to = ? WHERE id = ? AND valid_to IS NULL",
            (now, msg.supersedes),
        )
    row = con.execute(
        _INSERT + f" RETURNING {COLUMNS}",
        (msg.text, msg.kind, msg.source, msg.importance, msg.conversation, now, uid, vector),
    ).fetchone()
    if row is None:  # the very same fact at the very same instant: it is already there
        row = con.execute(
            f"SELECT {COLUMNS} FROM facts WHERE valid_from = ? AND uid = ?", (now, uid)
        ).fetchone()
        return to_fact(row)
    fid = row[0]
    post.append(lambda: index.add(fid, vector, quantized))
    return to_fact(row)


_INSERT = (
    "INSERT INTO facts (text, kind, source, importance, conversation, valid_from, uid,"
    " embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (valid_from, uid) DO NOTHING"
)
#: The largest rowid SQLite hands out in sequence (past it, it picks free ones at random).
_MAX_ROWID = (1 << 63) - 1
_ROW_MARKS = "(?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_HEAD = _INSERT.split("VALUES")[0] + "VALUES "
_INSERT_TAIL = " ON CONFLICT (valid_from, uid) DO NOTHING"
#: Multi-row INSERTs of at most this many rows stay prepared (apsw's statement cache).
_CACHED_ROWS = 64


class RememberItem(NamedTuple):
    """One remembered fact's part of a ``remember_many`` group."""

    msg: Remember
    now: float
    vectors: VectorIndex
    embedding: bytes  # native.embed_bytes(msg.text, vectors.dim)


def remember_many(con: apsw.Connection, post: Post, items: list[RememberItem]) -> list[Fact]:
    """``remember`` for a group of writes (none with ``supersedes``, all of one tenant, each
    with its embedding computed beforehand) as one multi-row INSERT: one call into SQLite,
    where a call per fact let the event loop take the GIL from the writer once per fact
    (see writer.py). The vector matrix gets the group's rows at once after the commit.

    The ids come from SQLite's rowid rule (ids are never given explicitly, so each new row
    gets the largest rowid plus one): when the INSERT made all its ``n`` rows, they got
    ``last - n + 1`` to ``last``, in order. When it made fewer (a fact already stored, or
    twice in the group: the very same fact at the very same instant) the group's facts are
    looked up by uid. Raises only before changing anything: an error after the INSERT is a
    RuntimeError (the batch fails and rolls back).
    """
    index = items[0].vectors
    n = len(items)
    params: list[Any] = []
    for msg, now, _, vector in items:
        params += (
            msg.text,
            msg.kind,
            msg.source,
            msg.importance,
            msg.conversation,
            now,
            fact_uid(msg.text, msg.kind, msg.source, msg.conversation, now),
            vector,
        )
    sql = _INSERT_HEAD + ", ".join([_ROW_MARKS] * n) + _INSERT_TAIL
    con.execute(sql, params, can_cache=n <= _CACHED_ROWS)
    try:
        last = con.last_insert_rowid()
        if con.changes() == n and last < _MAX_ROWID:
            facts = [
                Fact(
                    id=fid,
                    text=msg.text,
                    kind=msg.kind,
                    source=msg.source,
                    importance=float(msg.importance),
                    conversation=msg.conversation,
                    valid_from=now,
                    valid_to=None,
                    access_count=0,
                )
                for fid, (msg, now, _, _) in zip(range(last - n + 1, last + 1), items, strict=True)
            ]
        else:
            lookup = f"SELECT {COLUMNS} FROM facts WHERE valid_from = ? AND uid = ?"
            facts = [
                to_fact(con.execute(lookup, params[8 * i + 5 : 8 * i + 7]).fetchone())
                for i in range(n)
            ]
    except Exception as exc:
        raise RuntimeError(f"remembered facts not found after their INSERT: {exc!r}") from exc
    # Every fact of the group goes to the matrix: one stored before (its uid matched) gets
    # its own identical row again, which add_many replaces.
    ids = [f.id for f in facts]
    matrix = b"".join(item.embedding for item in items)
    post.append(lambda: index.add_many(ids, matrix))
    return facts


def forget(con: apsw.Connection, post: Post, fact_id: int, index: VectorIndex) -> bool:
    """Delete a fact: one statement (its trigger updates the keyword index), ``atomic``."""
    con.execute("DELETE FROM facts WHERE id = ?", (fact_id,))
    if con.changes() == 0:
        return False
    post.append(lambda: index.remove(fact_id))
    return True


# ----------------------------------------------------------------------------- search


def query_words(text: str) -> list[str]:
    """The distinct words of a search text that reach FTS5, in order (at most
    ``MAX_QUERY_TERMS``)."""
    return list(dict.fromkeys(_WORD.findall(text)))[:MAX_QUERY_TERMS]


def fts_query(text: str | list[str]) -> str | None:
    """A safe FTS5 query for any user text (or its ``query_words``): every word quoted,
    joined by OR (bm25 ranks documents matching more and rarer words first). None when the
    text has no words."""
    words = query_words(text) if isinstance(text, str) else text
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


#: Matching facts a keyword search may score (at ~1.5 µs each) before it narrows its plan.
KEYWORD_BUDGET = 2000


@dataclass(frozen=True, slots=True)
class KeywordPlan:
    """An FTS5 query and how to rank it: by bm25 (``recency`` False), over the facts with
    ``id >= low`` only when ``low`` is set (the most recent ones), or newest first."""

    query: str
    low: int | None = None
    recency: bool = False


def plan_keywords(
    words: list[str], df: dict[str, int], total: int, last_id: int
) -> KeywordPlan | None:
    """Bound a keyword search's work by the document frequencies of its words.

    When the words' facts add up to at most ``KEYWORD_BUDGET``: bm25 over every word (the
    exact ranking). Otherwise the words in half the facts or more are left out, since bm25
    gives them a weight of ~0 (the vector side still sees them), and then:
    - the rarest words whose facts fit the budget are ranked by bm25 over all facts;
    - if even the rarest word is too common, bm25 ranks the most recent facts only, as many
      as the budget allows for these words' density;
    - if every word is in half the facts or more, the newest matching facts come first.
    """
    if not words:
        return None
    if sum(df.values()) <= KEYWORD_BUDGET:
        return KeywordPlan(fts_query(words) or "")
    informative = sorted((w for w in words if 2 * df[w] < total), key=lambda w: df[w])
    if not informative:
        return KeywordPlan(fts_query(words) or "", recency=True)
    rare: list[str] = []
    postings = 0
    for w in informative:
        if postings + df[w] > KEYWORD_BUDGET:
            break
        rare.append(w)
        postings += df[w]
    if rare:
        return KeywordPlan(fts_query(rare) or "")
    density = sum(df[w] for w in informative) / max(total, 1)
    window = int(KEYWORD_BUDGET / max(density, 1e-9))
    return KeywordPlan(fts_query(informative) or "", low=max(0, last_id - window))


def keyword_candidates(
    con: apsw.Connection,
    words: list[str],
    filt: Filter,
    n: int,
    stats: TermStats,
    total: int,
    last_id: int,
) -> list[Fact]:
    """Up to ``n`` facts passing ``filt`` that match ``words``, best first (see
    ``plan_keywords``). Asks FTS5 for more while filters leave too few."""
    df = {w: stats.doc_freq(con, w, total) for w in words}
    plan = plan_keywords(words, df, total, last_id)
    if plan is None:
        return []
    where, params = filt.sql()
    order = "rowid DESC" if plan.recency else "rank"
    low = plan.low
    m = n
    while True:
        window = "" if low is None else " AND rowid >= ?"
        try:
            ids = [
                r[0]
                for r in con.execute(
                    f"SELECT rowid FROM facts_fts WHERE facts_fts MATCH ?{window}"
                    f" ORDER BY {order} LIMIT ?",
                    [plan.query, *([] if low is None else [low]), m],
                )
            ]
        except apsw.SQLError as exc:  # fts_query() should make this impossible; never a crash
            raise OpError("bad_request", f"invalid search query: {exc}") from None
        out: list[Fact] = []
        if ids:
            marks = ",".join("?" * len(ids))
            found = {
                row[0]: row
                for row in con.execute(
                    f"SELECT {COLUMNS} FROM facts WHERE id IN ({marks}) AND {where}",
                    [*ids, *params],
                )
            }
            out = [to_fact(found[i]) for i in ids if i in found]
        if len(out) >= n:
            return out[:n]
        if len(ids) == m:
            m *= 4  # the filters took some: ask for more
        elif low is not None and low > 0:
            low = max(0, low - 4 * max(last_id - low, 1))  # too few recent matches: widen
            low = low or None
        else:
            return out


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
        total = one("SELECT count(*) FROM facts")
        counts = {
            "facts": total,
            # counted on the partial index facts_superseded (schema V3)
            "current_facts": total - one("SELECT count(*) FROM facts WHERE valid_to IS NOT NULL"),
            "conversations": one("SELECT count(*) FROM conversations"),
            "messages": one("SELECT count(*) FROM messages"),
            "usage_records": one("SELECT count(*) FROM usage"),
            "tasks": one("SELECT count(*) FROM tasks"),
            "entities": one("SELECT count(*) FROM entities"),
            "bytes": one("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size"),
            "schema_version": one("PRAGMA user_version"),
        }
    return counts
