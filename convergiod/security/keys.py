"""CURVE key pairs as Z85 text (40 characters), and the daemon's own pair on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import zmq
import zmq.utils.z85

from convergiod.security.files import read_private, write_private

Z85_KEY_LEN = 40


class KeyPair(msgspec.Struct, frozen=True, kw_only=True):
    public: str
    secret: str


def new_keypair() -> KeyPair:
    public, secret = zmq.curve_keypair()
    return KeyPair(public=public.decode("ascii"), secret=secret.decode("ascii"))


def check_public_key(key: str) -> str:
    """``key`` if it is a Z85 CURVE public key, else ``ValueError``."""
    if len(key) != Z85_KEY_LEN:
        raise ValueError(f"a CURVE public key is {Z85_KEY_LEN} Z85 characters, got {len(key)}")
    try:
        raw = zmq.utils.z85.decode(key.encode("ascii"))
    except (ValueError, UnicodeEncodeError, KeyError):
        raise ValueError("not a Z85-encoded key") from None
    if len(raw) != 32:
        raise ValueError("not a 32-byte key")
    return key


@dataclass(frozen=True)
class ServerKeys:
    """The daemon's key pair, made on first use and never rotated silently: paired clients
    pin its public half."""

    path: Path

    def load_or_create(self) -> KeyPair:
        data = read_private(self.path)
        if data is not None:
            return msgspec.json.decode(data, type=KeyPair)
        pair = new_keypair()
        write_private(self.path, msgspec.json.encode(pair))
        return pair

    def public(self) -> str:
        return self.load_or_create().public


def server_key_path(data_dir: Path) -> Path:
    return data_dir / "security" / "server_key.json"


__all__ = ["KeyPair", "ServerKeys", "check_public_key", "new_keypair", "server_key_path"]
