"""The workspace sandbox: which paths a tool may touch, opened so that nothing can escape.

A path argument is made absolute (relative to the workspace, ``~`` expanded), normalised
lexically (``..`` removed) and must then lie inside one of the roots and outside every
protected path. It is then opened by walking from ``/`` one component at a time with
``os.open(name, O_NOFOLLOW, dir_fd=parent)``: a component that is a symlink is never followed
by the kernel. Instead its target is read, joined, normalised and checked against the roots
and protected paths again, and the walk restarts. Because every component is opened without
following links, a symlink swapped in between a check and a use makes the open fail
(``ELOOP``) instead of leading outside; the tool gets a directory descriptor and works
relative to it (``openat`` style), never by re-resolving a path string.

Known limit: a directory inside a root that is *renamed* to a place outside while a walk holds
its descriptor would be followed there (Linux ``openat2(RESOLVE_BENEATH)`` would close this).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from convergiod.errors import OpError

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MAX_HOPS = 40

#: Refused even inside a root (system state, devices, credentials).
SYSTEM_PROTECTED = ("/etc", "/proc", "/sys", "/dev", "/boot", "/run", "/var/run", "/private/etc")
HOME_PROTECTED = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".kube",
    ".docker",
    ".config/gcloud",
    ".config/gh",
    ".password-store",
    ".local/share/keyrings",
    ".netrc",
    ".pgpass",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
)


def denied(message: str) -> OpError:
    return OpError("sandbox_denied", message)


def protected_paths(extra: Iterable[str | Path] = ()) -> tuple[str, ...]:
    """The default protected paths plus ``extra`` (the daemon's own directories, config),
    each both as written and as its real path."""
    home = Path.home()
    items = [*SYSTEM_PROTECTED, *(str(home / p) for p in HOME_PROTECTED), *map(str, extra)]
    out: set[str] = set()
    for item in items:
        p = os.path.normpath(os.path.expanduser(str(item)))
        if not os.path.isabs(p):
            continue
        out.add(p)
        out.add(os.path.realpath(p))
    return tuple(sorted(out))


def _within(path: str, base: str) -> bool:
    return path == base or base == "/" or path.startswith(base + "/")


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved path: its normalised absolute ``path``, an open descriptor of its parent
    directory, and its ``name`` in that directory. Close ``parent`` (use ``Sandbox.target``)."""

    path: str
    parent: int
    name: str


class Sandbox:
    """Roots (real paths) plus protected paths; ``workspace`` anchors relative paths."""

    def __init__(
        self, roots: Iterable[str | Path], *, workspace: str | Path | None, protected: Iterable[str]
    ) -> None:
        self.protected = tuple(protected)
        self.roots = tuple(dict.fromkeys(os.path.realpath(str(r)) for r in roots))
        self.workspace = os.path.realpath(str(workspace)) if workspace else None

    # ------------------------------------------------------------------ checks

    def check(self, path: str) -> None:
        """Refuse a normalised absolute path outside the roots or inside a protected path."""
        for p in self.protected:
            if _within(path, p):
                raise denied(f"{path} is a protected path ({p})")
        if not any(_within(path, r) for r in self.roots):
            raise denied(f"{path} is outside the sandbox roots ({', '.join(self.roots) or 'none'})")

    def absolute(self, raw: str) -> str:
        """``raw`` made absolute and normalised lexically, then checked."""
        if "\0" in raw:
            raise OpError("bad_request", "path contains a NUL byte")
        if not raw:
            raise OpError("bad_request", "empty path")
        if raw == "~" or raw.startswith("~/"):
            raw = os.path.expanduser(raw)
        if not os.path.isabs(raw):
            if self.workspace is None:
                raise denied(f"relative path {raw!r} but no workspace")
            raw = os.path.join(self.workspace, raw)
        path = os.path.normpath(raw)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        self.check(path)
        return path

    def relative(self, path: str) -> str:
        """How to show ``path`` to a model: relative to the workspace when inside it."""
        if self.workspace and _within(path, self.workspace):
            return os.path.relpath(path, self.workspace)
        return path

    # ------------------------------------------------------------------ walking

    def resolve(self, raw: str, *, follow: bool = True, make_parents: bool = False) -> Target:
        """Walk to ``raw``'s parent without following symlinks (targets of symlinks are
        re-checked); with ``follow`` a symlink as the last component is resolved too. The
        caller owns ``Target.parent``."""
        path = self.absolute(raw)
        for _ in range(MAX_HOPS):
            hop = self._walk(path, follow=follow, make_parents=make_parents)
            if isinstance(hop, Target):
                return hop
            path = hop
        raise denied(f"too many levels of symbolic links resolving {raw!r}")

    @contextmanager
    def target(
        self, raw: str, *, follow: bool = True, make_parents: bool = False
    ) -> Iterator[Target]:
        t = self.resolve(raw, follow=follow, make_parents=make_parents)
        try:
            yield t
        finally:
            os.close(t.parent)

    def _walk(self, path: str, *, follow: bool, make_parents: bool) -> Target | str:
        """One pass; returns the target, or the next path to try after a symlink."""
        parts = [p for p in path.split("/") if p]
        fd = os.open("/", O_DIR)
        try:
            here = ""
            for i, part in enumerate(parts[:-1]):
                try:
                    nfd = os.open(part, O_DIR, dir_fd=fd)
                except OSError as exc:
                    if exc.errno == errno.ENOENT and make_parents:
                        self.check(f"{here}/{part}")
                        try:
                            os.mkdir(part, 0o777, dir_fd=fd)
                        except FileExistsError:
                            pass
                        nfd = self._open_dir_component(fd, part, here, path)
                    else:
                        return self._component_error(exc, fd, part, here, parts[i + 1 :], path)
                os.close(fd)
                fd = nfd
                here = f"{here}/{part}"
            if not parts:
                return Target(path="/", parent=fd, name=".")
            name = parts[-1]
            if follow:
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    st = None
                if st is not None and stat.S_ISLNK(st.st_mode):
                    return self._hop(fd, name, here, [], path)
            target = Target(path=path, parent=fd, name=name)
            fd = -1
            return target
        finally:
            if fd >= 0:
                os.close(fd)

    def _open_dir_component(self, fd: int, part: str, here: str, path: str) -> int:
        try:
            return os.open(part, O_DIR, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise denied(f"{here}/{part} changed while {path} was being opened") from None
            raise

    def _component_error(
        self, exc: OSError, fd: int, part: str, here: str, rest: list[str], path: str
    ) -> str:
        """The next path to try when ``part`` is a symlink; otherwise raises."""
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except OSError:
                raise not_found(path) from None
            if stat.S_ISLNK(st.st_mode):
                return self._hop(fd, part, here, rest, path)
            raise OpError("bad_request", f"{here}/{part} is not a directory") from None
        if exc.errno == errno.ENOENT:
            raise not_found(path) from None
        if exc.errno == errno.EACCES:
            raise denied(f"permission denied: {here}/{part}") from None
        raise exc

    def _hop(self, fd: int, name: str, here: str, rest: list[str], path: str) -> str:
        try:
            link = os.readlink(name, dir_fd=fd)
        except OSError:
            raise denied(f"{here}/{name} changed while {path} was being opened") from None
        base = link if os.path.isabs(link) else os.path.join(here or "/", link)
        new = os.path.normpath(os.path.join(base, *rest))
        if new.startswith("//"):
            new = "/" + new.lstrip("/")
        try:
            self.check(new)
        except OpError as exc:
            raise denied(f"{path}: symlink {here}/{name} leads to {new}: {exc.message}") from None
        return new

    # ------------------------------------------------------------------ opening

    def open_file(self, raw: str) -> tuple[int, str]:
        """An fd of the regular file at ``raw`` (read-only) and its resolved path."""
        with self.target(raw) as t:
            try:
                fd = os.open(t.name, O_READ, dir_fd=t.parent)
            except OSError as exc:
                raise open_error(exc, t.path) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                raise OpError("bad_request", f"{t.path} is {kind}")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, t.path

    def open_dir(self, raw: str) -> tuple[int, str]:
        with self.target(raw) as t:
            try:
                return os.open(t.name, O_DIR, dir_fd=t.parent), t.path
            except OSError as exc:
                if exc.errno == errno.ENOTDIR:
                    raise OpError("bad_request", f"{t.path} is not a directory") from None
                raise open_error(exc, t.path) from None


def not_found(path: str) -> OpError:
    return OpError("not_found", f"{path}: no such file or directory")


def open_error(exc: OSError, path: str) -> OpError:
    if exc.errno == errno.ENOENT:
        return not_found(path)
    if exc.errno == errno.ELOOP:
        return denied(f"{path} became a symlink while it was being opened")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return denied(f"permission denied: {path}")
    if exc.errno == errno.EISDIR:
        return OpError("bad_request", f"{path} is a directory")
    return OpError("bad_request", f"{path}: {exc.strerror}")
