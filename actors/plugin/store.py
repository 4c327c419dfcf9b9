"""Installed plugins on disk: ``<data dir>/plugins/<name>/`` holds the manifest, the module
and ``install.json`` (the module's pinned sha256 and what the user granted).

Install takes a directory or a ``.tar.gz`` holding ``plugin.toml`` and the module it names,
validates both, and replaces any earlier version atomically (a rename). Grants are the
user's answer to the manifest's permission requests: ``grant_all``, or ``dir:/guest``,
``dir:/guest:ro`` (a write request granted read-only) and ``env:NAME``; anything not granted
is denied.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from convergiod.actors.plugin import manifest as mf
from convergiod.actors.plugin.sandbox import SandboxError

MAX_PACKAGE_BYTES = 64 << 20


class GrantedDir(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    guest: str
    write: bool


class InstallRecord(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    version: str
    sha256: str
    installed_at: float
    dirs: list[GrantedDir] = []
    env: list[str] = []


@dataclass(frozen=True)
class Installed:
    manifest: mf.Manifest
    record: InstallRecord
    path: Path

    @property
    def module_path(self) -> Path:
        return self.path / self.manifest.module


class PluginStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    # ------------------------------------------------------------------ reading

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if (p / "install.json").is_file() and p.is_dir()
        )

    def get(self, name: str) -> Installed:
        path = self.root / name
        if not name or "/" in name or name.startswith(".") or not (path / "install.json").is_file():
            raise SandboxError("not_found", f"no plugin named {name!r} is installed")
        try:
            manifest = mf.parse((path / "plugin.toml").read_bytes(), source=f"{name}/plugin.toml")
            record = msgspec.json.decode((path / "install.json").read_bytes(), type=InstallRecord)
        except (OSError, mf.ManifestError, msgspec.DecodeError) as exc:
            raise SandboxError("internal", f"plugin {name!r} is damaged: {exc}") from None
        return Installed(manifest=manifest, record=record, path=path)

    def all(self) -> list[Installed]:
        return [self.get(n) for n in self.names()]

    # ------------------------------------------------------------------ changing

    def stage(self, source: Path) -> tuple[mf.Manifest, Path, Path]:
        """Unpack/copy ``source`` into a staging directory under the store and validate the
        manifest. Returns (manifest, staging dir, module path); the caller checks the module
        and then calls ``commit`` (or ``discard``)."""
        source = source.expanduser()
        if not source.exists():
            raise SandboxError("not_found", f"{source}: no such file or directory")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".stage-", dir=self.root))
        try:
            src_dir = _unpack(source, staging / "src") if source.is_file() else source
            toml = src_dir / "plugin.toml"
            if not toml.is_file():
                raise SandboxError("bad_request", f"{source}: no plugin.toml")
            if toml.stat().st_size > 1 << 20:
                raise SandboxError("bad_request", f"{toml}: larger than 1 MiB")
            try:
                manifest = mf.parse(toml.read_bytes(), source=str(toml))
            except mf.ManifestError as exc:
                raise SandboxError("bad_request", str(exc)) from None
            module_src = src_dir / manifest.module
            if not module_src.is_file():
                raise SandboxError("bad_request", f"{source}: module {manifest.module} not found")
            if module_src.stat().st_size > MAX_PACKAGE_BYTES:
                raise SandboxError("bad_request", f"{module_src}: larger than 64 MiB")
            out = staging / "plugin"
            out.mkdir()
            shutil.copyfile(toml, out / "plugin.toml")
            shutil.copyfile(module_src, out / manifest.module)
            return manifest, staging, out / manifest.module
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def commit(
        self, manifest: mf.Manifest, staging: Path, *, grant_all: bool, grants: list[str]
    ) -> Installed:
        try:
            out = staging / "plugin"
            module = out / manifest.module
            record = InstallRecord(
                name=manifest.name,
                version=manifest.version,
                sha256=hashlib.sha256(module.read_bytes()).hexdigest(),
                installed_at=time.time(),
                **_grants(manifest, grant_all, grants),
            )
            (out / "install.json").write_bytes(msgspec.json.encode(record))
            final = self.root / manifest.name
            old = None
            if final.exists():
                old = staging / "old"
                os.replace(final, old)
            os.replace(out, final)
            return Installed(manifest=manifest, record=record, path=final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def remove(self, name: str) -> Installed:
        installed = self.get(name)
        trash = Path(tempfile.mkdtemp(prefix=".removed-", dir=self.root))
        os.replace(installed.path, trash / name)
        shutil.rmtree(trash, ignore_errors=True)
        return installed


def _grants(manifest: mf.Manifest, grant_all: bool, grants: list[str]) -> dict[str, Any]:
    asked_dirs = {d.guest: d for d in manifest.permissions.dirs}
    asked_env = set(manifest.permissions.env)
    dirs: dict[str, GrantedDir] = {}
    env: set[str] = set()

    def grant_dir(guest: str, write: bool) -> None:
        d = asked_dirs[guest]
        host = Path(os.path.expanduser(d.host))
        if not host.is_absolute():
            raise SandboxError(
                "bad_request", f"permissions.dirs {guest}: host path must be absolute"
            )
        if not host.is_dir():
            raise SandboxError("bad_request", f"cannot grant {guest}: {host} is not a directory")
        dirs[guest] = GrantedDir(host=str(host.resolve()), guest=guest, write=write and d.write)

    if grant_all:
        for guest, d in asked_dirs.items():
            grant_dir(guest, d.write)
        env |= asked_env
    for grant in grants:
        kind, _, what = grant.partition(":")
        if kind == "dir":
            guest, _, mode = what.partition(":")
            if guest not in asked_dirs:
                raise SandboxError(
                    "bad_request", f"grant {grant!r}: the plugin does not ask for {guest}"
                )
            if mode not in ("", "ro", "rw"):
                raise SandboxError("bad_request", f"grant {grant!r}: mode must be ro or rw")
            grant_dir(guest, mode != "ro")
        elif kind == "env":
            if what not in asked_env:
                raise SandboxError(
                    "bad_request", f"grant {grant!r}: the plugin does not ask for {what}"
                )
            env.add(what)
        else:
            raise SandboxError(
                "bad_request", f"grant {grant!r}: expected dir:/PATH[:ro] or env:NAME"
            )
    return {"dirs": list(dirs.values()), "env": sorted(env)}


def _unpack(archive: Path, dest: Path) -> Path:
    """Extract the regular files of a ``.tar.gz``; return the directory with plugin.toml."""
    if archive.stat().st_size > MAX_PACKAGE_BYTES:
        raise SandboxError("bad_request", f"{archive}: larger than 64 MiB")
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
            if sum(m.size for m in members) > MAX_PACKAGE_BYTES:
                raise SandboxError("bad_request", f"{archive}: unpacks to more than 64 MiB")
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SandboxError("bad_request", f"{archive}: not a readable .tar.gz: {exc}") from None
    found = sorted(dest.rglob("plugin.toml"), key=lambda p: len(p.parts))
    if not found:
        raise SandboxError("bad_request", f"{archive}: no plugin.toml inside")
    return found[0].parent
