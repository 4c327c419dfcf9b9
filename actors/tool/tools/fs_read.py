"""Read-only file tools: ``fs.read``, ``fs.list``, ``fs.glob``, ``fs.grep``.

Every file and directory is opened through the sandbox (no symlink followed by the kernel);
tree walks descend with ``O_NOFOLLOW`` directory descriptors, skip symlinks and protected
paths, and stop at result and visit caps.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec

from convergiod.errors import OpError

from ..base import Policy, ToolContext, ToolOutput
from ..sandbox import O_DIR, O_READ, Sandbox
from . import ToolEnv

#: Entries a tree walk looks at before it stops (and says so).
MAX_VISIT = 200_000
SKIP_DIRS = frozenset((".git", ".hg", ".svn"))
BINARY_SNIFF = 8192

Path_ = Annotated[str, msgspec.Meta(description="a path, relative to the workspace or absolute")]
Limit = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class _Args(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


def is_binary(head: bytes) -> bool:
    return b"\0" in head


class _FsTool:
    default_policy: Policy = "auto"

    def __init__(self, env: ToolEnv) -> None:
        self.env = env

    def summarize(self, args: Any) -> str:
        return f"{self.name} {getattr(args, 'path', '')}"  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- fs.read


class ReadArgs(_Args):
    path: Path_
    start_line: Annotated[int, msgspec.Meta(ge=1, description="first line (1-based)")] = 1
    end_line: Annotated[int, msgspec.Meta(ge=1, description="last line, inclusive")] | None = None
    max_bytes: Limit | None = None


class FsRead(_FsTool):
    name = "fs.read"
    description = (
        "Read a text file, optionally a range of lines. Binary files are detected and not shown."
    )
    args_type: type[msgspec.Struct] = ReadArgs

    async def run(self, ctx: ToolContext, args: ReadArgs) -> ToolOutput:
        sb = self.env.sandbox(ctx)
        out: ToolOutput = await self.env.run_sync(self._read, sb, args)
        return out

    def _read(self, sb: Sandbox, args: ReadArgs) -> ToolOutput:
        cap = min(args.max_bytes or self.env.config.max_read_bytes, self.env.config.max_read_bytes)
        fd, path = sb.open_file(args.path)
        shown = sb.relative(path)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if args.start_line == 1 and args.end_line is None:
                data = f.read(cap + 1)
                truncated = len(data) > cap
                data = data[:cap]
                if is_binary(data[:BINARY_SNIFF]):
                    return _binary(shown, size)
            else:
                if is_binary(f.read(BINARY_SNIFF)):
                    return _binary(shown, size)
                f.seek(0)
                data, truncated = _line_range(f, args.start_line, args.end_line, cap)
        text = data.decode("utf-8", errors="replace")
        return ToolOutput(
            content=text,
            data={"path": shown, "size": size, "start_line": args.start_line},
            truncated=truncated,
        )


def _binary(path: str, size: int) -> ToolOutput:
    return ToolOutput(
        content=f"{path}: binary file, {size} bytes (not shown)",
        data={"path": path, "size": size, "binary": True},
    )


def _line_range(f: Any, start: int, end: int | None, cap: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    total = 0
    for n, line in enumerate(f, 1):
        if n < start:
            continue
        if end is not None and n > end:
            break
        if total + len(line) > cap:
            chunks.append(line[: cap - total])
            return b"".join(chunks), True
        chunks.append(line)
        total += len(line)
    return b"".join(chunks), False


# ----------------------------------------------------------------------------- tree walking


class Entry(msgspec.Struct, frozen=True):
    rel: str
    kind: str  # file, dir, symlink, other
    size: int


def walk(
    sb: Sandbox, top_fd: int, top_path: str, *, recursive: bool, hidden: bool = True
) -> Iterator[tuple[Entry, int]]:
    """Entries under ``top_fd`` as (entry, fd of its directory), sorted per directory, not
    following symlinks, skipping protected directories and VCS internals. ``top_fd`` stays
    owned by the caller. Stops after ``MAX_VISIT`` entries (raises ``_VisitCap``)."""
    stack: list[tuple[int, str]] = [(top_fd, "")]
    visited = 0
    try:
        while stack:
            fd, rel = stack.pop()
            try:
                with os.scandir(fd) as it:
                    entries = sorted(it, key=lambda e: e.name, reverse=True)
            except OSError:
                entries = []
            subdirs: list[tuple[int, str]] = []
            try:
                for e in reversed(entries):
                    visited += 1
                    if visited > MAX_VISIT:
                        raise VisitCap
                    if not hidden and e.name.startswith("."):
                        continue
                    erel = f"{rel}{e.name}"
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    mode = st.st_mode
                    if stat.S_ISDIR(mode):
                        yield Entry(erel, "dir", 0), fd
                        if recursive and e.name not in SKIP_DIRS:
                            abs_path = os.path.join(top_path, erel)
                            if any(
                                abs_path == p or abs_path.startswith(p + "/") for p in sb.protected
                            ):
                                continue
                            try:
                                subdirs.append((os.open(e.name, O_DIR, dir_fd=fd), erel + "/"))
                            except OSError:
                                continue
                    elif stat.S_ISLNK(mode):
                        yield Entry(erel, "symlink", 0), fd
                    elif stat.S_ISREG(mode):
                        yield Entry(erel, "file", st.st_size), fd
                    else:
                        yield Entry(erel, "other", 0), fd
            finally:
                if fd != top_fd:
                    os.close(fd)
            stack.extend(reversed(subdirs))
    finally:
        for fd, _ in stack:
            if fd != top_fd:
                os.close(fd)


class VisitCap(Exception):
    pass


# ----------------------------------------------------------------------------- fs.list


class ListArgs(_Args):
    path: Path_ = "."
    hidden: bool = False
    limit: Limit | None = None


class FsList(_FsTool):
    name = "fs.list"
    description = "List a directory: names, with / after directories and sizes of files."
    args_type: type[msgspec.Struct] = ListArgs

    async def run(self, ctx: ToolContext, args: ListArgs) -> ToolOutput:
        out: ToolOutput = await self.env.run_sync(self._list, self.env.sandbox(ctx), args)
        return out

    def _list(self, sb: Sandbox, args: ListArgs) -> ToolOutput:
        limit = min(args.limit or self.env.config.max_results, self.env.config.max_results)
        fd, path = sb.open_dir(args.path)
        rows: list[dict[str, Any]] = []
        lines: list[str] = []
        truncated = False
        try:
            for entry, _ in walk(sb, fd, path, recursive=False, hidden=args.hidden):
                if len(rows) >= limit:
                    truncated = True
                    break
                rows.append({"name": entry.rel, "type": entry.kind, "size": entry.size})
                suffix = {"dir": "/", "symlink": "@", "other": "?"}.get(entry.kind, "")
                size = f"  {entry.size}" if entry.kind == "file" else ""
                lines.append(f"{entry.rel}{suffix}{size}")
        except VisitCap:
            truncated = True
        finally:
            os.close(fd)
        return ToolOutput(
            content="\n".join(lines) or "(empty)",
            data={"path": sb.relative(path), "entries": rows},
            truncated=truncated,
        )


# ----------------------------------------------------------------------------- fs.glob


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``*`` and ``?`` within one path segment, ``**`` across segments, ``[...]`` classes."""
    out: list[str] = []
    parts = pattern.strip("/").split("/")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        j = 0
        while j < len(part):
            c = part[j]
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            elif c == "[" and (k := part.find("]", j + 2)) > 0:
                body = part[j + 1 : k].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                j = k
            else:
                out.append(re.escape(c))
            j += 1
        if not last:
            out.append("/")
    return re.compile("".join(out) + r"\Z")


class GlobArgs(_Args):
    pattern: Annotated[str, msgspec.Meta(min_length=1, max_length=1000, examples=["**/*.py"])]
    path: Path_ = "."
    limit: Limit | None = None


class FsGlob(_FsTool):
    name = "fs.glob"
    description = "Find files whose path (relative to `path`) matches a glob like `src/**/*.py`."
    args_type: type[msgspec.Struct] = GlobArgs

    async def run(self, ctx: ToolContext, args: GlobArgs) -> ToolOutput:
        out: ToolOutput = await self.env.run_sync(self._glob, self.env.sandbox(ctx), args)
        return out

    def _glob(self, sb: Sandbox, args: GlobArgs) -> ToolOutput:
        limit = min(args.limit or self.env.config.max_results, self.env.config.max_results)
        try:
            rx = glob_regex(args.pattern)
        except (re.error, ValueError) as exc:
            raise OpError("bad_request", f"invalid glob {args.pattern!r}: {exc}") from None
        fd, path = sb.open_dir(args.path)
        found: list[str] = []
        truncated = False
        try:
            for entry, _ in walk(sb, fd, path, recursive=True):
                if rx.match(entry.rel):
                    if len(found) >= limit:
                        truncated = True
                        break
                    found.append(entry.rel + ("/" if entry.kind == "dir" else ""))
        except VisitCap:
            truncated = True
        finally:
            os.close(fd)
        found.sort()
        return ToolOutput(
            content="\n".join(found) or "(no matches)",
            data={"path": sb.relative(path), "matches": found},
            truncated=truncated,
        )


# ----------------------------------------------------------------------------- fs.grep


class GrepArgs(_Args):
    pattern: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    path: Path_ = "."
    glob: str | None = None
    ignore_case: bool = False
    limit: Limit | None = None


MAX_LINE = 400
MAX_MATCH_LINE = 8192


class FsGrep(_FsTool):
    name = "fs.grep"
    description = (
        "Search file contents with a regular expression (Python syntax); prints "
        "path:line: text for each matching line. `glob` filters the files searched."
    )
    args_type: type[msgspec.Struct] = GrepArgs

    async def run(self, ctx: ToolContext, args: GrepArgs) -> ToolOutput:
        out: ToolOutput = await self.env.run_sync(self._grep, self.env.sandbox(ctx), args)
        return out

    def _grep(self, sb: Sandbox, args: GrepArgs) -> ToolOutput:
        limit = min(args.limit or self.env.config.max_results, self.env.config.max_results)
        try:
            rx = re.compile(args.pattern, re.IGNORECASE if args.ignore_case else 0)
            file_rx = glob_regex(args.glob) if args.glob else None
        except (re.error, ValueError) as exc:
            raise OpError("bad_request", f"invalid pattern: {exc}") from None
        hits: list[str] = []
        truncated = False
        with sb.target(args.path) as t:
            try:
                st = os.stat(t.name, dir_fd=t.parent, follow_symlinks=False)
            except FileNotFoundError:
                raise OpError("not_found", f"{t.path}: no such file or directory") from None
            if stat.S_ISREG(st.st_mode):
                truncated = self._grep_file(rx, t.parent, t.name, sb.relative(t.path), hits, limit)
                return _grep_output(hits, truncated)
        fd, path = sb.open_dir(args.path)
        base = sb.relative(path)
        try:
            for entry, dir_fd in walk(sb, fd, path, recursive=True):
                if entry.kind != "file" or entry.size > self.env.config.max_read_bytes:
                    continue
                if file_rx is not None and not file_rx.match(entry.rel):
                    continue
                shown = entry.rel if base == "." else f"{base}/{entry.rel}"
                name = entry.rel.rsplit("/", 1)[-1]
                if self._grep_file(rx, dir_fd, name, shown, hits, limit):
                    truncated = True
                    break
        except VisitCap:
            truncated = True
        finally:
            os.close(fd)
        return _grep_output(hits, truncated)

    def _grep_file(
        self, rx: re.Pattern[str], dir_fd: int, name: str, shown: str, hits: list[str], limit: int
    ) -> bool:
        """Append matches; True when the limit was reached."""
        try:
            fd = os.open(name, O_READ, dir_fd=dir_fd)
        except OSError:
            return False
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            data = f.read(self.env.config.max_read_bytes)
        if is_binary(data[:BINARY_SNIFF]):
            return False
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if rx.search(line[:MAX_MATCH_LINE]):
                if len(hits) >= limit:
                    return True
                hits.append(f"{shown}:{n}: {line[:MAX_LINE]}")
        return False


def _grep_output(hits: list[str], truncated: bool) -> ToolOutput:
    return ToolOutput(
        content="\n".join(hits) or "(no matches)", data={"matches": len(hits)}, truncated=truncated
    )
