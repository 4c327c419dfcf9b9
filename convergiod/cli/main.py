"""Entry points: ``convergio`` and ``convergiod`` (= ``convergio daemon run``)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from convergio_client.errors import ConvergioError

#: name -> "module:attribute". Imported lazily: `convergio ping` must start in well under 150 ms.
COMMANDS = {
    "ping": "convergiod.commands.ping:cli",
    "status": "convergiod.commands.status:cli",
    "actors": "convergiod.commands.actors:cli",
    "actor": "convergiod.commands.actor:cli",
    "events": "convergiod.commands.events:cli",
    "daemon": "convergiod.commands.daemon:cli",
    "memory": "convergiod.commands.memory:cli",
    "service": "convergiod.commands.service:cli",
    "tool": "convergiod.commands.tool:cli",
    "trash": "convergiod.commands.trash:cli",
    "models": "convergiod.commands.models:cli",
    "usage": "convergiod.commands.usage:cli",
    "budget": "convergiod.commands.budget:cli",
    "plugin": "convergiod.commands.plugin:cli",
    "ask": "convergiod.commands.ask:cli",
    "chat": "convergiod.commands.ask:chat",
    "agents": "convergiod.commands.agents:cli",
    "task": "convergiod.commands.task:cli",
    "pair": "convergiod.commands.pair:cli",
    "clients": "convergiod.commands.clients:cli",
    "tenant": "convergiod.commands.tenant:cli",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConvergioError as exc:
            click.echo(f"convergio: {exc}", err=True)
            sys.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="convergio", prog_name="convergio")
def cli() -> None:
    """Convergio: a team of AI agents running as a local daemon.

    Set CONVERGIO_HOME to run an isolated daemon (config, data and sockets under it).
    """


def main() -> None:
    cli(prog_name="convergio")


def daemon_main() -> None:
    """``convergiod``: what a service manager runs (the daemon in the foreground)."""
    from convergiod.commands.daemon import run_foreground

    sys.exit(run_foreground())
