"""``convergio agents list|show NAME``: the team as the daemon loaded it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from convergiod import protocol
from convergiod.commands._common import client, json_option, print_json, timeout_option

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


async def _team(daemon: Daemon):  # type: ignore[no-untyped-def]
    from convergiod.actors.orchestrator.actor import GetTeam

    assert daemon.system is not None
    return await daemon.system.ref("orchestrator").ask(GetTeam())


async def serve_list(
    daemon: Daemon, ctx: RequestContext, op: protocol.AgentsList
) -> protocol.AgentsReply:
    team = await _team(daemon)
    return protocol.AgentsReply(
        agents=[
            protocol.AgentSummary(
                name=a.name,
                description=a.description,
                model=a.model,
                tools=list(a.tools),
                delegates=list(a.delegates),
                source=str(a.source),
            )
            for a in sorted(team.agents.values(), key=lambda a: a.name)
        ],
        errors=list(team.errors),
    )


async def serve_show(
    daemon: Daemon, ctx: RequestContext, op: protocol.AgentsShow
) -> protocol.AgentDetail:
    import msgspec

    from convergiod.errors import OpError

    team = await _team(daemon)
    a = team.get(op.name)
    if a is None:
        raise OpError("not_found", f"no agent named {op.name!r}")
    return protocol.AgentDetail(
        name=a.name,
        description=a.description,
        model=a.model,
        fallback=list(a.fallback),
        tools=list(a.tools),
        delegates=list(a.delegates),
        temperature=a.temperature,
        limits=msgspec.to_builtins(a.limits),
        prompt=a.prompt,
        source=str(a.source),
    )


@click.group()
def cli() -> None:
    """The agents of the team: list them or show one."""


@cli.command("list")
@json_option
@timeout_option
def list_cmd(as_json: bool, timeout: float) -> None:
    """Every agent with its description; files that did not load are listed with why."""
    with client(timeout) as c:
        reply = c.call(protocol.AgentsList())
    if as_json:
        print_json(reply)
        return
    width = max((len(a.name) for a in reply.agents), default=4)
    for a in reply.agents:
        extra = f" (delegates to {', '.join(a.delegates)})" if a.delegates else ""
        click.echo(f"{a.name.ljust(width)}  {a.description}{extra}")
    for error in reply.errors:
        click.echo(f"error: {error}", err=True)


@cli.command()
@click.argument("name")
@json_option
@timeout_option
def show(name: str, as_json: bool, timeout: float) -> None:
    """One agent's definition: model, tools, delegates, limits and system prompt."""
    with client(timeout) as c:
        a = c.call(protocol.AgentsShow(name=name))
    if as_json:
        print_json(a)
        return
    limits = ", ".join(f"{k}={v}" for k, v in a.limits.items())
    click.echo(
        f"{a.name}: {a.description}\n"
        f"model: {a.model}" + (f" (fallback {', '.join(a.fallback)})" if a.fallback else "") + "\n"
        f"tools: {', '.join(a.tools) or '-'}\n"
        f"delegates: {', '.join(a.delegates) or '-'}\n"
        f"limits: {limits}\nsource: {a.source}\n\n{a.prompt}"
    )
