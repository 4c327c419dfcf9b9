"""Rendered systemd units and launchd property lists, and the install plans around them."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from convergiod.service import install, units
from convergiod.service.units import REFERENCE, Installation

ROOT = Path(__file__).resolve().parent.parent
HERE = Installation.current(dict(os.environ))
HAS_ANALYZE = shutil.which("systemd-analyze") is not None


def unit_keys(text: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def verify(tmp_path: Path, name: str, text: str, *, user: bool) -> None:
    path = tmp_path / name
    path.write_text(text)
    runtime = tmp_path / "xdg-run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    proc = subprocess.run(
        ["systemd-analyze", *(["--user"] if user else []), "verify", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
    )
    # verify exits 0 even for unknown keys and bad values; it only warns, naming the file.
    warnings = [line for line in proc.stderr.splitlines() if name in line]
    assert proc.returncode == 0 and not warnings, proc.stderr


@pytest.mark.skipif(not HAS_ANALYZE, reason="systemd-analyze is not installed on this machine")
@pytest.mark.parametrize("scope", ["user", "system"])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path, scope: units.Scope) -> None:
    verify(tmp_path, "convergiod.service", units.systemd_unit(scope, HERE), user=scope == "user")


@pytest.mark.skipif(not HAS_ANALYZE, reason="systemd-analyze is not installed on this machine")
def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        verify(
            tmp_path, "broken.service", "[Service]\nExecStart=/bin/true\nNoSuchKey=1\n", user=False
        )


@pytest.mark.parametrize("scope", ["user", "system"])
def test_units_are_notify_with_watchdog_reload_and_restart(scope: units.Scope) -> None:
    keys = unit_keys(units.systemd_unit(scope, HERE))
    assert keys["Type"] == ["notify"] and keys["NotifyAccess"] == ["main"]
    assert keys["ExecStart"] == [f"{sys.executable} -m convergiod daemon run"]
    assert keys["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert keys["Restart"] == ["on-failure"]
    assert keys["WatchdogSec"] == [str(units.WATCHDOG_SEC)]
    assert keys["NoNewPrivileges"] == ["yes"]
    assert "MemoryDenyWriteExecute" not in keys  # wasmtime's JIT needs executable pages


def test_system_unit_runs_as_its_own_user_with_hardening(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = unit_keys(units.systemd_unit("system", REFERENCE))
    for key, value in {
        "User": "convergio",
        "StateDirectory": "convergio",
        "RuntimeDirectory": "convergio",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter": "@system-service",
    }.items():
        assert keys[key] == [value], key
    env = dict(v.split("=", 1) for v in keys["Environment"])
    # paths.resolve() then puts config, data and sockets in the directories systemd made.
    from convergiod.paths import resolve

    monkeypatch.delenv("CONVERGIO_HOME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # platformdirs reads os.environ
    where = resolve()
    assert where.runtime_dir == Path("/run/convergio")
    assert where.data_dir == Path("/var/lib/convergio")
    assert where.config_dir == Path("/etc/convergio")


def test_system_unit_keeps_an_interpreter_under_home_readable() -> None:
    inst = Installation(python="/home/ann/venv/bin/python", user_home="/home/ann")
    assert unit_keys(units.systemd_unit("system", inst))["ProtectHome"] == ["read-only"]


def test_exec_lines_quote_spaces_and_escape_specifiers() -> None:
    inst = Installation(python="/opt/my apps/50%/python", user_home="/h", convergio_home="/c d")
    keys = unit_keys(units.systemd_unit("user", inst))
    assert keys["ExecStart"] == ['"/opt/my apps/50%%/python" -m convergiod daemon run']
    assert '"CONVERGIO_HOME=/c d"' in keys["Environment"]


@pytest.mark.parametrize("scope", ["user", "system"])
def test_plists_parse_and_hold_the_required_keys(scope: units.Scope) -> None:
    plist = plistlib.loads(units.launchd_plist(scope, HERE))
    assert plist["Label"] == units.LABEL
    assert plist["ProgramArguments"] == [sys.executable, "-m", "convergiod", "daemon", "run"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] == 10
    assert plist["StandardErrorPath"] == plist["StandardOutPath"]
    assert plist["StandardErrorPath"].endswith("Library/Logs/Convergio/convergiod.log")
    assert plist["EnvironmentVariables"]["PYTHONUNBUFFERED"] == "1"
    if scope == "system":
        assert plist["UserName"] == "_convergio"
        assert plist["EnvironmentVariables"]["CONVERGIO_HOME"] == units.MACOS_SYSTEM_HOME
        assert plist["StandardErrorPath"].startswith("/Library/Logs/")


def test_reference_files_in_the_repository_are_up_to_date() -> None:
    for rel, render in units.REFERENCE_FILES.items():
        assert (ROOT / rel).read_bytes() == render(), (
            f"{rel} is stale: run `python -m convergiod.service.units .`"
        )


def test_user_install_plan_writes_the_unit_then_enables_and_starts_it() -> None:
    env = {"XDG_CONFIG_HOME": "/cfg"}
    steps = install.install_plan("systemd", "user", HERE, env, 1000)
    writes = [s for s in steps if isinstance(s, install.WriteFile)]
    assert [w.path for w in writes] == [Path("/cfg/systemd/user/convergiod.service")]
    assert [s.argv for s in steps if isinstance(s, install.Run)] == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "convergiod.service"],
        ["systemctl", "--user", "restart", "convergiod.service"],
    ]


def test_system_install_plan_creates_the_account_with_sysusers() -> None:
    steps = install.install_plan("systemd", "system", HERE, {}, 0)
    paths = [s.path for s in steps if isinstance(s, install.WriteFile)]
    assert paths == [
        Path("/etc/systemd/system/convergiod.service"),
        Path("/etc/sysusers.d/convergio.conf"),
    ]
    runs = [s.argv for s in steps if isinstance(s, install.Run)]
    assert runs[0] == ["systemd-sysusers", "/etc/sysusers.d/convergio.conf"]
    assert ["systemctl", "enable", "convergiod.service"] in runs


def test_launchd_plans_bootstrap_into_the_right_domain() -> None:
    agent = install.install_plan("launchd", "user", HERE, {}, 501)
    runs = [s.argv for s in agent if isinstance(s, install.Run)]
    plist = Path(HERE.user_home) / "Library/LaunchAgents/io.convergio.convergiod.plist"
    assert runs[-1] == ["launchctl", "bootstrap", "gui/501", str(plist)]
    daemon = install.install_plan("launchd", "system", HERE, {}, 0)
    runs = [s.argv for s in daemon if isinstance(s, install.Run)]
    plist = Path("/Library/LaunchDaemons/io.convergio.convergiod.plist")
    assert runs[-1] == ["launchctl", "bootstrap", "system", str(plist)]
    gone = install.uninstall_plan("launchd", "user", HERE, {}, 501)
    assert [type(s).__name__ for s in gone] == ["Run", "RemoveFile"]


def test_logs_come_from_the_journal_or_the_log_file() -> None:
    assert install.logs_argv("systemd", "user", HERE, 5, True) == [
        "journalctl", "--user-unit", "convergiod.service", "--no-pager", "-n", "5", "-f",
    ]  # fmt: skip
    tail = install.logs_argv("launchd", "user", HERE, 5, False)
    assert tail[:3] == ["tail", "-n", "5"] and tail[-1].endswith("convergiod.log")


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return subprocess.run(
        [sys.executable, "-m", "convergiod", *args],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.mark.skipif(sys.platform != "linux", reason="the dry-run below renders a systemd unit")
def test_install_dry_run_prints_this_installation_and_changes_nothing(tmp_path: Path) -> None:
    result = run_cli("service", "install", "--dry-run", home=tmp_path)
    assert result.returncode == 0, result.stderr
    unit = tmp_path / ".config/systemd/user/convergiod.service"
    assert f"# write {unit}" in result.stdout
    assert f"ExecStart={sys.executable} -m convergiod daemon run" in result.stdout
    assert "# run: systemctl --user enable convergiod.service" in result.stdout
    assert not unit.exists()
    system = run_cli("service", "install", "--system", "--dry-run", "--json", home=tmp_path)
    assert system.returncode == 0, system.stderr
    import json

    plan = json.loads(system.stdout)
    assert plan["dry_run"] is True and plan["scope"] == "system"
    assert plan["steps"][1]["write"] == "/etc/systemd/system/convergiod.service"
    uninstall = run_cli("service", "uninstall", "--dry-run", home=tmp_path)
    assert f"# remove {unit}" in uninstall.stdout


@pytest.mark.skipif(sys.platform != "linux", reason="checks the systemd unit path")
def test_service_status_says_not_installed(tmp_path: Path) -> None:
    result = run_cli("service", "status", "--json", home=tmp_path)
    assert result.returncode == 3
    assert '"installed":false' in result.stdout
