"""The trash: where ``fs.delete`` moves things and ``fs.edit`` keeps its backups.

One directory per item under ``<data dir>/trash/<tenant>/<id>/``: ``item`` (the file or
directory itself) and ``meta.json`` (a ``TrashItem``). The data directory is a protected
path, so tools cannot reach the trash; only ``convergio trash list|restore`` can.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Literal

import msgspec

from convergiod.errors import OpError

from .sandbox import Sandbox, denied, protected_paths

Kind = Literal["deleted", "backup"]


class TrashItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    path: str
    kind: Kind
    time: float
    size: int
    is_dir: bool


class Trash:
    def __init__(self, base: Path) -> None:
        self.base = base

    def _tenant_dir(self, tenant: str) -> Path:
        if not tenant or "/" in tenant or tenant.startswith("."):
            raise OpError("bad_request", f"invalid tenant {tenant!r}")
        d = self.base / tenant
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return d

    def _new_slot(self, tenant: str) -> tuple[str, Path]:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        item_id = f"{stamp}-{secrets.token_hex(3)}"
        slot = self._tenant_dir(tenant) / item_id
        slot.mkdir(mode=0o700)
        return item_id, slot

    def _write_meta(self, slot: Path, item: TrashItem) -> None:
        (slot / "meta.json").write_bytes(msgspec.json.encode(item))

    def move_in(self, tenant: str, parent: int, name: str, path: str) -> TrashItem:
        """Move ``name`` (in directory fd ``parent``) into the trash, without following it."""
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        item_id, slot = self._new_slot(tenant)
        slot_fd = os.open(slot, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                os.rename(name, "item", src_dir_fd=parent, dst_dir_fd=slot_fd)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                _copy_tree(parent, name, slot_fd, "item")
                _remove_tree(parent, name)
        finally:
            os.close(slot_fd)
        is_dir = stat.S_ISDIR(st.st_mode)
        item = TrashItem(
            id=item_id,
            path=path,
            kind="deleted",
            time=time.time(),
            size=_tree_size(slot / "item") if is_dir else st.st_size,
            is_dir=is_dir,
        )
        self._write_meta(slot, item)
        return item

    def keep_copy(self, tenant: str, data: bytes, path: str, mode: int) -> TrashItem:
        """Store ``data`` as a backup of ``path`` (before an edit)."""
        item_id, slot = self._new_slot(tenant)
        fd = os.open(slot / "item", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(slot / "item", stat.S_IMODE(mode) or 0o600)
        item = TrashItem(
            id=item_id, path=path, kind="backup", time=time.time(), size=len(data), is_dir=False
        )
        self._write_meta(slot, item)
        return item

    def list(self, tenant: str) -> list[TrashItem]:
        """Items newest first."""
        items = []
        d = self._tenant_dir(tenant)
        decoder = msgspec.json.Decoder(TrashItem)
        for slot in d.iterdir():
            try:
                items.append(decoder.decode((slot / "meta.json").read_bytes()))
            except (OSError, msgspec.DecodeError):
                continue
        items.sort(key=lambda i: (i.time, i.id), reverse=True)
        return items

    def restore(self, tenant: str, item_id: str, *, force: bool = False) -> TrashItem:
        """Put an item back where it was. Refuses when something is there, unless ``force``:
        then the thing there goes to the trash first. Protected paths stay refused."""
        if not item_id or "/" in item_id or item_id.startswith("."):
            raise OpError("bad_request", f"invalid trash id {item_id!r}")
        slot = self._tenant_dir(tenant) / item_id
        try:
            item = msgspec.json.decode((slot / "meta.json").read_bytes(), type=TrashItem)
        except FileNotFoundError:
            raise OpError("not_found", f"no trash item {item_id!r}") from None
        sandbox = Sandbox(["/"], workspace=None, protected=protected_paths([self.base]))
        with sandbox.target(item.path, follow=False) as t:
            try:
                os.stat(t.name, dir_fd=t.parent, follow_symlinks=False)
                exists = True
            except FileNotFoundError:
                exists = False
            if exists:
                if not force:
                    raise OpError(
                        "bad_request", f"{item.path} exists; restore with --force to replace it"
                    )
                self.move_in(tenant, t.parent, t.name, t.path)
            slot_fd = os.open(slot, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                try:
                    os.rename("item", t.name, src_dir_fd=slot_fd, dst_dir_fd=t.parent)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise denied(f"cannot restore to {item.path}: {exc.strerror}") from None
                    _copy_tree(slot_fd, "item", t.parent, t.name)
            finally:
                os.close(slot_fd)
        shutil.rmtree(slot, ignore_errors=True)
        return item


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _copy_tree(src_dir: int, name: str, dst_dir: int, dst_name: str) -> None:
    """Copy across file systems through directory fds, symlinks copied as symlinks."""
    st = os.stat(name, dir_fd=src_dir, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(name, dir_fd=src_dir), dst_name, dir_fd=dst_dir)
    elif stat.S_ISDIR(st.st_mode):
        os.mkdir(dst_name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dst_dir)
        sfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_dir)
        dfd = os.open(dst_name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dst_dir)
        try:
            for entry in os.scandir(sfd):
                _copy_tree(sfd, entry.name, dfd, entry.name)
        finally:
            os.close(sfd)
            os.close(dfd)
    elif stat.S_ISREG(st.st_mode):
        sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=src_dir)
        dfd = os.open(
            dst_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dst_dir
        )
        try:
            while chunk := os.read(sfd, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dfd, view) :]
            os.fchmod(dfd, stat.S_IMODE(st.st_mode))
        finally:
            os.close(sfd)
            os.close(dfd)


def _remove_tree(parent: int, name: str) -> None:
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        try:
            for entry in os.scandir(fd):
                _remove_tree(fd, entry.name)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=parent)
    else:
        os.unlink(name, dir_fd=parent)
