"""Helpers shared by the plugin tests: fixture modules and manifests written on the fly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "plugins"
EXAMPLES = ROOT / "plugins" / "examples"


def make_plugin(
    where: Path,
    name: str,
    wasm: Path,
    *,
    tools: list[dict[str, Any]] | None = None,
    limits: dict[str, Any] | None = None,
    permissions: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A plugin directory ``where/name`` holding ``wasm`` and a manifest for it."""
    path = where / name
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wasm, path / "plugin.wasm")
    manifest: dict[str, Any] = {
        "name": name,
        "version": "0.1.0",
        "description": f"test fixture {wasm.name}",
        "tools": tools or [{"name": "run", "args": {"type": "object"}}],
    }
    if limits:
        manifest["limits"] = limits
    if permissions:
        manifest["permissions"] = permissions
    manifest.update(extra or {})
    (path / "plugin.toml").write_text(to_toml(manifest))
    return path


def to_toml(doc: dict[str, Any]) -> str:
    """A TOML document of ``key = value`` lines with inline tables (no tomli_w here)."""

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    return "".join(f"{json.dumps(k)} = {value(v)}\n" for k, v in doc.items())


FS_TOOLS: list[dict[str, Any]] = [
    {
        "name": "read",
        "args": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
    {
        "name": "write",
        "args": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "text": {"type": "string"}},
        },
    },
]
