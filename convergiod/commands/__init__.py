"""One control command per module: the daemon half (``serve``) and the click half (``cli``)
side by side, as in circus. The daemon imports the ``serve`` functions through ``registry``;
the CLI imports one module per invocation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from convergiod import protocol

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import Caller, RequestContext
    from convergiod.runtime import Pending

Serve = Callable[["Daemon", "RequestContext", Any], Awaitable[protocol.ResultBody]]
#: The daemon half of an op that may be answered at once in the gateway's receive loop
#: (``gateway.InlineHandler``): ``None`` sends it to its ``Serve`` as usual.
ServeNow = Callable[["Daemon", "Caller", int, Any], "protocol.ResultBody | Pending | None"]


def registry() -> dict[type, Serve]:
    from convergiod.commands import actor, daemon, ping, status

    return {
        protocol.Ping: ping.serve,
        protocol.Status: status.serve,
        protocol.ActorRestart: actor.serve_restart,
        protocol.ActorKill: actor.serve_kill,
        protocol.Shutdown: daemon.serve_shutdown,
        protocol.DaemonReload: daemon.serve_reload,
        **_memory_ops(),
        **_tool_ops(),
        **_router_ops(),
        **_plugin_ops(),
        **_orchestrator_ops(),
        **_access_ops(),
    }


def inline_registry() -> dict[type, ServeNow]:
    from convergiod.commands import memory, plugin

    return {
        protocol.PluginCall: plugin.serve_call_now,
        protocol.MemoryRemember: memory.serve_remember_now,
    }


def _access_ops() -> dict[type, Serve]:
    from convergiod.commands import clients, pair, tenant

    return {
        protocol.ClientPair: pair.serve,
        protocol.ClientsList: clients.serve_list,
        protocol.ClientRevoke: clients.serve_revoke,
        protocol.TenantAdd: tenant.serve_add,
        protocol.TenantList: tenant.serve_list,
        protocol.TenantRemove: tenant.serve_remove,
    }


def _orchestrator_ops() -> dict[type, Serve]:
    from convergiod.actors.orchestrator import serve
    from convergiod.commands import agents, task

    return {
        protocol.Ask: serve.serve_ask,
        protocol.TaskResume: serve.serve_resume,
        protocol.AgentsList: agents.serve_list,
        protocol.AgentsShow: agents.serve_show,
        protocol.TaskListOp: task.serve_list,
        protocol.TaskShowOp: task.serve_show,
    }


def _plugin_ops() -> dict[type, Serve]:
    from convergiod.commands import plugin

    return {
        protocol.PluginInstall: plugin.serve_install,
        protocol.PluginList: plugin.serve_list,
        protocol.PluginShow: plugin.serve_info,
        protocol.PluginRemove: plugin.serve_remove,
        protocol.PluginCall: plugin.serve_call,
    }


def _router_ops() -> dict[type, Serve]:
    from convergiod.commands import budget, models, usage

    return {
        protocol.ModelChat: models.serve_chat,
        protocol.ModelsList: models.serve_list,
        protocol.UsageReport: usage.serve,
        protocol.BudgetShowOp: budget.serve_show,
        protocol.BudgetSetOp: budget.serve_set,
    }


def _tool_ops() -> dict[type, Serve]:
    from convergiod.commands import tool, trash

    return {
        protocol.ToolList: tool.serve_list,
        protocol.ToolRun: tool.serve_run,
        protocol.TrashList: trash.serve_list,
        protocol.TrashRestore: trash.serve_restore,
    }


def _memory_ops() -> dict[type, Serve]:
    from convergiod.commands import memory

    return dict(memory.SERVE)
