"""File tools that change things: ``fs.write``, ``fs.edit``, ``fs.delete``.

Writes are atomic (a temporary file in the same directory, then ``rename``), made relative to
a directory descriptor the sandbox opened, so a path swapped for a symlink meanwhile is
replaced rather than followed. ``fs.edit`` keeps the previous content in the trash;
``fs.delete`` moves into the trash. ``always`` approves these tools for one workspace.
"""

from __future__ import annotations

import os
import secrets
import stat
from typing import Annotated, Any

import msgspec

from convergiod.errors import OpError

from ..base import Policy, ToolContext, ToolOutput
from ..sandbox import O_READ, Sandbox, open_error
from . import ToolEnv
from .fs_read import Path_, _Args


def atomic_write(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    tmp = f".cvg-{secrets.token_hex(6)}.tmp"
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


class _WriteTool:
    default_policy: Policy = "ask"
    name: str

    def __init__(self, env: ToolEnv) -> None:
        self.env = env

    def approval_key(self, ctx: ToolContext, args: Any) -> str:
        """``always`` covers this tool anywhere in this workspace."""
        return f"workspace:{ctx.workspace}"

    def _os_error(self, exc: OSError, path: str) -> OpError:
        return open_error(exc, path)


# ----------------------------------------------------------------------------- fs.write


class WriteArgs(_Args):
    path: Path_
    content: str
    create_dirs: bool = True


class FsWrite(_WriteTool):
    name = "fs.write"
    description = "Create or replace a text file (atomically); missing parent directories are made."
    args_type: type[msgspec.Struct] = WriteArgs

    def summarize(self, args: WriteArgs) -> str:
        return f"write {len(args.content.encode())} bytes to {args.path}"

    async def run(self, ctx: ToolContext, args: WriteArgs) -> ToolOutput:
        out: ToolOutput = await self.env.run_sync(self._write, self.env.sandbox(ctx), args)
        return out

    def _write(self, sb: Sandbox, args: WriteArgs) -> ToolOutput:
        data = args.content.encode()
        if len(data) > self.env.config.max_write_bytes:
            raise OpError(
                "bad_request",
                f"content of {len(data)} bytes exceeds tools.max_write_bytes "
                f"({self.env.config.max_write_bytes})",
            )
        with sb.target(args.path, make_parents=args.create_dirs) as t:
            try:
                st: os.stat_result | None = os.stat(t.name, dir_fd=t.parent, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise OpError("bad_request", f"{t.path} exists and is not a regular file")
            mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
            try:
                atomic_write(t.parent, t.name, data, mode)
            except OSError as exc:
                raise self._os_error(exc, t.path) from None
            shown = sb.relative(t.path)
        verb = "replaced" if st is not None else "created"
        return ToolOutput(
            content=f"{verb} {shown} ({len(data)} bytes)",
            data={"path": shown, "bytes": len(data), "created": st is None},
        )


# ----------------------------------------------------------------------------- fs.edit


class EditArgs(_Args):
    path: Path_
    old: Annotated[str, msgspec.Meta(min_length=1, description="text that occurs exactly once")]
    new: str


class FsEdit(_WriteTool):
    name = "fs.edit"
    description = (
        "Replace `old` with `new` in a text file. `old` must occur exactly once (include enough "
        "surrounding text). Atomic; the previous version is kept in the trash."
    )
    args_type: type[msgspec.Struct] = EditArgs

    def summarize(self, args: EditArgs) -> str:
        return f"edit {args.path}: replace {len(args.old)} characters with {len(args.new)}"

    async def run(self, ctx: ToolContext, args: EditArgs) -> ToolOutput:
        out: ToolOutput = await self.env.run_sync(
            self._edit, self.env.sandbox(ctx), ctx.tenant, args
        )
        return out

    def _edit(self, sb: Sandbox, tenant: str, args: EditArgs) -> ToolOutput:
        with sb.target(args.path) as t:
            try:
                fd = os.open(t.name, O_READ, dir_fd=t.parent)
            except OSError as exc:
                raise self._os_error(exc, t.path) from None
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise OpError("bad_request", f"{t.path} is not a regular file")
                if st.st_size > self.env.config.max_write_bytes:
                    raise OpError("bad_request", f"{t.path} is too large to edit")
                data = f.read()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise OpError("bad_request", f"{t.path} is not UTF-8 text") from None
            shown = sb.relative(t.path)
            count = text.count(args.old)
            if count == 0:
                raise OpError("bad_request", f"`old` does not occur in {shown}")
            if count > 1:
                raise OpError(
                    "bad_request",
                    f"`old` occurs {count} times in {shown}; include more surrounding text so "
                    "that it matches exactly once",
                )
            backup = self.env.trash.keep_copy(tenant, data, t.path, st.st_mode)
            try:
                atomic_write(
                    t.parent, t.name, text.replace(args.old, args.new).encode(), st.st_mode & 0o7777
                )
            except OSError as exc:
                raise self._os_error(exc, t.path) from None
        return ToolOutput(
            content=f"edited {shown} (previous version kept: trash id {backup.id})",
            data={"path": shown, "backup": backup.id},
        )


# ----------------------------------------------------------------------------- fs.delete


class DeleteArgs(_Args):
    path: Path_
    recursive: Annotated[bool, msgspec.Meta(description="needed for a non-empty directory")] = False


class FsDelete(_WriteTool):
    name = "fs.delete"
    description = (
        "Delete a file or directory by moving it to the trash (`convergio trash restore` brings "
        "it back). A symlink is deleted itself, never its target."
    )
    args_type: type[msgspec.Struct] = DeleteArgs

    def summarize(self, args: DeleteArgs) -> str:
        return f"delete {args.path}{' (recursively)' if args.recursive else ''} to the trash"

    async def run(self, ctx: ToolContext, args: DeleteArgs) -> ToolOutput:
        out: ToolOutput = await self.env.run_sync(
            self._delete, self.env.sandbox(ctx), ctx.tenant, args
        )
        return out

    def _delete(self, sb: Sandbox, tenant: str, args: DeleteArgs) -> ToolOutput:
        with sb.target(args.path, follow=False) as t:
            if t.path in sb.roots or t.path == sb.workspace:
                raise OpError("sandbox_denied", f"{t.path} is a sandbox root; it cannot be deleted")
            try:
                st = os.stat(t.name, dir_fd=t.parent, follow_symlinks=False)
            except FileNotFoundError:
                raise OpError("not_found", f"{t.path}: no such file or directory") from None
            if stat.S_ISDIR(st.st_mode) and not args.recursive:
                dfd = os.open(t.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=t.parent)
                try:
                    empty = not os.listdir(dfd)
                finally:
                    os.close(dfd)
                if not empty:
                    raise OpError(
                        "bad_request", f"{t.path} is a non-empty directory: set recursive=true"
                    )
            try:
                item = self.env.trash.move_in(tenant, t.parent, t.name, t.path)
            except OSError as exc:
                raise self._os_error(exc, t.path) from None
            shown = sb.relative(t.path)
        return ToolOutput(
            content=f"moved {shown} to the trash (id {item.id})",
            data={"path": shown, "trash_id": item.id},
        )
