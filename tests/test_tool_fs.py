"""The built-in tools' behaviour (in process), the registry, and the shell guard."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest

from convergiod.actors.tool.base import ToolContext, ToolOutput
from convergiod.actors.tool.messages import ListTools, RegisterTool, UnregisterOwner
from convergiod.actors.tool.tools.fs_read import glob_regex
from convergiod.actors.tool.tools.guard import destructive, scrubbed_env
from convergiod.actors.tool.tools.web import host_allowed, html_to_text
from convergiod.errors import OpError
from tests.test_tool_attacks import World, tool_actor


@pytest.fixture
async def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = World(tmp_path)
    async with tool_actor(w):
        yield w


async def test_read_line_ranges_caps_and_binary(world: World) -> None:
    assert (await world.run("fs.read", path="a.txt")).content == "one\ntwo\nthree\n"
    part = await world.run("fs.read", path="a.txt", start_line=2, end_line=2)
    assert part.content == "two\n"
    capped = await world.run("fs.read", path="a.txt", max_bytes=5)
    assert capped.content == "one\nt" and capped.truncated
    (world.ws / "bin").write_bytes(b"\x7fELF\x00\x01")
    out = await world.run("fs.read", path="bin")
    assert out.data["binary"] and "binary" in out.content
    await world.fails("bad_request", "fs.read", path=".")
    await world.fails("not_found", "fs.read", path="missing.txt")


async def test_write_is_atomic_keeps_mode_and_makes_parents(world: World) -> None:
    target = world.ws / "run.sh"
    target.write_text("old")
    target.chmod(0o755)
    await world.run("fs.write", path="run.sh", content="new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    await world.run("fs.write", path="deep/er/f.txt", content="x")
    assert (world.ws / "deep/er/f.txt").read_text() == "x"
    assert not [p for p in world.ws.rglob(".cvg-*")]  # no temporary files left
    await world.fails("bad_request", "fs.write", path="deep", content="x")


async def test_edit_must_match_exactly_once_and_keeps_a_backup(world: World) -> None:
    (world.ws / "e.txt").write_text("a b a")
    assert "occurs 2 times" in await world.fails(
        "bad_request", "fs.edit", path="e.txt", old="a", new="c"
    )
    assert "does not occur" in await world.fails(
        "bad_request", "fs.edit", path="e.txt", old="z", new="c"
    )
    out = await world.run("fs.edit", path="e.txt", old="b", new="B")
    assert (world.ws / "e.txt").read_text() == "a B a"
    backup = world.data / "trash" / "t" / out.data["backup"] / "item"
    assert backup.read_text() == "a b a"


async def test_delete_moves_to_the_trash_and_refuses_the_workspace(world: World) -> None:
    (world.ws / "d").mkdir()
    (world.ws / "d" / "f").write_text("f")
    await world.fails("bad_request", "fs.delete", path="d")
    out = await world.run("fs.delete", path="d", recursive=True)
    assert (world.data / "trash" / "t" / out.data["trash_id"] / "item" / "f").read_text() == "f"
    await world.fails("sandbox_denied", "fs.delete", path=".")


async def test_list_glob_and_grep(world: World) -> None:
    (world.ws / "src" / "pkg").mkdir(parents=True)
    (world.ws / "src" / "pkg" / "m.py").write_text("def f():\n    return 42\n")
    (world.ws / "src" / "top.py").write_text("x = 1\n")
    (world.ws / ".hidden").write_text("h")
    listed = await world.run("fs.list")
    assert listed.content.splitlines() == ["a.txt  14", "src/"]
    assert ".hidden" in (await world.run("fs.list", hidden=True)).content
    globbed = await world.run("fs.glob", pattern="src/**/*.py")
    assert globbed.data["matches"] == ["src/pkg/m.py", "src/top.py"]
    grepped = await world.run("fs.grep", pattern=r"return \d+", glob="**/*.py")
    assert grepped.content == "src/pkg/m.py:2:     return 42"
    one = await world.run("fs.grep", pattern="two", path="a.txt")
    assert one.content == "a.txt:2: two"
    limited = await world.run("fs.grep", pattern=".", limit=2)
    assert limited.truncated and limited.data["matches"] == 2
    await world.fails("bad_request", "fs.grep", pattern="(")


def test_glob_regex() -> None:
    assert glob_regex("*.py").match("a.py") and not glob_regex("*.py").match("d/a.py")
    assert glob_regex("**/*.py").match("a.py") and glob_regex("**/*.py").match("d/e/a.py")
    assert glob_regex("src/**").match("src/a/b")
    assert glob_regex("f[0-9].txt").match("f3.txt") and not glob_regex("f[!0-9].txt").match(
        "f3.txt"
    )


@pytest.mark.parametrize(
    "command",
    ["rm -rf build/", "rm -rf ./dist", "echo rm -rf is dangerous", "dd if=a of=b", "ls /etc"],
)
def test_guard_lets_ordinary_commands_through(command: str) -> None:
    assert destructive(command) is None


def test_scrubbed_env_drops_secrets_and_keeps_the_rest() -> None:
    env = scrubbed_env(
        {"PATH": "/bin", "PWD": "/w", "AWS_SECRET_ACCESS_KEY": "s", "X_TOKEN": "t",
         "CONVERGIO_HOME": "/h", "MY_VAR": "v", "NAMED": "n"},
        remove={"NAMED"},
        extra={"ADDED": "a"},
    )  # fmt: skip
    assert env == {"PATH": "/bin", "PWD": "/w", "MY_VAR": "v", "ADDED": "a"}


def test_web_helpers() -> None:
    assert host_allowed("docs.python.org", ["*.python.org"])
    assert not host_allowed("python.org.evil.com", ["*.python.org"])
    assert host_allowed("anything", ["*"]) and not host_allowed("a.com", [])
    assert html_to_text("<ul><li>a</li><li>b</li></ul><style>x</style>") == "- a\n- b"


class EchoArgs(msgspec.Struct, forbid_unknown_fields=True):
    text: str


class Echo:
    name = "plugin.echo"
    description = "echo"
    args_type: type[msgspec.Struct] = EchoArgs
    default_policy = "auto"

    async def run(self, ctx: ToolContext, args: Any) -> ToolOutput:
        return ToolOutput(content=args.text)


async def test_registered_tools_run_like_builtins_until_their_owner_unregisters(
    world: World,
) -> None:
    assert world.ref is not None
    await world.ref.ask(RegisterTool(tool=Echo(), owner="plugin:echo"))
    assert (await world.run("plugin.echo", text="hi")).content == "hi"
    infos = await world.ref.ask(ListTools(tenant="t"))
    assert [i.owner for i in infos if i.name == "plugin.echo"] == ["plugin:echo"]
    with pytest.raises(OpError) as info:
        await world.ref.ask(RegisterTool(tool=Echo(), owner="plugin:other"))
    assert info.value.code == "bad_request"
    assert await world.ref.ask(UnregisterOwner(owner="plugin:echo")) == 1
    await world.fails("not_found", "plugin.echo", text="hi")


def test_env_of_the_test_process_is_untouched() -> None:
    assert "PATH" in os.environ


async def test_registrations_survive_a_restart_of_the_actor(tmp_path: Path) -> None:
    from convergiod.actors.tool.actor import ToolActor, ToolState
    from convergiod.config import Config
    from convergiod.runtime import ChildSpec, SupervisorSpec, open_actor_system

    async def ask(name: str, msg: Any, timeout: float) -> Any:
        raise LookupError(name)

    state = ToolState.create(Config(), data_dir=tmp_path, ask=ask)
    spec = SupervisorSpec(
        name="root", children=[ChildSpec(name="tool", start=lambda: ToolActor(state))]
    )
    async with open_actor_system(spec) as system:
        await system.ref("tool").ask(RegisterTool(tool=Echo(), owner="plugin:echo"))
        await system.restart("tool")
        names = [i.name for i in await system.ref("tool").ask(ListTools(tenant="t"))]
    assert "plugin.echo" in names
