"""Helpers shared by the click halves of the commands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import msgspec

from convergiod import protocol

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the daemon.",
)


def print_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(protocol.to_builtins(obj)).decode() + "\n")


def client(timeout: float) -> Any:
    from convergio_client import Client

    return Client(timeout=timeout)


def check_admin(role: str) -> None:
    from convergiod.errors import OpError

    if role != "admin":
        raise OpError("forbidden", "this operation needs the admin role")


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def call_ack(op: protocol.Op, as_json: bool, timeout: float) -> None:
    """Run an op whose result is an ``ack`` and print it."""
    with client(timeout) as c:
        reply = c.call(op)
    assert isinstance(reply, protocol.Ack)
    if as_json:
        print_json(reply)
    else:
        click.echo(reply.message)
