"""``plugin.toml``: what a plugin is, which tools it provides and what it asks for.

Decoded with msgspec into typed Structs: unknown keys and wrong types are errors that name
the key (``tools[0].argz``), so a typo never silently drops a limit or a permission. Tool
argument schemas are checked here too (only the JSON-schema subset that ``schema.validate``
enforces is accepted), so a plugin cannot advertise a constraint the daemon would not check.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from convergiod.actors.plugin import schema
from convergiod.validation import describe

PluginName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
ToolName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
ModuleFile = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\.wasm$")]
GuestPath = Annotated[str, msgspec.Meta(pattern=r"^/[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")]

#: The separator between plugin and tool in registered tool names (``textkit__slugify``):
#: model providers accept only ``[A-Za-z0-9_-]`` in tool names.
TOOL_SEPARATOR = "__"


class ManifestError(Exception):
    """The manifest is unreadable or invalid; the message names the key."""


class _Strict(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class DirPermission(_Strict):
    """Access to one host directory, seen by the plugin at ``guest``."""

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    guest: GuestPath
    write: bool = False
    reason: str = ""


class Permissions(_Strict):
    dirs: list[DirPermission] = []
    env: list[EnvName] = []


class Limits(_Strict):
    memory_mb: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=600_000)] = 5_000
    #: Fuel units (roughly wasm instructions) per call; absent = no fuel metering.
    fuel: Annotated[int, msgspec.Meta(ge=1, le=2**62)] | None = None
    output_kb: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 1_024


class ToolSpec(_Strict):
    name: ToolName
    description: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    #: JSON schema of the arguments (the subset in ``schema.KEYWORDS``); an object schema.
    args: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    policy: Literal["auto", "ask", "deny"] = "auto"


class Manifest(_Strict, kw_only=True):
    name: PluginName
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    module: ModuleFile = "plugin.wasm"
    tools: Annotated[list[ToolSpec], msgspec.Meta(min_length=1, max_length=256)]
    permissions: Permissions = msgspec.field(default_factory=Permissions)
    limits: Limits = msgspec.field(default_factory=Limits)

    def tool(self, name: str) -> ToolSpec | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None


def parse(data: bytes | str, *, source: str = "plugin.toml") -> Manifest:
    try:
        manifest = msgspec.toml.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise ManifestError(f"{source}: {describe(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ManifestError(f"{source}: not valid TOML: {exc}") from None
    seen: set[str] = set()
    for i, tool in enumerate(manifest.tools):
        if tool.name in seen:
            raise ManifestError(f"{source}: tools[{i}].name: duplicate tool {tool.name!r}")
        seen.add(tool.name)
        try:
            schema.check_schema(tool.args)
        except schema.SchemaError as exc:
            raise ManifestError(f"{source}: tools[{i}].args: {exc}") from None
        if tool.args.get("type") != "object":
            raise ManifestError(f"{source}: tools[{i}].args: the schema must have type 'object'")
    guests = [d.guest for d in manifest.permissions.dirs]
    if len(set(guests)) != len(guests):
        raise ManifestError(f"{source}: permissions.dirs: a guest path appears twice")
    return manifest
