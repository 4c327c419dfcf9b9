"""`convergio actor kill` under each strategy restarts what OTP says, visible in status;
exceeding the intensity escalates to the parent supervisor."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import DaemonProcess


def restarts(d: DaemonProcess) -> dict[str, int]:
    result = d.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return {a["name"]: a["restarts"] for a in json.loads(result.stdout)["actors"]}


def wait_restarts(d: DaemonProcess, expected: dict[str, int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = {k: v for k, v in restarts(d).items() if k in expected}
        if got == expected or time.monotonic() > deadline:
            assert got == expected
            return
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("strategy", "victim", "expected"),
    [
        ("one_for_one", "health", {"events": 0, "health": 1, "system": 0}),
        ("one_for_all", "health", {"events": 1, "health": 1, "system": 1}),
        ("rest_for_one", "health", {"events": 0, "health": 1, "system": 1}),
        ("rest_for_one", "events", {"events": 1, "health": 1, "system": 1}),
    ],
)
def test_actor_kill_applies_the_supervisor_strategy(
    daemon_factory,
    strategy: str,
    victim: str,
    expected: dict[str, int],  # type: ignore[no-untyped-def]
) -> None:
    d: DaemonProcess = daemon_factory(f'[supervisor]\nstrategy = "{strategy}"\n')
    result = d.cli("actor", "kill", victim)
    assert result.returncode == 0, result.stderr
    wait_restarts(d, {**expected, "core": 0})
    assert d.cli("ping").returncode == 0


def test_exceeding_intensity_escalates_to_the_parent(daemon_factory) -> None:  # type: ignore[no-untyped-def]
    d: DaemonProcess = daemon_factory("[supervisor]\nintensity = 1\nperiod = 30\n")
    assert d.cli("actor", "kill", "health").returncode == 0
    wait_restarts(d, {"core": 0, "health": 1})
    assert d.cli("actor", "kill", "health").returncode == 0
    # The second crash within the period exceeds intensity 1: core terminates its children and
    # fails; root (one_for_one) restarts core, which starts fresh children.
    deadline = time.monotonic() + 5
    while restarts(d)["core"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert d.cli("ping").returncode == 0
    status = json.loads(d.cli("status", "--json").stdout)
    assert all(a["state"] == "running" for a in status["actors"])


def test_kill_unknown_actor_is_not_found(daemon: DaemonProcess) -> None:
    result = daemon.cli("actor", "kill", "nobody")
    assert result.returncode == 1
    assert "not_found" in result.stderr and "Traceback" not in result.stderr


def test_lifecycle_events_reach_subscribers(daemon: DaemonProcess) -> None:
    tail = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convergiod",
            "events",
            "--json",
            "--topic",
            "actor.health",
            "--timeout",
            "10",
            "--count",
            "2",
        ],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # let the SUB connect (PUB drops messages for absent subscribers)
    assert daemon.cli("actor", "kill", "health").returncode == 0
    out, err = tail.communicate(timeout=15)
    topics = [json.loads(line)["topic"] for line in out.splitlines()]
    assert "actor.health.crashed" in topics, (out, err)
