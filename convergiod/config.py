"""Typed configuration, decoded from ``config.toml`` with msgspec.

Unknown keys and wrong types are errors that name the key (``gateway.max_in_flight``), so a
typo never silently falls back to a default. Every section has embedded defaults: a missing
file means "all defaults".
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=86400)]
Count = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message names file and key."""


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class GatewayConfig(_Section):
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=64 << 20)] = 1 << 20
    max_in_flight: Count = 4096
    max_in_flight_per_client: Count = 1024
    drain_timeout: PositiveSeconds = 10.0


class SupervisorConfig(_Section):
    """Supervision of the core actors (``system``, ``events``, ``health``)."""

    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    intensity: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 5
    period: PositiveSeconds = 10.0
    shutdown: PositiveSeconds = 5.0


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"


class Config(_Section):
    gateway: GatewayConfig = msgspec.field(default_factory=GatewayConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)


def load(path: Path) -> Config:
    """Read ``path``; a missing file gives the embedded defaults."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse(data, source=str(path))


def parse(data: bytes | str, *, source: str = "config.toml") -> Config:
    try:
        return msgspec.toml.decode(data, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None


def _describe(exc: msgspec.ValidationError) -> str:
    """msgspec says ``... - at `$.gateway.max_in_flight```; say ``key gateway.max_in_flight``."""
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$"
    key = where.rstrip("`").removeprefix("$").lstrip(".")
    if message.startswith("Object contains unknown field"):
        field = message.split("`")[1] if "`" in message else ""
        full = f"{key}.{field}" if key else field
        return f"unknown key {full!r}"
    return f"key {key!r}: {message}"
