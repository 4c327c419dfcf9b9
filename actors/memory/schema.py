"""The tenant database schema and its migrations, keyed by ``PRAGMA user_version``.

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``. A migration is SQL text
or a function of the connection; each runs in its own transaction together with the
``user_version`` bump, so a crash mid-migration leaves the previous version intact. Never
edit a migration that has shipped: add the next one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import apsw

from convergiod import native

#: Version 1: the first schema. Kept verbatim: the upgrade test builds a database from it.
V1 = """
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    agent TEXT,
    content TEXT NOT NULL,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    parent INTEGER REFERENCES messages(id) ON DELETE SET NULL,
    created REAL NOT NULL
);
CREATE INDEX messages_by_conversation ON messages(conversation, id);

CREATE TABLE facts (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    importance REAL NOT NULL DEFAULT 0.5,
    conversation TEXT,
    valid_from REAL NOT NULL,
    valid_to REAL,
    access_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX facts_by_kind ON facts(kind);
CREATE INDEX facts_by_conversation ON facts(conversation);

CREATE VIRTUAL TABLE facts_fts USING fts5(
    text, content='facts', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER facts_ai AFTER INSERT ON facts BEGIN
    INSERT INTO facts_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER facts_ad AFTER DELETE ON facts BEGIN
    INSERT INTO facts_fts(facts_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER facts_au AFTER UPDATE OF text ON facts BEGIN
    INSERT INTO facts_fts(facts_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO facts_fts(rowid, text) VALUES (new.id, new.text);
END;

CREATE TABLE entities (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'thing',
    created REAL NOT NULL,
    UNIQUE (name, type)
);
CREATE TABLE relations (
    id INTEGER PRIMARY KEY,
    subject INTEGER NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
    predicate TEXT NOT NULL,
    object INTEGER NOT NULL REFERENCES entities(id) ON DELETE CASCADE,
    fact INTEGER REFERENCES facts(id) ON DELETE SET NULL,
    valid_from REAL NOT NULL,
    valid_to REAL
);
CREATE INDEX relations_by_subject ON relations(subject);
CREATE INDEX relations_by_object ON relations(object);

CREATE TABLE usage (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    time REAL NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    agent TEXT,
    task TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    estimated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_by_time ON usage(time);

CREATE TABLE approvals (
    tool TEXT NOT NULL,
    key TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (tool, key)
) WITHOUT ROWID;

CREATE TABLE tasks (
    task TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    agent TEXT NOT NULL,
    conversation TEXT,
    result TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX tasks_by_created ON tasks(created);
CREATE TABLE task_steps (
    task TEXT NOT NULL REFERENCES tasks(task) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    step TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (task, step)
) WITHOUT ROWID;
"""


#: ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``, made once (json.dumps
#: builds an encoder per call for non-default arguments).
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def fact_uid(text: str, kind: str, source: str, conversation: str | None, valid_from: float) -> str:
    """The stable content id of a fact: what export/import key on (import twice adds nothing)."""
    canonical = _CANONICAL.encode([text, kind, source, conversation, repr(float(valid_from))])
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _v2(con: apsw.Connection) -> None:
    """Version 2: a stable content id per fact (idempotent import) and its stored embedding
    (the in-memory vector matrix is rebuilt from it at open, without re-embedding)."""
    con.execute("ALTER TABLE facts ADD COLUMN uid TEXT")
    con.execute("ALTER TABLE facts ADD COLUMN embedding BLOB")
    rows = list(con.execute("SELECT id, text, kind, source, conversation, valid_from FROM facts"))
    for fid, text, kind, source, conversation, valid_from in rows:
        con.execute(
            "UPDATE facts SET uid = ?, embedding = ? WHERE id = ?",
            (
                fact_uid(text, kind, source, conversation, valid_from),
                native.embed(text).tobytes(),
                fid,
            ),
        )
    con.execute("CREATE UNIQUE INDEX facts_by_uid ON facts(uid)")
    con.execute("CREATE INDEX facts_by_validity ON facts(valid_to, valid_from)")


#: Version 3: indexes that cost every group commit less. Each index of ``facts`` rewrites at
#: least one or two of its pages (4 KiB of WAL each) per commit, whatever the number of
#: facts in it.
#: - The uniqueness of a fact's uid is kept by an index on (valid_from, uid), not on uid
#:   alone. A uid is a hash, so each new fact went to a random page of the uid index: with 16
#:   facts per commit, ~16 index pages rewritten, more than the facts themselves. New facts
#:   have the latest valid_from, so now they go to the index's last page. The same
#:   constraint: a uid hashes its valid_from, so equal uids have equal valid_from. Lookups by
#:   uid name the valid_from too.
#: - No query used the indexes on kind and on conversation (the search filters run on the
#:   candidate ids), and the one on validity served only the count of current facts: it is
#:   now a partial index of the superseded facts, which new facts do not touch.
V3 = """
DROP INDEX facts_by_uid;
DROP INDEX facts_by_kind;
DROP INDEX facts_by_conversation;
DROP INDEX facts_by_validity;
CREATE UNIQUE INDEX facts_by_time_uid ON facts(valid_from, uid);
CREATE INDEX facts_superseded ON facts(valid_to) WHERE valid_to IS NOT NULL;
"""

#: Version 4: a task's record and the message it adds to its conversation written by one
#: statement (an INSERT into the view ``task_writes``, whose trigger does the three writes
#: inside SQLite). The memory writer's thread waits for the event loop to hand it the GIL
#: back after each SQLite call, and under load that wait, not the work, is the cost of a
#: write: one call per task record instead of four (with the token count made before).
V4 = """
CREATE VIEW task_writes AS SELECT
    NULL AS task, NULL AS status, NULL AS request, NULL AS agent, NULL AS conversation,
    NULL AS result, NULL AS now, NULL AS msg_conversation, NULL AS role, NULL AS msg_agent,
    NULL AS content, NULL AS tokens, NULL AS cost;
CREATE TRIGGER task_writes_insert INSTEAD OF INSERT ON task_writes BEGIN
    INSERT INTO tasks (task, status, request, agent, conversation, result, created, updated)
    VALUES (NEW.task, NEW.status, NEW.request, NEW.agent, NEW.conversation, NEW.result,
            NEW.now, NEW.now)
    ON CONFLICT (task) DO UPDATE SET
        status = excluded.status, request = excluded.request, agent = excluded.agent,
        conversation = excluded.conversation, result = excluded.result,
        updated = excluded.updated;
    INSERT INTO conversations (id, created, updated)
    SELECT NEW.msg_conversation, NEW.now, NEW.now WHERE NEW.content IS NOT NULL
    ON CONFLICT (id) DO UPDATE SET updated = excluded.updated;
    INSERT INTO messages (conversation, role, agent, content, tokens, cost, parent, created)
    SELECT NEW.msg_conversation, NEW.role, NEW.msg_agent, NEW.content, NEW.tokens, NEW.cost,
           NULL, NEW.now
    WHERE NEW.content IS NOT NULL;
END;
"""

Migration = str | Callable[[apsw.Connection], None]
MIGRATIONS: tuple[Migration, ...] = (V1, _v2, V3, V4)
VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was written by a newer Convergio."""


def migrate(con: apsw.Connection, target: int = VERSION) -> int:
    """Bring ``con`` up to ``target``; returns the version found before migrating."""
    found = int(con.pragma("user_version"))
    if found > VERSION:
        raise SchemaTooNew(f"schema version {found} is newer than this daemon's {VERSION}")
    for version in range(found, target):
        step = MIGRATIONS[version]
        with con:
            if isinstance(step, str):
                con.execute(step)
            else:
                step(con)
            con.pragma("user_version", version + 1)
    return found
