"""Turning msgspec validation errors into messages that name the offending key.

msgspec says ``Object contains unknown field `x` - at `$.gateway```; users of a config file,
an agent definition or a plugin manifest should read ``unknown key 'gateway.x'``.
"""

from __future__ import annotations

import msgspec


def describe(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        message, where = text, "$"
    key = where.rstrip("`").removeprefix("$").lstrip(".")
    for prefix, label in (
        ("Object contains unknown field", "unknown key"),
        ("Object missing required field", "missing key"),
    ):
        if message.startswith(prefix):
            field = message.split("`")[1] if "`" in message else ""
            return f"{label} {(f'{key}.{field}' if key else field)!r}"
    return f"key {key!r}: {message}" if key else message
