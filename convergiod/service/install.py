"""What ``convergio service install|uninstall|status|logs`` write and run, as plans.

A plan is a list of steps (write a file, make a directory, remove a file, run a command).
``--dry-run`` prints it; otherwise ``execute`` carries it out. Keeping the decision (the plan)
apart from the doing lets the tests check exactly what a real install would do without ever
touching the service manager.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from convergiod.service import units
from convergiod.service.units import LABEL, UNIT_NAME, Installation, Scope

Manager = Literal["systemd", "launchd"]


class ServiceError(Exception):
    """The plan cannot be made or carried out; the message says what to do."""


@dataclass(frozen=True)
class WriteFile:
    path: Path
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class MakeDir:
    path: Path
    owner: str | None = None


@dataclass(frozen=True)
class RemoveFile:
    path: Path


@dataclass(frozen=True)
class Run:
    argv: list[str]
    #: False: a failure is expected at times (stopping a service that is not loaded).
    check: bool = True


Step = WriteFile | MakeDir | RemoveFile | Run


def detect_manager(platform: str = sys.platform) -> Manager:
    if platform == "darwin":
        return "launchd"
    if platform.startswith("linux"):
        return "systemd"
    raise ServiceError(f"no supported service manager on {platform}: run `convergio daemon run`")


def service_file(manager: Manager, scope: Scope, env: dict[str, str], user_home: str) -> Path:
    if manager == "systemd":
        if scope == "system":
            return Path("/etc/systemd/system") / UNIT_NAME
        config = env.get("XDG_CONFIG_HOME") or f"{user_home}/.config"
        return Path(config) / "systemd" / "user" / UNIT_NAME
    if scope == "system":
        return Path("/Library/LaunchDaemons") / f"{LABEL}.plist"
    return Path(user_home) / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def _systemctl(scope: Scope, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if scope == "user" else []), *args]


def _launchd_domain(scope: Scope, uid: int) -> str:
    return "system" if scope == "system" else f"gui/{uid}"


def install_plan(
    manager: Manager, scope: Scope, inst: Installation, env: dict[str, str], uid: int
) -> list[Step]:
    target = service_file(manager, scope, env, inst.user_home)
    if manager == "systemd":
        steps: list[Step] = [
            MakeDir(target.parent),
            WriteFile(target, units.systemd_unit(scope, inst).encode()),
        ]
        if scope == "system":
            sysusers = Path("/etc/sysusers.d/convergio.conf")
            steps += [
                MakeDir(sysusers.parent),
                WriteFile(sysusers, units.sysusers_conf().encode()),
                Run(["systemd-sysusers", str(sysusers)]),
            ]
        return [
            *steps,
            Run(_systemctl(scope, "daemon-reload")),
            Run(_systemctl(scope, "enable", UNIT_NAME)),
            # restart, not start: after an upgrade the running daemon picks up the new code.
            Run(_systemctl(scope, "restart", UNIT_NAME)),
        ]
    domain = _launchd_domain(scope, uid)
    log_dir = Path(units.launchd_log_path(scope, inst)).parent
    steps = [MakeDir(target.parent), MakeDir(log_dir)]
    if scope == "system":
        steps.append(MakeDir(Path(units.MACOS_SYSTEM_HOME), owner=units.MACOS_SYSTEM_USER))
    return [
        *steps,
        WriteFile(target, units.launchd_plist(scope, inst)),
        Run(["launchctl", "bootout", f"{domain}/{LABEL}"], check=False),
        Run(["launchctl", "enable", f"{domain}/{LABEL}"]),
        Run(["launchctl", "bootstrap", domain, str(target)]),
    ]


def uninstall_plan(
    manager: Manager, scope: Scope, inst: Installation, env: dict[str, str], uid: int
) -> list[Step]:
    """Stop and remove the service; configuration and data stay (docs/operations.md)."""
    target = service_file(manager, scope, env, inst.user_home)
    if manager == "systemd":
        return [
            Run(_systemctl(scope, "disable", "--now", UNIT_NAME), check=False),
            RemoveFile(target),
            Run(_systemctl(scope, "daemon-reload")),
        ]
    domain = _launchd_domain(scope, uid)
    return [Run(["launchctl", "bootout", f"{domain}/{LABEL}"], check=False), RemoveFile(target)]


def status_argv(manager: Manager, scope: Scope, uid: int) -> list[str]:
    if manager == "systemd":
        return _systemctl(scope, "status", "--no-pager", UNIT_NAME)
    return ["launchctl", "print", f"{_launchd_domain(scope, uid)}/{LABEL}"]


def show_argv(scope: Scope) -> list[str]:
    """Machine-readable state from systemd (``KEY=VALUE`` lines)."""
    props = "LoadState,ActiveState,SubState,MainPID,StatusText,UnitFileState,NRestarts"
    return _systemctl(scope, "show", f"--property={props}", UNIT_NAME)


def logs_argv(
    manager: Manager, scope: Scope, inst: Installation, lines: int, follow: bool
) -> list[str]:
    if manager == "systemd":
        scope_args = ["--user-unit", UNIT_NAME] if scope == "user" else ["--unit", UNIT_NAME]
        return [
            "journalctl",
            *scope_args,
            "--no-pager",
            "-n",
            str(lines),
            *(["-f"] if follow else []),
        ]
    return [
        "tail",
        "-n",
        str(lines),
        *(["-F"] if follow else []),
        units.launchd_log_path(scope, inst),
    ]


# --------------------------------------------------------------------------- doing


def describe(steps: list[Step]) -> str:
    """What a plan would do, files shown in full (the ``--dry-run`` output)."""
    out: list[str] = []
    for step in steps:
        if isinstance(step, WriteFile):
            out.append(f"# write {step.path} (mode {step.mode:o}):")
            out.append(step.content.decode().rstrip("\n"))
        elif isinstance(step, MakeDir):
            owner = f" owned by {step.owner}" if step.owner else ""
            out.append(f"# mkdir -p {step.path}{owner}")
        elif isinstance(step, RemoveFile):
            out.append(f"# remove {step.path}")
        else:
            out.append("# run: " + " ".join(step.argv) + ("" if step.check else "  (may fail)"))
    return "\n".join(out) + "\n"


def execute(steps: list[Step], echo: bool = True) -> None:
    """Carry out a plan; stop at the first failing checked command."""
    for step in steps:
        if isinstance(step, WriteFile):
            tmp = step.path.with_name(step.path.name + ".tmp")
            tmp.write_bytes(step.content)
            os.chmod(tmp, step.mode)
            os.replace(tmp, step.path)
            _say(echo, f"wrote {step.path}")
        elif isinstance(step, MakeDir):
            step.path.mkdir(parents=True, exist_ok=True)
            if step.owner is not None:
                import shutil

                shutil.chown(step.path, step.owner, step.owner)
                os.chmod(step.path, 0o700)
        elif isinstance(step, RemoveFile):
            try:
                step.path.unlink()
                _say(echo, f"removed {step.path}")
            except FileNotFoundError:
                _say(echo, f"{step.path} was not there")
        else:
            _say(echo, "$ " + " ".join(step.argv))
            try:
                code = subprocess.run(step.argv, check=False).returncode
            except FileNotFoundError:
                raise ServiceError(f"{step.argv[0]} is not installed") from None
            if code != 0 and step.check:
                raise ServiceError(f"`{' '.join(step.argv)}` failed with exit code {code}")


def check_privileges(scope: Scope, manager: Manager) -> None:
    """A system service needs root; its account must exist on macOS (systemd makes it)."""
    if scope == "system" and os.geteuid() != 0:
        raise ServiceError("a system service needs root: run it with sudo")
    if scope == "user" and os.geteuid() == 0 and manager == "systemd":
        raise ServiceError("as root, install the system service: --system")
    if scope == "system" and manager == "launchd":
        import pwd

        try:
            pwd.getpwnam(units.MACOS_SYSTEM_USER)
        except KeyError:
            raise ServiceError(
                f"create the account {units.MACOS_SYSTEM_USER} first (docs/operations.md)"
            ) from None


def _say(echo: bool, text: str) -> None:
    if echo:
        print(text)
