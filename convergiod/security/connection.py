"""The connection file that ``convergio pair`` writes and a frontend loads (JSON, mode 0600):
where the daemon is, the daemon's public key to pin, and the client's own key pair.

Imported by the CLI and the client library: msgspec only.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

FORMAT = "convergio-connection"


class ConnectionFile(msgspec.Struct, kw_only=True):
    format: str = FORMAT
    version: int = 1
    name: str
    tenant: str
    role: str
    endpoint: str
    server_key: str
    public_key: str
    #: Absent when the client made its own key pair (``convergio pair --public-key``).
    secret_key: str = ""


def load_connection(path: str | os.PathLike[str]) -> ConnectionFile:
    conn = msgspec.json.decode(Path(path).read_bytes(), type=ConnectionFile)
    if conn.format != FORMAT:
        raise ValueError(f"{path}: not a convergio connection file (format {conn.format!r})")
    return conn


def check_usable(conn: ConnectionFile) -> ConnectionFile:
    """``conn`` if a client can connect with it, else ``ValueError`` saying what is missing."""
    if not conn.endpoint:
        raise ValueError(f"connection {conn.name!r} has no endpoint (the tcp door was off)")
    if not conn.secret_key:
        raise ValueError(f"connection {conn.name!r} has no secret key (paired by public key)")
    return conn


def write_connection(path: Path, conn: ConnectionFile, *, overwrite: bool = False) -> None:
    """Create ``path`` with mode 0600 (``O_EXCL`` unless ``overwrite``)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(msgspec.json.format(msgspec.json.encode(conn)) + b"\n")
