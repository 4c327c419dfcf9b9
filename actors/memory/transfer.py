"""Export (JSONL, a checksum per line), import (verified, idempotent) and online backup.

An export line is ``{"record": R, "sha256": H}`` where ``H`` is the SHA-256 of the canonical
JSON of ``R`` (sorted keys, no spaces, UTF-8). The first record is a header; each fact record
carries its stable content id ``uid``, so importing a file twice adds nothing.

Paths come from the client and must be absolute. Files are written next to their target and
renamed into place: a reader never sees half an export or half a backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import apsw
import trio

from convergiod import native
from convergiod.errors import OpError

from .store import TenantDB, scalar
from .writer import Post

Progress = Callable[[str, int, int | None], Awaitable[None]]
FORMAT = "convergio-memory"
FORMAT_VERSION = 1
CHUNK = 1000
BACKUP_PAGES = 256

_FIELDS = "uid, text, kind, source, importance, conversation, valid_from, valid_to, access_count"


async def _no_progress(message: str, done: int, total: int | None) -> None:
    return None


def client_path(raw: str, *, must_exist: bool = False) -> Path:
    path = Path(raw)
    if not path.is_absolute():
        raise OpError("bad_request", f"path {raw!r} is relative: send an absolute path")
    if must_exist and not path.is_file():
        raise OpError("not_found", f"{path} does not exist or is not a file")
    if not must_exist and not path.parent.is_dir():
        raise OpError("bad_request", f"directory {path.parent} does not exist")
    return path


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def line_of(record: dict[str, Any]) -> str:
    digest = hashlib.sha256(canonical(record)).hexdigest()
    return json.dumps({"record": record, "sha256": digest}, ensure_ascii=False) + "\n"


def _temp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")


def _publish(tmp: Path, path: Path) -> None:
    """fsync, rename into place, fsync the directory."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _os_error(path: Path, exc: OSError) -> OpError:
    return OpError("unavailable", f"{path}: {exc.strerror or exc}")


# ----------------------------------------------------------------------------- export


def _begin(con: apsw.Connection) -> int:
    con.execute("BEGIN")
    return int(scalar(con, "SELECT count(*) FROM facts"))


def _export_chunk(con: apsw.Connection, after: int, out: IO[str]) -> tuple[int, int]:
    rows: list[Any] = con.execute(
        f"SELECT id, {_FIELDS} FROM facts WHERE id > ? ORDER BY id LIMIT ?", (after, CHUNK)
    ).fetchall()
    keys = [k.strip() for k in _FIELDS.split(",")]
    for row in rows:
        record = {"type": "fact", **dict(zip(keys, row[1:], strict=True))}
        out.write(line_of(record))
    return (int(rows[-1][0]) if rows else after), len(rows)


async def export(db: TenantDB, raw_path: str, progress: Progress = _no_progress) -> int:
    """Write every fact of the tenant to ``raw_path``; returns the number of facts."""
    path = client_path(raw_path)
    tmp = _temp_for(path)
    done = 0
    try:
        async with db.readers.hold() as run:
            total = await run(_begin)
            out = await trio.to_thread.run_sync(
                lambda: open(tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed just below
            )
            with out:
                header = {
                    "type": "header",
                    "format": FORMAT,
                    "version": FORMAT_VERSION,
                    "tenant": db.tenant,
                    "facts": total,
                    "exported": time.time(),
                }
                out.write(line_of(header))
                after = 0
                await progress("exporting facts", 0, total)
                while True:
                    after, n = await run(_export_chunk, after, out)
                    if n == 0:
                        break
                    done += n
                    await progress("exporting facts", done, total)
            await run(lambda con: con.execute("COMMIT"))
        await trio.to_thread.run_sync(_publish, tmp, path)
    except apsw.Error as exc:
        raise db._failed(exc) from exc
    except OSError as exc:
        raise _os_error(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return done


# ----------------------------------------------------------------------------- import


def _read_verified(path: Path, max_fact_bytes: int) -> list[dict[str, Any]]:
    """Every record of the file, checked; ``bad_request`` naming the first bad line."""
    records: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                obj = json.loads(line)
                record, digest = obj["record"], obj["sha256"]
            except (ValueError, KeyError, TypeError):
                raise OpError("bad_request", f"{where}: not an export record") from None
            if (
                not isinstance(record, dict)
                or hashlib.sha256(canonical(record)).hexdigest() != digest
            ):
                raise OpError("bad_request", f"{where}: checksum mismatch (corrupted line)")
            if number == 1:
                if record.get("type") != "header" or record.get("format") != FORMAT:
                    raise OpError("bad_request", f"{where}: not a {FORMAT} export")
                continue
            if record.get("type") != "fact":
                continue  # later versions may add record types
            text = record.get("text")
            if not isinstance(text, str) or not text.strip():
                raise OpError("bad_request", f"{where}: fact without text")
            if len(text.encode("utf-8", "surrogatepass")) > max_fact_bytes:
                raise OpError("bad_request", f"{where}: fact over {max_fact_bytes} bytes")
            records.append(record)
    return records


def _insert_chunk(
    con: apsw.Connection, post: Post, chunk: list[dict[str, Any]], db: TenantDB
) -> int:
    added = 0
    dim = db.index.dim
    for r in chunk:
        vector = native.embed_bytes(r["text"], dim)
        row = con.execute(
            "INSERT INTO facts (uid, text, kind, source, importance, conversation, valid_from,"
            " valid_to, access_count, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (valid_from, uid) DO NOTHING RETURNING id",
            (
                r["uid"],
                r["text"],
                r.get("kind", "note"),
                r.get("source", "import"),
                float(r.get("importance", 0.5)),
                r.get("conversation"),
                float(r["valid_from"]),
                r.get("valid_to"),
                int(r.get("access_count", 0)),
                vector,
            ),
        ).fetchone()
        if row is not None:
            added += 1
            fid = int(row[0])
            quantized = native.quantize_row(vector)
            post.append(lambda f=fid, v=vector, q=quantized: db.index.add(f, v, q))  # type: ignore[misc]
    return added


async def import_(
    db: TenantDB, raw_path: str, max_fact_bytes: int, progress: Progress = _no_progress
) -> tuple[int, int]:
    """Import an export file; returns ``(records read, facts added)``."""
    path = client_path(raw_path, must_exist=True)
    await progress("verifying", 0, None)
    try:
        records = await trio.to_thread.run_sync(_read_verified, path, max_fact_bytes)
    except UnicodeDecodeError as exc:
        raise OpError("bad_request", f"{path}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise _os_error(path, exc) from exc
    for r in records:
        if not isinstance(r.get("uid"), str) or not isinstance(r.get("valid_from"), int | float):
            raise OpError("bad_request", f"{path}: a fact record lacks uid or valid_from")
    added = 0
    for start in range(0, len(records), CHUNK):
        chunk = records[start : start + CHUNK]
        added += await db.write(
            lambda con, post, chunk=chunk: _insert_chunk(con, post, chunk, db)  # type: ignore[misc]
        )
        await progress("importing facts", min(start + CHUNK, len(records)), len(records))
    return len(records), added


# ----------------------------------------------------------------------------- backup


async def backup(db: TenantDB, raw_path: str, progress: Progress = _no_progress) -> int:
    """Copy the live database to ``raw_path`` in steps while writes go on; returns pages.

    The source is the writer's own connection, taken between group commits: SQLite then
    carries the writer's later changes into the running backup instead of restarting it.
    """
    path = client_path(raw_path)
    if path.resolve() == db.path.resolve():
        raise OpError("bad_request", "cannot back up a database onto itself")
    tmp = _temp_for(path)
    pages = 0
    try:
        dest = apsw.Connection(str(tmp))
        try:
            b = await db.writer.exclusive(lambda con: dest.backup("main", con, "main"))
            try:
                done = False
                while not done:
                    done = await db.writer.exclusive(lambda con: b.step(BACKUP_PAGES))
                    pages = b.page_count
                    await progress("backing up", pages - b.remaining, pages)
            finally:
                await db.writer.exclusive(lambda con: b.finish())
        finally:
            dest.close()
        await trio.to_thread.run_sync(_publish, tmp, path)
    except apsw.Error as exc:
        raise db._failed(exc) from exc
    except OSError as exc:
        raise _os_error(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return pages
