"""``convergio service install|uninstall|status|logs``: run the daemon as a native service.

``install`` renders a systemd unit (Linux) or a launchd property list (macOS) that runs this
installation's interpreter, writes it, and enables and starts the service; ``--dry-run`` prints
what it would write and run instead. ``--user`` (the default) installs a service of the current
user; ``--system`` a system-wide one under its own account (needs root). There is no daemon half:
these commands talk to the service manager, not to the daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import click

from convergiod.commands._common import json_option, print_json

if TYPE_CHECKING:
    from convergiod.service.install import Manager, Step
    from convergiod.service.units import Installation, Scope

scope_option = click.option(
    "--user/--system",
    "user_scope",
    default=True,
    help="A service of the current user (default) or a system-wide one (needs root).",
)
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Print what would be written and run; change nothing."
)


def _context(user_scope: bool) -> tuple[Manager, Scope, Installation]:
    from convergiod.service.install import ServiceError, detect_manager
    from convergiod.service.units import Installation

    try:
        manager = detect_manager()
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    return manager, "user" if user_scope else "system", Installation.current(dict(os.environ))


def _carry_out(
    steps: list[Step], manager: Manager, scope: Scope, dry_run: bool, as_json: bool
) -> None:
    from convergiod.service import install

    if as_json:
        print_json(
            {
                "manager": manager,
                "scope": scope,
                "dry_run": dry_run,
                "steps": [_step_json(s) for s in steps],
            }
        )
    elif dry_run:
        click.echo(install.describe(steps), nl=False)
    if dry_run:
        return
    try:
        install.check_privileges(scope, manager)
        install.execute(steps, echo=not as_json)
    except install.ServiceError as exc:
        raise click.ClickException(str(exc)) from None


def _step_json(step: Step) -> dict[str, object]:
    from convergiod.service.install import MakeDir, RemoveFile, WriteFile

    if isinstance(step, WriteFile):
        return {"write": str(step.path), "mode": step.mode, "content": step.content.decode()}
    if isinstance(step, MakeDir):
        return {"mkdir": str(step.path), "owner": step.owner}
    if isinstance(step, RemoveFile):
        return {"remove": str(step.path)}
    return {"run": step.argv, "check": step.check}


@click.group()
def cli() -> None:
    """Install, remove and inspect the daemon as a systemd or launchd service."""


@cli.command()
@scope_option
@dry_run_option
@json_option
def install(user_scope: bool, dry_run: bool, as_json: bool) -> None:
    """Write the unit (or property list) for this installation, enable and start it."""
    from convergiod.service.install import install_plan

    manager, scope, inst = _context(user_scope)
    steps = install_plan(manager, scope, inst, dict(os.environ), os.getuid())
    _carry_out(steps, manager, scope, dry_run, as_json)


@cli.command()
@scope_option
@dry_run_option
@json_option
def uninstall(user_scope: bool, dry_run: bool, as_json: bool) -> None:
    """Stop and disable the service and remove its file; configuration and data stay."""
    from convergiod.service.install import uninstall_plan

    manager, scope, inst = _context(user_scope)
    steps = uninstall_plan(manager, scope, inst, dict(os.environ), os.getuid())
    _carry_out(steps, manager, scope, dry_run, as_json)


@cli.command()
@scope_option
@json_option
def status(user_scope: bool, as_json: bool) -> None:
    """Show what the service manager knows: installed, active, the daemon's STATUS line."""
    from convergiod.service import install

    manager, scope, inst = _context(user_scope)
    path = install.service_file(manager, scope, dict(os.environ), inst.user_home)
    installed = path.exists()
    if as_json:
        state: dict[str, object] = {
            "manager": manager,
            "scope": scope,
            "file": str(path),
            "installed": installed,
        }
        if manager == "systemd":
            out = _capture(install.show_argv(scope))
            if out is not None:
                for line in out.splitlines():
                    key, _, value = line.partition("=")
                    state[key] = value
        else:
            out = _capture(install.status_argv(manager, scope, os.getuid()))
            state["loaded"] = out is not None
        print_json(state)
        sys.exit(0 if installed else 3)
    click.echo(f"{'installed' if installed else 'not installed'}: {path}")
    if not installed:
        sys.exit(3)
    sys.exit(_run(install.status_argv(manager, scope, os.getuid())))


@cli.command()
@scope_option
@click.option("-n", "--lines", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@json_option
def logs(user_scope: bool, lines: int, follow: bool, as_json: bool) -> None:
    """Show the daemon's logs (the journal under systemd, the log file under launchd)."""
    from convergiod.service import install

    manager, scope, inst = _context(user_scope)
    argv = install.logs_argv(manager, scope, inst, lines, follow)
    if as_json and manager == "systemd":
        argv.append("--output=json")
    # Under launchd the daemon writes one JSON object per line already (stderr is a file).
    sys.exit(_run(argv))


def _run(argv: list[str]) -> int:
    try:
        return subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        raise click.ClickException(f"{argv[0]} is not installed") from None
    except KeyboardInterrupt:
        return 130


def _capture(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    except FileNotFoundError:
        return None
    return proc.stdout if proc.returncode == 0 else None
