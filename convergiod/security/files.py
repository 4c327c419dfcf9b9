"""Private files: written atomically with mode 0600 in a 0700 directory, refused when others
could read them."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


class InsecureFile(Exception):
    """A secret file that other users can read or that belongs to someone else."""


def read_private(path: Path) -> bytes | None:
    """The file's bytes, ``None`` when it does not exist; ``InsecureFile`` when its mode or
    owner would let others read or swap it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
            raise InsecureFile(
                f"{path} must be owned by this user with mode 0600 "
                f"(it is {stat.S_IMODE(st.st_mode):o})"
            )
        return f.read()


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically; the new file is 0600 from its creation."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
