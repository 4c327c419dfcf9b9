"""Which directories a tenant's tools may use as their workspace on the daemon's machine.

Tenant ``local`` (the owner) may name any directory, as before. Another tenant's workspace
must lie inside one of its roots (``convergio tenant add --root``); without a workspace the
first root is used. A tenant without roots may name no workspace; its tools see only the
configured ``tools.roots`` (shared by every tenant: leave it empty on a shared daemon).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from convergiod.errors import OpError
from convergiod.security.registry import LOCAL_TENANT

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import Caller


def tenant_workspace(daemon: Daemon, caller: Caller, workspace: str) -> str:
    if caller.tenant == LOCAL_TENANT or daemon.registry is None:
        return workspace
    record = daemon.registry.tenant(caller.tenant)
    roots = record.roots if record is not None else []
    if not workspace and not roots:
        return ""  # tools get only the configured ``tools.roots``, shared by every tenant
    if not roots:
        raise OpError(
            "sandbox_denied",
            f"tenant {caller.tenant!r} has no workspace roots on this daemon "
            "(`convergio tenant add --root`)",
        )
    if not workspace:
        return roots[0]
    if not os.path.isabs(workspace):
        raise OpError("bad_request", f"workspace must be an absolute path, got {workspace!r}")
    real = os.path.realpath(workspace)
    for root in roots:
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return real
    raise OpError(
        "sandbox_denied", f"workspace {workspace!r} is outside tenant {caller.tenant!r}'s roots"
    )
