"""Conversations, the usage ledger, remembered approvals and task checkpoints.

Blocking functions of a connection, like ``facts``: writes run in the writer's group commit,
reads on a reader thread.
"""

from __future__ import annotations

import time
from typing import Any

import apsw

from convergiod import native
from convergiod.errors import OpError

from . import messages as m
from .store import scalar
from .writer import Post

# ----------------------------------------------------------------------------- conversations


def append_message(con: apsw.Connection, post: Post, msg: m.AppendMessage, now: float) -> int:
    con.execute(
        "INSERT INTO conversations (id, created, updated) VALUES (?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET updated = excluded.updated",
        (msg.conversation, now, now),
    )
    if msg.parent is not None:
        parent = con.execute(
            "SELECT conversation FROM messages WHERE id = ?", (msg.parent,)
        ).fetchone()
        if parent is None or parent[0] != msg.conversation:
            raise OpError(
                "not_found", f"message {msg.parent} is not in conversation {msg.conversation!r}"
            )
    tokens = msg.tokens or native.estimate_tokens(msg.content)
    return int(
        scalar(
            con,
            "INSERT INTO messages (conversation, role, agent, content, tokens, cost, parent,"
            " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (msg.conversation, msg.role, msg.agent, msg.content, tokens, msg.cost, msg.parent, now),
        )
    )


def history(con: apsw.Connection, conversation: str, limit: int) -> list[m.StoredMessage]:
    rows = con.execute(
        "SELECT id, conversation, role, content, agent, tokens, cost, parent, created"
        " FROM messages WHERE conversation = ? ORDER BY id DESC LIMIT ?",
        (conversation, limit),
    ).fetchall()
    return [
        m.StoredMessage(
            id=r[0],
            conversation=r[1],
            role=r[2],
            content=r[3],
            agent=r[4],
            tokens=r[5],
            cost=r[6],
            parent=r[7],
            created=r[8],
        )
        for r in reversed(rows)
    ]


# ----------------------------------------------------------------------------- usage


def record_usage(con: apsw.Connection, post: Post, msg: m.RecordUsage, now: float) -> bool:
    con.execute(
        "INSERT INTO usage (request_id, time, model, provider, agent, task, input_tokens,"
        " output_tokens, cost, estimated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (request_id) DO NOTHING",
        (
            msg.request_id,
            msg.time if msg.time is not None else now,
            msg.model,
            msg.provider,
            msg.agent,
            msg.task,
            msg.input_tokens,
            msg.output_tokens,
            msg.cost,
            int(msg.estimated),
        ),
    )
    return con.changes() > 0


def start_of_today(now: float | None = None) -> float:
    """Midnight of the current local day, as a timestamp."""
    t = time.localtime(time.time() if now is None else now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


_GROUP = {
    "agent": "coalesce(agent, '')",
    "model": "model",
    "day": "date(time, 'unixepoch', 'localtime')",
}


def usage(con: apsw.Connection, by: str, since: float | None) -> list[m.UsageRow]:
    key = _GROUP[by]
    rows: list[Any] = con.execute(
        f"SELECT {key} AS k, count(*), sum(input_tokens), sum(output_tokens), sum(cost)"
        " FROM usage WHERE time >= ? GROUP BY k ORDER BY k",
        (since if since is not None else 0.0,),
    ).fetchall()
    return [
        m.UsageRow(
            key=str(r[0]),
            calls=int(r[1]),
            input_tokens=int(r[2]),
            output_tokens=int(r[3]),
            cost=float(r[4]),
        )
        for r in rows
    ]


def spent(con: apsw.Connection, agent: str | None, since: float | None) -> float:
    since = start_of_today() if since is None else since
    sql = "SELECT coalesce(sum(cost), 0.0) FROM usage WHERE time >= ?"
    params: list[Any] = [since]
    if agent is not None:
        sql += " AND agent = ?"
        params.append(agent)
    return float(scalar(con, sql, params))


# ----------------------------------------------------------------------------- approvals


def lookup_approval(con: apsw.Connection, tool: str, key: str) -> bool:
    row = con.execute("SELECT 1 FROM approvals WHERE tool = ? AND key = ?", (tool, key))
    return row.fetchone() is not None


def remember_approval(con: apsw.Connection, post: Post, tool: str, key: str, now: float) -> None:
    con.execute(
        "INSERT INTO approvals (tool, key, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (tool, key, now),
    )


# ----------------------------------------------------------------------------- tasks


def save_task(con: apsw.Connection, post: Post, msg: m.SaveTask, now: float) -> None:
    con.execute(
        "INSERT INTO tasks (task, status, request, agent, conversation, result, created, updated)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (task) DO UPDATE SET"
        " status = excluded.status, request = excluded.request, agent = excluded.agent,"
        " conversation = excluded.conversation, result = excluded.result,"
        " updated = excluded.updated",
        (msg.task, msg.status, msg.request, msg.agent, msg.conversation, msg.result, now, now),
    )


def save_task_record(
    con: apsw.Connection, msg: m.SaveTask, message: m.AppendMessage, tokens: int, now: float
) -> None:
    """``save_task``, then ``append_message`` of ``message`` (which has no ``parent``) with
    ``tokens``, in one statement (the ``task_writes`` view, schema version 4): both or
    neither, and one SQLite call for the writer's thread. ``message.content`` is a str
    (never NULL: the view's ``WHERE NEW.content IS NOT NULL`` is there for SQLite's
    grammar of an upsert from a SELECT, and would skip the message)."""
    con.execute(
        "INSERT INTO task_writes (task, status, request, agent, conversation, result, now,"
        " msg_conversation, role, msg_agent, content, tokens, cost)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            msg.task,
            msg.status,
            msg.request,
            msg.agent,
            msg.conversation,
            msg.result,
            now,
            message.conversation,
            message.role,
            message.agent,
            message.content,
            tokens,
            message.cost,
        ),
    )


def save_step(con: apsw.Connection, post: Post, msg: m.SaveStep, now: float) -> bool:
    if con.execute("SELECT 1 FROM tasks WHERE task = ?", (msg.task,)).fetchone() is None:
        raise OpError("not_found", f"task {msg.task!r} does not exist")
    con.execute(
        "INSERT INTO task_steps (task, seq, step, kind, payload, created)"
        " SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ? FROM task_steps WHERE task = ?"
        " ON CONFLICT (task, step) DO NOTHING",
        (msg.task, msg.step, msg.kind, msg.payload, now, msg.task),
    )
    saved = con.changes() > 0
    if saved:
        con.execute("UPDATE tasks SET updated = ? WHERE task = ?", (now, msg.task))
    return saved


def save_steps(con: apsw.Connection, post: Post, msg: m.SaveSteps, now: float) -> list[bool]:
    """``save_step`` for each of ``msg.steps``, in order, with one check of the task and
    one update of its time."""
    if con.execute("SELECT 1 FROM tasks WHERE task = ?", (msg.task,)).fetchone() is None:
        raise OpError("not_found", f"task {msg.task!r} does not exist")
    saved: list[bool] = []
    for step, kind, payload in msg.steps:
        con.execute(
            "INSERT INTO task_steps (task, seq, step, kind, payload, created)"
            " SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, ? FROM task_steps WHERE task = ?"
            " ON CONFLICT (task, step) DO NOTHING",
            (msg.task, step, kind, payload, now, msg.task),
        )
        saved.append(con.changes() > 0)
    if any(saved):
        con.execute("UPDATE tasks SET updated = ? WHERE task = ?", (now, msg.task))
    return saved


_TASK_COLUMNS = "task, status, request, agent, conversation, result, created, updated"


def _task(row: Any, steps: list[tuple[str, str, bytes]] | None = None) -> m.TaskRecord:
    return m.TaskRecord(
        task=row[0],
        status=row[1],
        request=row[2],
        agent=row[3],
        conversation=row[4],
        result=row[5],
        created=row[6],
        updated=row[7],
        steps=steps or [],
    )


def load_task(con: apsw.Connection, task: str) -> m.TaskRecord:
    with con:
        row = con.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE task = ?", (task,)).fetchone()
        if row is None:
            raise OpError("not_found", f"task {task!r} does not exist")
        steps = [
            (r[0], r[1], bytes(r[2]))
            for r in con.execute(
                "SELECT step, kind, payload FROM task_steps WHERE task = ? ORDER BY seq", (task,)
            )
        ]
    return _task(row, steps)


def list_tasks(con: apsw.Connection, status: str | None, limit: int) -> list[m.TaskRecord]:
    sql = f"SELECT {_TASK_COLUMNS} FROM tasks"
    params: list[Any] = []
    if status is not None:
        sql += " WHERE status = ?"
        params.append(status)
    sql += " ORDER BY created DESC, task LIMIT ?"
    params.append(limit)
    return [_task(r) for r in con.execute(sql, params)]
