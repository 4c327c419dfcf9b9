"""Document frequencies of the keyword index's terms, for planning keyword searches."""

from __future__ import annotations

from typing import Any

import apsw

#: The fts5vocab table over facts_fts that every connection of a tenant gets, in its temp
#: schema (nothing is stored: it reads the index).
VOCAB = "temp.facts_vocab"
VOCAB_DDL = f"CREATE VIRTUAL TABLE IF NOT EXISTS {VOCAB} USING fts5vocab(main, facts_fts, row)"
#: The tokenizer of facts_fts (schema.V1), to split query words the way the index does.
_TOKENIZER = ("porter", ["unicode61", "remove_diacritics", "2"])


def _tokenizer(con: apsw.Connection) -> Any:
    return con.fts5_tokenizer(*_TOKENIZER)


class TermStats:
    """Document frequencies of FTS5 terms, cached per tenant for planning keyword searches.

    bm25 costs about 1.5 µs per matching document, so a query word found in most facts
    makes a search slow while adding almost nothing to its ranking (bm25's IDF of a term in
    half the documents or more is clamped to ~0). ``plan_keywords`` uses these counts to
    bound the work. A count is looked up (``fts5vocab``, cost proportional to it) the first
    time a term is seen and again once the number of facts has moved by a quarter; the
    common terms are loaded when the tenant opens (``prefill``). Shared by the reader
    threads: plain dict reads and writes, and a stale count only makes a plan less tight.
    """

    #: Terms remembered at most (the cache is emptied past it).
    MAX_TERMS = 50_000
    #: ``prefill`` keeps terms found in at least this many facts.
    PREFILL_MIN_DOCS = 256

    def __init__(self) -> None:
        self._df: dict[str, tuple[int, int]] = {}

    def prefill(self, con: apsw.Connection, total: int) -> None:
        """Load the counts of the common terms (one pass over the index)."""
        for term, doc in con.execute(
            f"SELECT term, doc FROM {VOCAB} WHERE doc >= ?", (self.PREFILL_MIN_DOCS,)
        ):
            self._df[term] = (doc, total)

    def doc_freq(self, con: apsw.Connection, word: str, total: int) -> int:
        """Facts holding ``word`` (an upper bound when it makes several tokens: a phrase)."""
        tokens = [t[2] for t in _tokenizer(con)(word.encode(), apsw.FTS5_TOKENIZE_QUERY, None)]
        if not tokens:
            return 0
        return min(self._token_df(con, t, total) for t in tokens)

    def _token_df(self, con: apsw.Connection, token: str, total: int) -> int:
        cached = self._df.get(token)
        if cached is not None and abs(total - cached[1]) <= max(64, cached[1] // 4):
            return cached[0]
        row = con.execute(f"SELECT doc FROM {VOCAB} WHERE term = ?", (token,)).fetchone()
        df = int(row[0]) if row else 0
        if len(self._df) >= self.MAX_TERMS:
            self._df.clear()
        self._df[token] = (df, total)
        return df
