"""``convergio plugin``: install, list, inspect, remove and call WebAssembly plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from convergiod import protocol
from convergiod.commands._common import (
    check_admin,
    client,
    json_option,
    print_json,
    timeout_option,
)

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import Caller, RequestContext


# ---------------------------------------------------------------------------- daemon half


async def _ask(daemon: Daemon, msg: Any, timeout: float | None = 120.0) -> Any:
    assert daemon.system is not None
    return await daemon.system.ref("plugin").ask(msg, timeout=timeout)


async def serve_install(
    daemon: Daemon, ctx: RequestContext, op: protocol.PluginInstall
) -> protocol.PluginDetail:
    from convergiod.actors.plugin.messages import InstallPlugin

    check_admin(ctx.caller.role)
    reply: protocol.PluginDetail = await _ask(
        daemon, InstallPlugin(path=op.path, grant_all=op.grant_all, grants=list(op.grants))
    )
    return reply


async def serve_list(
    daemon: Daemon, ctx: RequestContext, op: protocol.PluginList
) -> protocol.PluginListReply:
    from convergiod.actors.plugin.messages import ListPlugins

    reply: protocol.PluginListReply = await _ask(daemon, ListPlugins())
    return reply


async def serve_info(
    daemon: Daemon, ctx: RequestContext, op: protocol.PluginShow
) -> protocol.PluginDetail:
    from convergiod.actors.plugin.messages import GetPlugin

    reply: protocol.PluginDetail = await _ask(daemon, GetPlugin(name=op.name))
    return reply


async def serve_remove(
    daemon: Daemon, ctx: RequestContext, op: protocol.PluginRemove
) -> protocol.Ack:
    from convergiod.actors.plugin.messages import RemovePlugin

    check_admin(ctx.caller.role)
    reply: protocol.Ack = await _ask(daemon, RemovePlugin(name=op.name))
    return reply


async def serve_call(
    daemon: Daemon, ctx: RequestContext, op: protocol.PluginCall
) -> protocol.PluginOutput:
    from convergiod.actors.plugin.messages import CallPlugin, CallResult

    check_admin(ctx.caller.role)
    # No ask timeout: every call is bounded by its plugin's time limit, and the request by
    # its deadline.
    result: CallResult = await _ask(
        daemon,
        CallPlugin(
            plugin=op.plugin,
            tool=op.tool,
            args=op.args,
            tenant=ctx.caller.tenant,
            request_id=ctx.id,
        ),
        timeout=None,
    )
    return protocol.PluginOutput(
        plugin=op.plugin, tool=op.tool, output=result.value, elapsed_ms=result.elapsed * 1e3
    )


def serve_call_now(
    daemon: Daemon, caller: Caller, request_id: int, op: protocol.PluginCall
) -> protocol.PluginOutput | None:
    """``plugin.call`` answered in the receive loop when the plugin actor can run it at once
    (a short call of a loaded module, see ``PluginActor.handle_now``); else ``None``."""
    from convergiod.actors.plugin.messages import CallPlugin, CallResult
    from convergiod.runtime import NOT_NOW

    check_admin(caller.role)
    if daemon.system is None:
        return None
    msg = CallPlugin(
        plugin=op.plugin, tool=op.tool, args=op.args, tenant=caller.tenant, request_id=request_id
    )
    result: CallResult = daemon.system.ref("plugin").ask_now(msg)
    if result is NOT_NOW:
        return None
    return protocol.PluginOutput(
        plugin=op.plugin, tool=op.tool, output=result.value, elapsed_ms=result.elapsed * 1e3
    )


# ---------------------------------------------------------------------------- click half


@click.group()
def cli() -> None:
    """Install and run WebAssembly plugins (sandboxed; see docs/plugins.md)."""


def _call(op: Any, timeout: float) -> Any:
    with client(timeout) as c:
        return c.call(op)


def _render(p: protocol.PluginDetail) -> str:
    lines = [
        f"{p.name} {p.version}: {p.description}",
        f"  sha256  {p.sha256}",
        f"  path    {p.path}",
    ]
    limits = ", ".join(f"{k}={v}" for k, v in p.limits.items() if v is not None)
    lines.append(f"  limits  {limits}")
    for d in p.asked_dirs:
        granted = next((g for g in p.granted_dirs if g.guest == d.guest), None)
        state = (
            "not granted" if granted is None else ("read-write" if granted.write else "read-only")
        )
        lines.append(
            f"  dir     {d.guest} -> {d.host} (asks {'write' if d.write else 'read'}; {state})"
        )
    for name in p.asked_env:
        state = "granted" if name in p.granted_env else "not granted"
        lines.append(f"  env     {name} ({state})")
    for t in p.tools:
        lines.append(f"  tool    {p.name}.{t.name} [{t.policy}]: {t.description}")
    return "\n".join(lines)


@cli.command("install")
@click.argument("path", type=click.Path(exists=True, resolve_path=True))
@click.option("--grant-all", is_flag=True, help="Grant every permission the manifest asks for.")
@click.option(
    "--grant",
    "grants",
    multiple=True,
    metavar="PERM",
    help="Grant one permission: dir:/GUEST, dir:/GUEST:ro (read-only) or env:NAME.",
)
@json_option
@timeout_option
def install_cmd(
    path: str, grant_all: bool, grants: tuple[str, ...], as_json: bool, timeout: float
) -> None:
    """Install the plugin at PATH (a directory or .tar.gz with plugin.toml); pins its sha256."""
    reply = _call(
        protocol.PluginInstall(path=path, grant_all=grant_all, grants=list(grants)),
        max(timeout, 120.0),
    )
    if as_json:
        print_json(reply)
    else:
        click.echo("installed " + _render(reply))


@cli.command("list")
@json_option
@timeout_option
def list_cmd(as_json: bool, timeout: float) -> None:
    """List installed plugins."""
    reply = _call(protocol.PluginList(), timeout)
    if as_json:
        print_json(reply)
        return
    if not reply.plugins:
        click.echo("no plugins installed")
    for p in reply.plugins:
        tools = ", ".join(t.name for t in p.tools)
        click.echo(f"{p.name:<20} {p.version:<10} {tools}")


@cli.command("info")
@click.argument("name")
@json_option
@timeout_option
def info_cmd(name: str, as_json: bool, timeout: float) -> None:
    """Show a plugin: tools, limits, what it asks for and what was granted."""
    reply = _call(protocol.PluginShow(name=name), timeout)
    if as_json:
        print_json(reply)
    else:
        click.echo(_render(reply))


@cli.command("remove")
@click.argument("name")
@json_option
@timeout_option
def remove_cmd(name: str, as_json: bool, timeout: float) -> None:
    """Uninstall a plugin; its tools leave the registry."""
    reply = _call(protocol.PluginRemove(name=name), timeout)
    if as_json:
        print_json(reply)
    else:
        click.echo(reply.message)


@cli.command("call")
@click.argument("name")
@click.argument("tool")
@click.option("--args", "args_json", default="{}", help="The arguments as a JSON object.")
@json_option
@timeout_option
def call_cmd(name: str, tool: str, args_json: str, as_json: bool, timeout: float) -> None:
    """Call TOOL of plugin NAME with --args JSON and print its JSON result."""
    import json

    try:
        args = json.loads(args_json)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--args") from None
    if not isinstance(args, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--args")
    reply = _call(protocol.PluginCall(plugin=name, tool=tool, args=args), timeout)
    if as_json:
        print_json(reply)
    else:
        click.echo(json.dumps(reply.output, indent=2, ensure_ascii=False))
