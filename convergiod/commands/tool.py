"""``convergio tool list|run``: the tools agents use, and running one by hand.

``tool run`` runs under the same policies as an agent's call: when the tool's policy is
``ask``, the daemon streams an approval request and the CLI asks at the terminal (once,
always, deny). ``--yes`` approves this one run (for scripts); without a terminal and without
``--yes`` the answer is deny.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from convergiod import protocol
from convergiod.commands._common import client, json_option, print_json

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext

#: Slack on top of the daemon's own limits for waiting on a ``tool run`` answer.
CLIENT_SLACK = 30.0


async def serve_list(
    daemon: Daemon, ctx: RequestContext, op: protocol.ToolList
) -> protocol.ToolListReply:
    from convergiod.actors.tool.messages import ListTools, ToolInfo

    assert daemon.system is not None
    infos: list[ToolInfo] = await daemon.system.ref("tool").ask(
        ListTools(tenant=ctx.caller.tenant), timeout=5.0
    )
    return protocol.ToolListReply(
        tools=[
            protocol.ToolSpec(
                name=i.name,
                description=i.description,
                schema=i.schema,
                policy=i.policy,
                owner=i.owner,
            )
            for i in infos
        ]
    )


async def serve_run(
    daemon: Daemon, ctx: RequestContext, op: protocol.ToolRun
) -> protocol.ToolOutputReply:
    import trio

    from convergiod.actors.tool.messages import CancelTool, RunTool
    from convergiod.runtime import ActorError
    from convergiod.security.workspace import tenant_workspace

    cfg = daemon.config.tools
    tenant = ctx.caller.tenant
    workspace = tenant_workspace(daemon, ctx.caller, op.workspace)

    async def approver(tool: str, summary: str, args: dict[str, Any]) -> Any:
        return await ctx.request_approval(
            tool=tool, summary=summary, args=args, timeout=cfg.approval_timeout
        )

    assert daemon.system is not None
    ref = daemon.system.ref("tool")
    msg = RunTool(
        tenant=tenant,
        name=op.name,
        args=op.args,
        workspace=workspace,
        request_id=ctx.id,
        approver=approver,
        timeout=op.timeout,
    )
    # The actor bounds the call itself (approval timeout, then the run's timeout).
    limit = cfg.approval_timeout + min(op.timeout or cfg.timeout, cfg.max_timeout) + CLIENT_SLACK
    try:
        out = await ref.ask(msg, timeout=limit)
    except trio.Cancelled:
        try:
            ref.send(CancelTool(tenant=tenant, request_id=ctx.id))
        except ActorError:
            pass
        raise
    return protocol.ToolOutputReply(content=out.content, data=out.data, truncated=out.truncated)


# ----------------------------------------------------------------------------- CLI


@click.group()
def cli() -> None:
    """List the tools agents can use, or run one (under the same approval policies)."""


@cli.command("list")
@json_option
@click.option("--timeout", type=click.FloatRange(min=0.01), default=10.0, show_default=True)
def list_cmd(as_json: bool, timeout: float) -> None:
    """Every tool: name, approval policy, description (with --json: the argument schemas)."""
    with client(timeout) as c:
        reply = c.call(protocol.ToolList())
    assert isinstance(reply, protocol.ToolListReply)
    if as_json:
        print_json(reply.tools)
        return
    width = max((len(t.name) for t in reply.tools), default=4)
    for t in reply.tools:
        owner = "" if t.owner == "builtin" else f" [{t.owner}]"
        click.echo(f"{t.name.ljust(width)}  {t.policy.ljust(4)}  {t.description}{owner}")


def _parse_args(_ctx: click.Context, _param: click.Parameter, value: str) -> dict[str, Any]:
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter("must be a JSON object")
    return data


@cli.command("run")
@click.argument("name")
@click.option(
    "--args", "args", default="{}", callback=_parse_args, help="The arguments, a JSON object."
)
@click.option(
    "--workspace",
    type=click.Path(exists=True, file_okay=False, resolve_path=True),
    default=None,
    help="The sandbox's workspace (default: the current directory).",
)
@click.option("--yes", "-y", is_flag=True, help="Approve this one run without asking.")
@click.option(
    "--run-timeout", type=click.FloatRange(min=0.01), default=None, help="Seconds the tool may run."
)
@json_option
def run_cmd(
    name: str,
    args: dict[str, Any],
    workspace: str | None,
    yes: bool,
    run_timeout: float | None,
    as_json: bool,
) -> None:
    """Run tool NAME with --args JSON in the workspace, asking for approval when needed."""
    op = protocol.ToolRun(
        name=name,
        args=args,
        workspace=workspace or os.getcwd(),
        timeout=run_timeout,
    )
    with client(10.0) as c:
        stream = c.stream(op, timeout=None)
        for event in stream:
            if isinstance(event, protocol.ApprovalRequest):
                stream.answer(event.approval, _decide(event, yes))
    reply = stream.result
    assert isinstance(reply, protocol.ToolOutputReply)
    if as_json:
        print_json(reply)
        return
    click.echo(reply.content, nl=not reply.content.endswith("\n"))
    if reply.truncated:
        click.echo("convergio: output truncated", err=True)


def _decide(event: protocol.ApprovalRequest, yes: bool) -> protocol.ApprovalDecision:
    if yes:
        return "once"
    if not sys.stdin.isatty():
        click.echo(
            f"convergio: {event.tool} needs approval ({event.summary}); denied: no terminal "
            "(use --yes to approve)",
            err=True,
        )
        return "deny"
    shown = json.dumps(event.args, indent=2, ensure_ascii=False)
    if len(shown) > 4000:
        shown = shown[:4000] + "\n..."
    click.echo(f"\n{event.tool} wants to: {event.summary}\n{shown}", err=True)
    choice = click.prompt(
        "Allow? [o]nce, [a]lways, [d]eny",
        type=click.Choice(["o", "a", "d", "once", "always", "deny"]),
        default="d",
        show_choices=False,
        err=True,
    )
    return {"o": "once", "a": "always", "d": "deny"}.get(choice, choice)  # type: ignore[return-value]
