"""The tool actor through a real daemon: approval round trips with the real client (once,
always, deny, timeout), the CLI (`tool list|run`, `trash list|restore`), cancellation."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from convergio_client import RemoteError
from convergio_client.trio_client import AsyncClient, open_client
from convergiod import protocol as p
from tests.conftest import DaemonProcess


@pytest.fixture
def ws(home: Path) -> Path:
    d = home / "ws"
    d.mkdir()
    (d / "a.txt").write_text("alpha\nbeta\n")
    return d


async def _run(
    client: AsyncClient,
    ws: Path,
    name: str,
    args: dict[str, object],
    answer: p.ApprovalDecision | None,
) -> tuple[list[p.ApprovalRequest], p.ToolOutputReply]:
    """Run a tool; answer each approval request with ``answer`` (None: never answer)."""
    asked: list[p.ApprovalRequest] = []
    async with client.stream(
        p.ToolRun(name=name, args=args, workspace=str(ws)), timeout=30
    ) as events:
        async for event in events:
            if isinstance(event, p.ApprovalRequest):
                asked.append(event)
                if answer is not None:
                    await events.answer(event.approval, answer)
    assert isinstance(events.result, p.ToolOutputReply)
    return asked, events.result


async def test_approve_once_runs_the_call_and_asks_again_next_time(
    daemon: DaemonProcess, ws: Path
) -> None:
    async with open_client(paths=daemon.paths) as client:
        for n in range(2):
            asked, out = await _run(
                client, ws, "fs.write", {"path": "f.txt", "content": f"v{n}"}, "once"
            )
            assert len(asked) == 1
            assert asked[0].tool == "fs.write"
            assert asked[0].summary == "write 2 bytes to f.txt"
            assert asked[0].args["content"] == f"v{n}"
            assert "f.txt" in out.content
    assert (ws / "f.txt").read_text() == "v1"


async def test_approve_always_is_remembered_across_a_daemon_restart(
    daemon_factory: Callable[..., DaemonProcess], ws: Path
) -> None:
    d = daemon_factory()
    args = {"command": "echo hello", "cwd": "."}
    async with open_client(paths=d.paths) as client:
        asked, out = await _run(client, ws, "shell.exec", args, "always")
        assert len(asked) == 1 and "hello" in out.content
        asked, out = await _run(client, ws, "shell.exec", args, None)
        assert asked == [] and "hello" in out.content
        # Another command is another approval.
        with pytest.raises(RemoteError) as info:
            await _run(client, ws, "shell.exec", {"command": "echo other"}, "deny")
        assert info.value.code == "sandbox_denied"
    assert d.terminate() == 0
    d2 = daemon_factory()
    async with open_client(paths=d2.paths) as client:
        asked, out = await _run(client, ws, "shell.exec", args, None)
    assert asked == [] and "hello" in out.content


async def test_deny_refuses_the_call_and_nothing_is_written(
    daemon: DaemonProcess, ws: Path
) -> None:
    async with open_client(paths=daemon.paths) as client:
        with pytest.raises(RemoteError) as info:
            await _run(client, ws, "fs.write", {"path": "no.txt", "content": "x"}, "deny")
    assert info.value.code == "sandbox_denied"
    assert "not approved" in info.value.message
    assert not (ws / "no.txt").exists()


async def test_no_answer_before_the_timeout_means_deny(
    daemon_factory: Callable[..., DaemonProcess], ws: Path
) -> None:
    d = daemon_factory("[tools]\napproval_timeout = 0.5\n")
    start = time.monotonic()
    async with open_client(paths=d.paths) as client:
        with pytest.raises(RemoteError) as info:
            await _run(client, ws, "fs.write", {"path": "late.txt", "content": "x"}, None)
    assert info.value.code == "sandbox_denied"
    assert time.monotonic() - start < 10
    assert not (ws / "late.txt").exists()


async def test_policy_from_config_applies(
    daemon_factory: Callable[..., DaemonProcess], ws: Path
) -> None:
    d = daemon_factory('[tools.policy]\n"fs.write" = "auto"\n"fs.read" = "deny"\n')
    async with open_client(paths=d.paths) as client:
        asked, _ = await _run(client, ws, "fs.write", {"path": "auto.txt", "content": "x"}, None)
        assert asked == []
        with pytest.raises(RemoteError) as info:
            await _run(client, ws, "fs.read", {"path": "a.txt"}, None)
        assert info.value.code == "sandbox_denied"
        listed = await client.call(p.ToolList())
    policies = {t.name: t.policy for t in listed.tools}
    assert policies["fs.write"] == "auto" and policies["fs.read"] == "deny"
    assert policies["shell.exec"] == "ask" and policies["fs.grep"] == "auto"


async def test_cancelling_the_request_kills_the_running_command(
    daemon: DaemonProcess, ws: Path
) -> None:
    from tests.test_tool_attacks import _gone, _started

    marker = "cli" + secrets.token_hex(4)
    args = {"command": f"sleep 1000; echo {marker}"}
    async with open_client(paths=daemon.paths) as client:
        with trio.fail_after(20):
            async with client.stream(
                p.ToolRun(name="shell.exec", args=args, workspace=str(ws))
            ) as events:
                async for event in events:
                    assert isinstance(event, p.ApprovalRequest)
                    await events.answer(event.approval, "once")
                    await _started(marker)
                    break
    await _gone(marker)


# ----------------------------------------------------------------------------- CLI


def test_cli_tool_list_shows_every_builtin_with_schema(daemon: DaemonProcess) -> None:
    done = daemon.cli("tool", "list", "--json")
    assert done.returncode == 0, done.stderr
    tools = {t["name"]: t for t in json.loads(done.stdout)}
    assert set(tools) >= {
        "fs.read", "fs.write", "fs.edit", "fs.list", "fs.glob", "fs.grep", "fs.delete",
        "shell.exec", "web.fetch", "memory.remember", "memory.search",
    }  # fmt: skip
    assert tools["fs.read"]["schema"]["required"] == ["path"]
    assert "$defs" not in json.dumps(tools)
    text = daemon.cli("tool", "list").stdout
    assert "fs.read" in text and "ask" in text


def test_cli_tool_run_without_a_terminal_denies_and_yes_approves(
    daemon: DaemonProcess, ws: Path
) -> None:
    args = json.dumps({"path": "cli.txt", "content": "from the cli"})
    denied = daemon.cli("tool", "run", "fs.write", "--args", args, "--workspace", str(ws))
    assert denied.returncode == 1
    assert "sandbox_denied" in denied.stderr and "--yes" in denied.stderr
    assert not (ws / "cli.txt").exists()
    ok = daemon.cli("tool", "run", "fs.write", "--args", args, "--workspace", str(ws), "--yes")
    assert ok.returncode == 0, ok.stderr
    assert (ws / "cli.txt").read_text() == "from the cli"
    read = daemon.cli(
        "tool", "run", "fs.read", "--args", '{"path": "cli.txt"}', "--workspace", str(ws)
    )
    assert read.stdout == "from the cli\n"
    bad = daemon.cli("tool", "run", "fs.read", "--args", '{"path": 3}', "--workspace", str(ws))
    assert bad.returncode == 1 and "bad_request" in bad.stderr and "$.path" in bad.stderr


def test_deleted_and_edited_files_can_be_restored_from_the_trash(
    daemon: DaemonProcess, ws: Path
) -> None:
    def run(name: str, **args: object) -> str:
        done = daemon.cli(
            "tool", "run", name, "--args", json.dumps(args), "--workspace", str(ws), "--yes"
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("fs.edit", path="a.txt", old="beta", new="gamma")
    assert (ws / "a.txt").read_text() == "alpha\ngamma\n"
    (ws / "d").mkdir()
    (ws / "d" / "x.txt").write_text("x")
    run("fs.delete", path="d", recursive=True)
    assert not (ws / "d").exists()
    items = json.loads(daemon.cli("trash", "list", "--json").stdout)
    assert [(i["kind"], Path(i["path"]).name) for i in items] == [
        ("deleted", "d"),
        ("backup", "a.txt"),
    ]
    assert daemon.cli("trash", "restore", items[0]["id"]).returncode == 0
    assert (ws / "d" / "x.txt").read_text() == "x"
    refused = daemon.cli("trash", "restore", items[1]["id"])
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert daemon.cli("trash", "restore", items[1]["id"], "--force").returncode == 0
    assert (ws / "a.txt").read_text() == "alpha\nbeta\n"
    assert "a.txt" in daemon.cli("trash", "list").stdout  # the edited version, kept
