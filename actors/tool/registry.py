"""The tool registry: built-in tools plus whatever the plugin actor registers, and the
effective approval policy of each.

It belongs to the daemon, not to one instance of the tool actor, so registrations survive a
restart of the actor.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import msgspec

from convergiod.errors import OpError

from .base import Policy, Tool, tool_schema
from .messages import ToolInfo

POLICIES: frozenset[str] = frozenset(("auto", "ask", "deny"))


class Registry:
    def __init__(self, policies: dict[str, Policy] | None = None) -> None:
        self._tools: dict[str, tuple[Tool, str]] = {}
        self._schemas: dict[str, dict[str, Any]] = {}
        self._policies = dict(policies or {})
        # Globs, longest (most specific) first.
        self._globs = sorted(
            (k for k in self._policies if any(c in k for c in "*?[")), key=len, reverse=True
        )
        #: ``always`` approvals kept here too, so that they hold even while the memory actor
        #: is down: (tenant, tool, key).
        self.approved: set[tuple[str, str, str]] = set()
        self._infos: list[ToolInfo] | None = None

    def add(self, tool: Tool, owner: str) -> None:
        name = getattr(tool, "name", None)
        if not isinstance(name, str) or not name or len(name) > 64:
            raise OpError("bad_request", f"invalid tool name {name!r}")
        current = self._tools.get(name)
        if current is not None and current[1] != owner:
            raise OpError("bad_request", f"tool {name!r} is already registered by {current[1]}")
        if not (isinstance(tool.args_type, type) and issubclass(tool.args_type, msgspec.Struct)):
            raise OpError("bad_request", f"tool {name!r}: args_type must be a msgspec Struct")
        self._schemas[name] = tool_schema(tool)
        self._tools[name] = (tool, owner)
        self._infos = None

    def remove_owner(self, owner: str) -> int:
        names = [n for n, (_, o) in self._tools.items() if o == owner]
        for n in names:
            del self._tools[n]
            del self._schemas[n]
        if names:
            self._infos = None
        return len(names)

    def get(self, name: str) -> Tool:
        entry = self._tools.get(name)
        if entry is None:
            raise OpError("not_found", f"no tool named {name!r}")
        return entry[0]

    def policy(self, name: str) -> Policy:
        """``[tools.policy]`` by exact name, then the most specific glob, then the tool's own
        default (an unknown default counts as ``ask``)."""
        configured = self._policies.get(name)
        if configured is None:
            for pattern in self._globs:
                if fnmatch.fnmatchcase(name, pattern):
                    configured = self._policies[pattern]
                    break
        if configured is not None:
            return configured
        default = self.get(name).default_policy
        return default if default in POLICIES else "ask"

    def infos(self) -> list[ToolInfo]:
        """Every tool, sorted by name: the same list (do not change it) until a tool is
        added or removed, so callers can cache what they derive from it."""
        if self._infos is None:
            self._infos = self._make_infos()
        return self._infos

    def _make_infos(self) -> list[ToolInfo]:
        return [
            ToolInfo(
                name=name,
                description=tool.description,
                schema=self._schemas[name],
                policy=self.policy(name),
                owner=owner,
            )
            for name, (tool, owner) in sorted(self._tools.items())
        ]

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)
