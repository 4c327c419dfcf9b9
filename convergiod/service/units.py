"""systemd units and launchd property lists, rendered for one installation.

The files under ``systemd/`` and ``launchd/`` in the repository are these renderings for a
packaged installation (``REFERENCE``); ``python -m convergiod.service.units DIR`` rewrites them
and a test keeps them in step. ``convergio service install`` renders the same templates with
the interpreter and paths of the installation it runs from.
"""

from __future__ import annotations

import plistlib
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

Scope = Literal["user", "system"]

UNIT_NAME = "convergiod.service"
LABEL = "io.convergio.convergiod"
#: The account of the system-wide service (systemd: created by sysusers; macOS: by the admin).
SYSTEM_USER = "convergio"
MACOS_SYSTEM_USER = "_convergio"
MACOS_SYSTEM_HOME = "/Library/Application Support/Convergio"
#: Seconds without a ``WATCHDOG=1`` after which systemd restarts the daemon; it pings at half.
WATCHDOG_SEC = 30
#: Covers ``gateway.drain_timeout`` plus the tree's own shutdown timeouts.
STOP_TIMEOUT_SEC = 60


@dataclass(frozen=True, kw_only=True)
class Installation:
    """What the rendered files point at."""

    #: The interpreter that has convergiod installed (a venv's ``bin/python`` stays unresolved:
    #: the venv is found through that path).
    python: str
    #: The user's home directory (launchd wants absolute log paths).
    user_home: str
    #: ``CONVERGIO_HOME`` to pin in the user service, if the installation uses one.
    convergio_home: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def current(cls, env: dict[str, str]) -> Installation:
        return cls(
            python=sys.executable,
            user_home=str(Path.home()),
            convergio_home=env.get("CONVERGIO_HOME") or None,
        )

    @property
    def argv(self) -> list[str]:
        return [self.python, "-m", "convergiod", "daemon", "run"]


#: What the files in systemd/ and launchd/ are rendered for.
REFERENCE = Installation(python="/usr/bin/python3", user_home="/Users/you")


# --------------------------------------------------------------------------- systemd


def systemd_unit(scope: Scope, inst: Installation) -> str:
    exec_start = " ".join(_sd_quote(a) for a in inst.argv)
    env = {"PYTHONUNBUFFERED": "1", **inst.extra_env}
    if scope == "user":
        if inst.convergio_home:
            env["CONVERGIO_HOME"] = inst.convergio_home
        return _USER_UNIT.format(
            exec_start=exec_start,
            environment=_sd_environment(env),
            watchdog=WATCHDOG_SEC,
            stop_timeout=STOP_TIMEOUT_SEC,
        )
    # paths.resolve() without CONVERGIO_HOME follows the XDG variables: config in
    # /etc/convergio (root-owned, read-only to the daemon), data in /var/lib/convergio,
    # sockets in /run/convergio.
    env.update(
        XDG_CONFIG_HOME="/etc",
        XDG_DATA_HOME="/var/lib",
        XDG_RUNTIME_DIR="/run",
        HOME=f"/var/lib/{SYSTEM_USER}",
    )
    under_home = any(
        PurePosixPath(inst.python).is_relative_to(p) for p in ("/home", "/root", "/run/user")
    )
    return _SYSTEM_UNIT.format(
        exec_start=exec_start,
        environment=_sd_environment(env),
        watchdog=WATCHDOG_SEC,
        stop_timeout=STOP_TIMEOUT_SEC,
        user=SYSTEM_USER,
        # The interpreter must stay readable: a venv under /home needs read-only, not hidden.
        protect_home="read-only" if under_home else "yes",
    )


def sysusers_conf() -> str:
    return (
        "# The account of the system-wide convergiod service (systemd-sysusers(8)).\n"
        f'u {SYSTEM_USER} - "Convergio daemon" /var/lib/{SYSTEM_USER} /usr/sbin/nologin\n'
    )


_COMMON_SERVICE = """\
Type=notify
NotifyAccess=main
ExecStart={exec_start}
# SIGHUP re-reads the configuration; the daemon answers RELOADING=1 ... READY=1.
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
WatchdogSec={watchdog}
TimeoutStopSec={stop_timeout}
{environment}
UMask=0077
"""

_USER_UNIT = (
    """\
# Installed by `convergio service install`; see docs/operations.md.
[Unit]
Description=Convergio: a team of AI agents (user daemon)

[Service]
"""
    + _COMMON_SERVICE
    + """\
# Hardening a user manager can apply. Filesystem namespacing (ProtectSystem=, PrivateTmp=)
# needs privileges a user manager lacks, and the tool actor works in the user's own files.
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
# No MemoryDenyWriteExecute=: see the system unit.

[Install]
WantedBy=default.target
"""
)

_SYSTEM_UNIT = (
    """\
# Installed by `convergio service install --system`; see docs/operations.md.
[Unit]
Description=Convergio: a team of AI agents (system daemon)
Wants=network-online.target
After=network-online.target

[Service]
"""
    + _COMMON_SERVICE
    + """\
User={user}
Group={user}
StateDirectory=convergio
StateDirectoryMode=0700
RuntimeDirectory=convergio
RuntimeDirectoryMode=0700
ConfigurationDirectory=convergio
ConfigurationDirectoryMode=0755
ProtectSystem=strict
ProtectHome={protect_home}
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
SystemCallArchitectures=native
# MemoryDenyWriteExecute=yes is deliberately absent: the plugin actor runs WebAssembly with
# wasmtime, whose Cranelift JIT writes machine code and then makes those pages executable
# (mprotect PROT_EXEC), and so does loading a cached compiled module. The filter forbids any
# mapping from becoming executable, so every plugin would fail to load.

[Install]
WantedBy=multi-user.target
"""
)


def _sd_quote(arg: str) -> str:
    # systemd.syntax: "%" starts a specifier and "$" a variable in Exec lines.
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if any(c in escaped for c in " \t\"\\'"):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def _sd_environment(env: dict[str, str]) -> str:
    return "\n".join(
        "Environment=" + _sd_quote(f"{k}={v}").replace("$$", "$") for k, v in env.items()
    )


# --------------------------------------------------------------------------- launchd


def launchd_log_path(scope: Scope, inst: Installation) -> str:
    base = (
        "/Library/Logs/Convergio"
        if scope == "system"
        else f"{inst.user_home}/Library/Logs/Convergio"
    )
    return f"{base}/convergiod.log"


def launchd_plist(scope: Scope, inst: Installation) -> bytes:
    """A LaunchAgent (``user``) or LaunchDaemon (``system``) property list."""
    env = {
        "PYTHONUNBUFFERED": "1",
        "PATH": "/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        **inst.extra_env,
    }
    log = launchd_log_path(scope, inst)
    plist: dict[str, Any] = {
        "Label": LABEL,
        "ProgramArguments": inst.argv,
        "RunAtLoad": True,
        # Restart after a crash (non-zero exit), not after an orderly stop.
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        # Seconds between SIGTERM and SIGKILL: in-flight requests get time to finish.
        "ExitTimeOut": STOP_TIMEOUT_SEC,
        "ProcessType": "Background",
        "StandardOutPath": log,
        "StandardErrorPath": log,
        "EnvironmentVariables": env,
    }
    if scope == "system":
        env["CONVERGIO_HOME"] = MACOS_SYSTEM_HOME
        plist["UserName"] = MACOS_SYSTEM_USER
        plist["GroupName"] = MACOS_SYSTEM_USER
        plist["WorkingDirectory"] = MACOS_SYSTEM_HOME
        plist["Umask"] = 0o077
    else:
        if inst.convergio_home:
            env["CONVERGIO_HOME"] = inst.convergio_home
        plist["WorkingDirectory"] = inst.user_home
        plist["Umask"] = 0o077
    return plistlib.dumps(plist, sort_keys=True)


# --------------------------------------------------------------------------- reference files

REFERENCE_FILES: dict[str, Any] = {
    "systemd/convergiod.service": lambda: systemd_unit("user", REFERENCE).encode(),
    "systemd/convergiod-system.service": lambda: systemd_unit("system", REFERENCE).encode(),
    "systemd/convergio-sysusers.conf": lambda: sysusers_conf().encode(),
    f"launchd/{LABEL}.agent.plist": lambda: launchd_plist("user", REFERENCE),
    f"launchd/{LABEL}.daemon.plist": lambda: launchd_plist("system", REFERENCE),
}


def main(argv: list[str]) -> int:
    """Write the reference files under the repository root ``argv[0]``."""
    root = Path(argv[0] if argv else ".")
    for rel, render in REFERENCE_FILES.items():
        (root / rel).write_bytes(render())
        print(f"wrote {root / rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
