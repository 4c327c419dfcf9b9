"""Tenants and paired clients: the live list the ZAP handler and the TCP gateway consult.

One JSON file (``<data dir>/security/registry.json``, mode 0600). Every change is written
atomically and then swapped in whole, so a revocation is in force for the next handshake and
the next message, without a restart.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Literal

import msgspec

from convergiod.errors import OpError
from convergiod.security.files import read_private, write_private
from convergiod.security.keys import check_public_key

Role = Literal["admin", "user"]
#: Same rule as the memory actor's database file names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LOCAL_TENANT = "local"


class TenantRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    created: float
    #: 0: the ``gateway.tenant_*`` default.
    rate: float = 0.0
    burst: int = 0
    max_in_flight: int = 0
    #: Directories this tenant's tools may use as workspaces on the daemon's machine.
    roots: list[str] = []


class ClientRecord(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    public_key: str
    tenant: str
    role: Role
    created: float


class _Data(msgspec.Struct, kw_only=True):
    tenants: dict[str, TenantRecord] = {}
    clients: dict[str, ClientRecord] = {}


def check_name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise OpError(
            "bad_request",
            f"invalid {kind} name {name!r}: letters, digits, '.', '_', '-' (up to 64; no '..')",
        )
    return name


def registry_path(data_dir: Path) -> Path:
    return data_dir / "security" / "registry.json"


class Registry:
    """Call the mutating methods from one task at a time (the ops hold a lock); reads are
    safe from anywhere in the Trio thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        raw = read_private(path)
        self._data = msgspec.json.decode(raw, type=_Data) if raw else _Data()
        self._by_key = {c.public_key: c for c in self._data.clients.values()}

    # ------------------------------------------------------------------ reads (hot)

    def lookup(self, public_key: str) -> ClientRecord | None:
        """The client listed with this key now, or ``None`` (never paired, or revoked)."""
        return self._by_key.get(public_key)

    def tenant(self, name: str) -> TenantRecord | None:
        record = self._data.tenants.get(name)
        if record is None and name == LOCAL_TENANT:
            return TenantRecord(name=LOCAL_TENANT, created=0.0)
        return record

    def tenants(self) -> list[TenantRecord]:
        local = [] if LOCAL_TENANT in self._data.tenants else [self.tenant(LOCAL_TENANT)]
        return sorted([*(t for t in local if t), *self._data.tenants.values()], key=_by_name)

    def clients(self) -> list[ClientRecord]:
        return sorted(self._data.clients.values(), key=lambda c: c.name)

    # ------------------------------------------------------------------ changes (blocking I/O)

    def add_tenant(self, record: TenantRecord) -> TenantRecord:
        check_name("tenant", record.name)
        if record.name in self._data.tenants or record.name == LOCAL_TENANT:
            raise OpError("bad_request", f"tenant {record.name!r} already exists")
        tenants = {**self._data.tenants, record.name: record}
        self._commit(_Data(tenants=tenants, clients=self._data.clients))
        return record

    def remove_tenant(self, name: str) -> list[ClientRecord]:
        """Removes the tenant and revokes its clients (returned). Its data stays on disk."""
        if name == LOCAL_TENANT:
            raise OpError("bad_request", "tenant 'local' (the owner's) cannot be removed")
        if name not in self._data.tenants:
            raise OpError("not_found", f"no tenant named {name!r}")
        gone = [c for c in self._data.clients.values() if c.tenant == name]
        tenants = {k: v for k, v in self._data.tenants.items() if k != name}
        clients = {k: v for k, v in self._data.clients.items() if v.tenant != name}
        self._commit(_Data(tenants=tenants, clients=clients))
        return gone

    def pair(self, name: str, public_key: str, tenant: str, role: Role) -> ClientRecord:
        check_name("client", name)
        try:
            check_public_key(public_key)
        except ValueError as exc:
            raise OpError("bad_request", f"public_key: {exc}") from None
        if self.tenant(tenant) is None:
            raise OpError(
                "not_found", f"no tenant named {tenant!r}; add it with `convergio tenant add`"
            )
        if name in self._data.clients:
            raise OpError("bad_request", f"a client named {name!r} is already paired")
        if public_key in self._by_key:
            raise OpError("bad_request", "this public key is already paired")
        record = ClientRecord(
            name=name, public_key=public_key, tenant=tenant, role=role, created=time.time()
        )
        clients = {**self._data.clients, name: record}
        self._commit(_Data(tenants=self._data.tenants, clients=clients))
        return record

    def revoke(self, name: str) -> ClientRecord:
        record = self._data.clients.get(name)
        if record is None:
            raise OpError("not_found", f"no client named {name!r}")
        clients = {k: v for k, v in self._data.clients.items() if k != name}
        self._commit(_Data(tenants=self._data.tenants, clients=clients))
        return record

    def _commit(self, data: _Data) -> None:
        write_private(self.path, msgspec.json.encode(data))
        by_key = {c.public_key: c for c in data.clients.values()}
        self._data, self._by_key = data, by_key


def _by_name(t: TenantRecord) -> str:
    return t.name
