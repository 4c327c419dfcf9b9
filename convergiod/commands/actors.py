"""``convergio actors``: the supervision tree, one actor per line."""

from __future__ import annotations

import click

from convergiod.commands._common import json_option, print_json, timeout_option
from convergiod.commands.status import fetch, render_actors


@click.command()
@json_option
@timeout_option
def cli(as_json: bool, timeout: float) -> None:
    """List every actor and supervisor with state, restarts, mailbox depth and messages."""
    actors = fetch(timeout).actors
    if as_json:
        print_json(actors)
    else:
        click.echo(render_actors(actors))
