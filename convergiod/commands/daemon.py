"""``convergio daemon run|start|stop|status|reload``: the daemon's lifecycle.

``run`` keeps the daemon in the foreground (what systemd or launchd runs); ``start`` runs it in
the background and returns once it answers; ``stop`` sends SIGTERM and waits until in-flight
requests have finished and the daemon has exited; ``reload`` re-reads the configuration
without a restart (as SIGHUP does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

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
    from convergiod.gateway import RequestContext
    from convergiod.paths import Paths


async def serve_shutdown(
    daemon: Daemon, ctx: RequestContext, op: protocol.Shutdown
) -> protocol.Ack:
    check_admin(ctx.caller.role)
    daemon.shutdown_requested.set()
    return protocol.Ack(message="shutting down")


async def serve_reload(
    daemon: Daemon, ctx: RequestContext, op: protocol.DaemonReload
) -> protocol.ReloadReply:
    check_admin(ctx.caller.role)
    return await daemon.reload()


def run_foreground() -> int:
    """Run the daemon in this process; returns the exit code."""
    import logging

    from convergiod import config, daemon, logs, paths
    from convergiod.lock import AlreadyRunning

    where = paths.resolve()
    try:
        cfg = config.load(where.config_file)
    except config.ConfigError as exc:
        click.echo(f"convergiod: invalid configuration: {exc}", err=True)
        return 2
    logs.setup(cfg.log.level, cfg.log.format)
    try:
        return daemon.run(where, cfg)
    except AlreadyRunning as exc:
        click.echo(f"convergiod: {exc}", err=True)
        return 1
    except paths.PathError as exc:
        click.echo(f"convergiod: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except BaseException:
        logging.getLogger("convergiod").exception("the daemon failed")
        return 1


@click.group()
def cli() -> None:
    """Run, start, stop or inspect the daemon."""


@cli.command()
def run() -> None:
    """Run the daemon in the foreground (logs to stderr; Ctrl-C stops it)."""
    sys.exit(run_foreground())


def _paths() -> Paths:
    from convergiod.paths import resolve

    return resolve()


def _running(p: Paths) -> int | None:
    from convergiod.lock import running_pid

    return running_pid(p.lock_file, p.pid_file)


def _answers(p: Paths) -> bool:
    from convergio_client import Client, ConvergioError

    try:
        with Client(paths=p, timeout=0.5, check=False) as c:
            c.call(protocol.Ping())
        return True
    except ConvergioError:
        return False


@cli.command()
@click.option(
    "--wait",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    help="Seconds to wait for the daemon to answer.",
)
@json_option
def start(wait: float, as_json: bool) -> None:
    """Start the daemon in the background; return once it answers."""
    p = _paths()
    pid = _running(p)
    if pid is not None:
        _say(as_json, f"already running (pid {pid})", state="running", pid=pid)
        return
    p.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(p.log_file, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "convergiod", "daemon", "run"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            tail = _tail(p.log_file)
            raise click.ClickException(f"the daemon exited with code {code} at start:\n{tail}")
        if p.api_socket.exists() and _answers(p):
            _say(as_json, f"started (pid {proc.pid})", state="running", pid=proc.pid)
            return
        time.sleep(0.02)
    raise click.ClickException(f"the daemon did not answer within {wait:g} s; see {p.log_file}")


@cli.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds to wait for in-flight requests and exit.",
)
@click.option("--force", is_flag=True, help="SIGKILL the daemon if it has not exited in time.")
@json_option
def stop(timeout: float, force: bool, as_json: bool) -> None:
    """Stop the daemon: no new requests, in-flight ones finish, then it exits."""
    from convergio_client.sync import check_running

    p = _paths()
    pid = check_running(p)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running(p) is None:
            _say(as_json, f"stopped (pid {pid})", state="stopped", pid=pid)
            return
        time.sleep(0.02)
    if force:
        os.kill(pid, signal.SIGKILL)
        _say(as_json, f"killed (pid {pid}) after {timeout:g} s", state="killed", pid=pid)
        return
    raise click.ClickException(f"the daemon (pid {pid}) is still running after {timeout:g} s")


@cli.command()
@json_option
@timeout_option
def reload(as_json: bool, timeout: float) -> None:
    """Re-read the configuration without a restart; a bad file is refused, the old one kept."""
    with client(timeout) as c:
        reply = c.call(protocol.DaemonReload())
    assert isinstance(reply, protocol.ReloadReply)
    if as_json:
        print_json(reply)
        sys.exit(1 if reply.failed else 0)
    click.echo("reloaded: " + (", ".join(reply.changed) or "no setting changed"))
    if reply.restart_needed:
        click.echo("takes effect at the next restart: " + ", ".join(reply.restart_needed))
    for failure in reply.failed:
        click.echo(f"kept its old state: {failure}", err=True)
    if reply.failed:
        sys.exit(1)


@cli.command()
@json_option
def status(as_json: bool) -> None:
    """Say whether the daemon is running (exit 0) or not (exit 3)."""
    p = _paths()
    pid = _running(p)
    if pid is None:
        _say(as_json, "not running", state="stopped", pid=None)
        sys.exit(3)
    _say(as_json, f"running (pid {pid})", state="running", pid=pid)


def _say(as_json: bool, text: str, **fields: object) -> None:
    if as_json:
        print_json(fields)
    else:
        click.echo(text)


def _tail(path: object, lines: int = 20) -> str:
    try:
        with open(str(path), "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode(errors="replace").rstrip()
    except OSError:
        return "(no log)"
