"""The tool actor's messages: the contract the orchestrator, the plugin actor and the op
handlers code against.

Ask the actor named ``"tool"``. A handler answers with the value named in each docstring or
raises ``convergiod.errors.OpError`` (``sandbox_denied``, ``bad_request``, ``timeout``,
``not_found``...) in the asker.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .base import Approver, Policy, Tool


class RunTool(msgspec.Struct, kw_only=True):
    """Run tool ``name`` with untrusted ``args`` (decoded into the tool's Struct; a field that
    does not fit is ``bad_request`` naming it) in ``workspace`` (an absolute directory; empty:
    the first configured root). Answered with ``ToolOutput``.

    Policy ``ask`` calls ``approver(tool, summary, args)``; without an approver it is refused
    (``sandbox_denied``). ``approver`` is an in-process callable: it is never encoded, use
    ``wire()`` to send this message elsewhere. ``timeout`` bounds the run (not the wait for
    approval); default ``tools.timeout``, at most ``tools.max_timeout``.
    """

    tenant: str
    name: str
    args: dict[str, Any]
    workspace: str
    request_id: int
    agent: str | None = None
    approver: Approver | None = None
    timeout: float | None = None

    def wire(self) -> dict[str, Any]:
        """The message without ``approver``, as plain builtins."""
        return {
            "tenant": self.tenant,
            "name": self.name,
            "args": self.args,
            "workspace": self.workspace,
            "request_id": self.request_id,
            "agent": self.agent,
            "timeout": self.timeout,
        }


class CancelTool(msgspec.Struct, kw_only=True):
    """Fire and forget (``send``): cancel every running call of this tenant's request
    ``request_id`` (its process group is killed, its approval wait ends). Send it when the
    task that asked ``RunTool`` is cancelled; asking ``RunTool`` alone does not propagate a
    cancellation to the running tool."""

    tenant: str
    request_id: int


class ListTools(msgspec.Struct, kw_only=True):
    """Every registered tool: answered with ``list[ToolInfo]`` sorted by name."""

    tenant: str


class ToolInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    schema: dict[str, Any]
    policy: Policy
    owner: str = "builtin"


class RegisterTool(msgspec.Struct, kw_only=True):
    """Add (or, for the same owner, replace) a tool; answered with None. A name registered by
    another owner is ``bad_request``. Registrations survive restarts of the tool actor."""

    tool: Tool
    owner: str


class UnregisterOwner(msgspec.Struct, kw_only=True):
    """Remove every tool registered by ``owner``; answered with the number removed."""

    owner: str


ToolMessage = RunTool | CancelTool | ListTools | RegisterTool | UnregisterOwner
