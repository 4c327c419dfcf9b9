"""The attack suite: hostile tool arguments against the real tool actor (in process, no
daemon). Each case is refused or contained with a clear code, and nothing is written outside
the sandbox roots."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from convergiod.actors.tool.actor import ToolActor, ToolState
from convergiod.actors.tool.messages import CancelTool, RunTool
from convergiod.actors.tool.sandbox import Sandbox
from convergiod.config import parse
from convergiod.errors import OpError
from convergiod.runtime import ActorNotFound, ActorRef, ChildSpec, SupervisorSpec, open_actor_system

SECRET = "top secret outside the sandbox"


class World:
    """A workspace, a directory outside it with a secret, and the tool actor."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ws = tmp / "ws"
        self.outside = tmp / "outside"
        self.data = tmp / "data"
        for d in (self.ws, self.outside, self.data):
            d.mkdir()
        (self.outside / "secret.txt").write_text(SECRET)
        (self.ws / "a.txt").write_text("one\ntwo\nthree\n")
        self.ref: ActorRef | None = None

    def outside_snapshot(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.outside)): p.read_bytes()
            for p in sorted(self.outside.rglob("*"))
            if p.is_file()
        }

    async def run(self, name: str, workspace: Path | None = None, **args: Any) -> Any:
        assert self.ref is not None
        return await self.ref.ask(
            RunTool(
                tenant="t",
                name=name,
                args=args,
                workspace=str(workspace or self.ws),
                request_id=1,
            ),
            timeout=30,
        )

    async def fails(self, code: str, name: str, **args: Any) -> str:
        with pytest.raises(OpError) as info:
            await self.run(name, **args)
        assert info.value.code == code, info.value.message
        return info.value.message


async def _no_actor(name: str, msg: Any, timeout: float) -> Any:
    raise ActorNotFound(name)


@asynccontextmanager
async def tool_actor(world: World, config: str = "", shell: str = "") -> AsyncIterator[ActorRef]:
    base = f'[tools.policy]\n"*" = "auto"\n[tools.shell]\nmax_processes = 40\n{shell}\n'
    cfg = parse(base + config)
    state = ToolState.create(cfg, data_dir=world.data, own_dirs=(world.data,), ask=_no_actor)
    spec = SupervisorSpec(
        name="root", children=[ChildSpec(name="tool", start=lambda: ToolActor(state))]
    )
    async with open_actor_system(spec) as system:
        world.ref = system.ref("tool")
        yield world.ref


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path)
    async with tool_actor(w):
        yield w


@pytest.fixture
async def wide(tmp_path: Path) -> AsyncIterator[World]:
    """A world whose configured roots include ``/``: too wide on purpose."""
    w = World(tmp_path)
    async with tool_actor(w, '[tools]\nroots = ["/"]\n'):
        yield w


# ----------------------------------------------------------------------------- paths


async def test_dotdot_traversal_is_refused(world: World) -> None:
    before = world.outside_snapshot()
    await world.fails("sandbox_denied", "fs.read", path="../outside/secret.txt")
    await world.fails("sandbox_denied", "fs.read", path="sub/../../outside/secret.txt")
    await world.fails("sandbox_denied", "fs.write", path="../outside/new.txt", content="x")
    await world.fails("sandbox_denied", "fs.delete", path="../outside/secret.txt")
    await world.fails("sandbox_denied", "fs.list", path="..")
    assert world.outside_snapshot() == before


async def test_absolute_path_outside_the_roots_is_refused(world: World) -> None:
    before = world.outside_snapshot()
    secret = str(world.outside / "secret.txt")
    await world.fails("sandbox_denied", "fs.read", path=secret)
    await world.fails("sandbox_denied", "fs.write", path=str(world.outside / "n.txt"), content="x")
    await world.fails("sandbox_denied", "fs.edit", path=secret, old="top", new="bottom")
    await world.fails("sandbox_denied", "fs.grep", pattern="secret", path=str(world.outside))
    assert world.outside_snapshot() == before


async def test_symlink_to_a_file_outside_is_refused(world: World) -> None:
    before = world.outside_snapshot()
    (world.ws / "link").symlink_to(world.outside / "secret.txt")
    await world.fails("sandbox_denied", "fs.read", path="link")
    await world.fails("sandbox_denied", "fs.write", path="link", content="pwned")
    await world.fails("sandbox_denied", "fs.edit", path="link", old="top", new="x")
    # Deleting the link removes the link itself, never its target.
    await world.run("fs.delete", path="link")
    assert not (world.ws / "link").is_symlink()
    assert world.outside_snapshot() == before


async def test_symlink_to_a_directory_outside_is_refused(world: World) -> None:
    before = world.outside_snapshot()
    (world.ws / "dir").symlink_to(world.outside)
    await world.fails("sandbox_denied", "fs.read", path="dir/secret.txt")
    await world.fails("sandbox_denied", "fs.write", path="dir/new.txt", content="x")
    await world.fails("sandbox_denied", "fs.list", path="dir")
    await world.fails("sandbox_denied", "shell.exec", command="cat secret.txt", cwd="dir")
    # Walks do not follow it either.
    globbed = await world.run("fs.glob", pattern="**/*.txt")
    assert "secret" not in globbed.content
    grepped = await world.run("fs.grep", pattern="top secret")
    assert grepped.content == "(no matches)"
    assert world.outside_snapshot() == before


async def test_symlink_inside_the_workspace_is_followed(world: World) -> None:
    (world.ws / "alias").symlink_to(world.ws / "a.txt")
    assert (await world.run("fs.read", path="alias")).content.startswith("one")


async def test_file_swapped_for_a_symlink_between_check_and_use_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = world.ws / "victim.txt"
    victim.write_text("mine")
    real = Sandbox.resolve

    def racing(self: Sandbox, raw: str, **kw: Any) -> Any:
        target = real(self, raw, **kw)
        if victim.exists() and not victim.is_symlink():
            victim.unlink()
            victim.symlink_to(world.outside / "secret.txt")
        return target

    monkeypatch.setattr(Sandbox, "resolve", racing)
    message = await world.fails("sandbox_denied", "fs.read", path="victim.txt")
    assert "symlink" in message


async def test_directory_swapped_for_a_symlink_between_check_and_use_stays_inside(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = world.outside_snapshot()
    (world.ws / "sub").mkdir()
    real = Sandbox.resolve

    def racing(self: Sandbox, raw: str, **kw: Any) -> Any:
        target = real(self, raw, **kw)
        if not (world.ws / "sub").is_symlink():
            (world.ws / "sub").rename(world.ws / "sub.orig")
            (world.ws / "sub").symlink_to(world.outside)
        return target

    monkeypatch.setattr(Sandbox, "resolve", racing)
    await world.run("fs.write", path="sub/new.txt", content="written")
    # The write went through the descriptor of the real directory, not through the link.
    assert (world.ws / "sub.orig" / "new.txt").read_text() == "written"
    assert world.outside_snapshot() == before


async def test_a_symlink_flipping_during_many_writes_never_leads_outside(world: World) -> None:
    before = world.outside_snapshot()
    flip = world.ws / "flip"
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            try:
                flip.mkdir()
                flip.rmdir()
                flip.symlink_to(world.outside)
                flip.unlink()
            except OSError:
                pass

    thread = threading.Thread(target=flipper)
    thread.start()
    codes: set[str] = set()
    try:
        for i in range(200):
            try:
                await world.run("fs.write", path=f"flip/f{i}.txt", content="x", create_dirs=False)
                codes.add("ok")
            except OpError as exc:
                codes.add(exc.code)
    finally:
        stop.set()
        thread.join()
    assert codes <= {"ok", "sandbox_denied", "not_found", "bad_request"}
    assert world.outside_snapshot() == before


async def test_system_and_credential_paths_are_refused_inside_a_too_wide_root(
    wide: World,
) -> None:
    await wide.fails("sandbox_denied", "fs.read", path="/etc/passwd")
    await wide.fails("sandbox_denied", "fs.list", path="/etc")
    await wide.fails("sandbox_denied", "fs.write", path="/etc/cvg-attack", content="x")
    assert not _exists("/etc/cvg-attack")
    await wide.fails("sandbox_denied", "fs.read", path="~/.ssh/id_ed25519")
    await wide.fails("sandbox_denied", "fs.read", path=_home("~/.aws/credentials"))
    await wide.fails("sandbox_denied", "fs.read", path="/proc/self/environ")
    await wide.fails("sandbox_denied", "fs.write", path=str(wide.data / "x"), content="x")
    # A symlink from inside the root to /etc is refused as well.
    (wide.ws / "etc").symlink_to("/etc")
    await wide.fails("sandbox_denied", "fs.read", path="etc/hostname")
    # ...and a workspace inside a protected path is refused as a whole.
    with pytest.raises(OpError) as info:
        await wide.run("fs.list", workspace=Path("/etc"))
    assert info.value.code == "sandbox_denied"
    # The rest of the wide root works.
    assert (await wide.run("fs.read", path=str(wide.outside / "secret.txt"))).content == SECRET


async def test_shell_metacharacters_in_arguments_are_literal(world: World) -> None:
    await world.fails("not_found", "fs.read", path="a.txt; touch pwned")
    await world.run("fs.write", path="$(touch pwned2)", content="x")
    out = await world.run("shell.exec", argv=["echo", "$(touch pwned3)", "`touch pwned4`", ";"])
    assert "$(touch pwned3) `touch pwned4` ;" in out.content
    names = {p.name for p in world.ws.iterdir()}
    assert not names & {"pwned", "pwned2", "pwned3", "pwned4"}
    assert "$(touch pwned2)" in names  # a file with that literal name, inside the workspace


# ----------------------------------------------------------------------------- shell


async def test_shell_cannot_read_api_keys_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-1")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret-2")
    monkeypatch.setenv("DB_PASSWORD", "secret-3")
    monkeypatch.setenv("PLAIN_LOOKING", "secret-4")
    monkeypatch.setenv("HARMLESS_SETTING", "visible")
    w = World(tmp_path)
    async with tool_actor(w, shell='scrub_env = ["PLAIN_LOOKING"]'):
        out = await w.run("shell.exec", command="env; cat /proc/self/environ | tr '\\0' '\\n'")
    assert "visible" in out.content
    for n in range(1, 5):
        assert f"secret-{n}" not in out.content


def _procs_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    with open(f"/proc/{pid}/stat", "rb") as s:
                        if s.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                            found.append(int(pid))
        except OSError:
            continue
    return found


async def _gone(marker: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while _procs_with(marker):
        assert time.monotonic() < deadline, f"processes of {marker} still alive"
        await trio.sleep(0.05)


async def _started(marker: str, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not _procs_with(marker):
        assert time.monotonic() < deadline, f"no process of {marker} started"
        await trio.sleep(0.02)


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _home(path: str) -> str:
    return os.path.expanduser(path)


async def test_fork_bomb_is_refused_or_contained(world: World) -> None:
    await world.fails("sandbox_denied", "shell.exec", command=":(){ :|:& };:")
    marker = "bomb" + secrets.token_hex(4)
    bomb = f"{marker}() {{ {marker} & {marker} & wait; }}; {marker}"
    start = time.monotonic()
    message = await world.fails("sandbox_denied", "shell.exec", command=bomb, timeout=20)
    assert "max_processes" in message
    assert time.monotonic() - start < 15
    await _gone(marker)


async def test_endless_output_is_capped_and_stopped(tmp_path: Path) -> None:
    w = World(tmp_path)
    async with tool_actor(w, shell="max_output_bytes = 10000"):
        start = time.monotonic()
        out = await w.run("shell.exec", command="yes", timeout=20)
    assert out.truncated
    assert time.monotonic() - start < 10
    assert len(out.content.encode()) < 10_200


async def test_a_command_that_never_exits_times_out_and_is_killed(world: World) -> None:
    marker = "never" + secrets.token_hex(4)
    message = await world.fails(
        "timeout", "shell.exec", command=f"echo started; sleep 1000; echo {marker}", timeout=0.5
    )
    assert "started" in message
    await _gone(marker)


async def test_background_processes_do_not_outlive_the_command(world: World) -> None:
    marker = "bg" + secrets.token_hex(4)
    out = await world.run("shell.exec", command=f"(sleep 1000; echo {marker}) & echo done")
    assert "done" in out.content
    await _gone(marker)


async def test_cancel_kills_the_running_command(world: World) -> None:
    marker = "cancel" + secrets.token_hex(4)
    assert world.ref is not None
    errors: list[BaseException] = []

    async def call() -> None:
        try:
            await world.run("shell.exec", command=f"sleep 1000; echo {marker}", timeout=60)
        except OpError as exc:
            errors.append(exc)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await _started(marker)
            world.ref.send(CancelTool(tenant="t", request_id=1))
    assert [getattr(e, "code", None) for e in errors] == ["cancelled"]
    await _gone(marker)


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf /",
        "rm -rf / --no-preserve-root",
        "rm -fr ~",
        "sudo rm -rf /*",
        "cd /tmp && rm -rf $HOME",
        "mkfs.ext4 /dev/sda1",
        "dd if=/dev/zero of=/dev/sda bs=1M",
        "cat x > /dev/nvme0n1",
        "kill -9 -1",
        "echo ok; shutdown -h now",
        "chmod -R 777 /",
    ],
)
async def test_destructive_commands_are_refused(world: World, command: str) -> None:
    message = await world.fails("sandbox_denied", "shell.exec", command=command)
    assert message.startswith("refused")


# ----------------------------------------------------------------------------- web


def _serve(handler: Callable[[Any], None]) -> tuple[Any, int]:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            handler(self)

        def log_message(self, *a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


async def test_web_redirect_to_a_host_outside_the_allow_list_is_refused(tmp_path: Path) -> None:
    hits: list[str] = []

    def handler(req: Any) -> None:
        hits.append(req.path)
        if req.path == "/go":
            req.send_response(302)
            req.send_header("Location", f"http://localhost:{port}/leak")
            req.end_headers()
        elif req.path == "/hop":
            req.send_response(301)
            req.send_header("Location", "/page")
            req.end_headers()
        else:
            body = b"<html><head><title>T</title><script>x()</script></head><body><p>Hi</p></body>"
            req.send_response(200)
            req.send_header("Content-Type", "text/html; charset=utf-8")
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body)

    server, port = _serve(handler)
    w = World(tmp_path)
    try:
        async with tool_actor(w, '[tools.web]\nallow_hosts = ["127.0.0.1"]\n'):
            message = await w.fails(
                "sandbox_denied", "web.fetch", url=f"http://127.0.0.1:{port}/go"
            )
            assert "redirect" in message and "localhost" in message
            assert "/leak" not in hits
            await w.fails("sandbox_denied", "web.fetch", url=f"http://localhost:{port}/page")
            await w.fails("sandbox_denied", "web.fetch", url="file:///etc/passwd")
            page = await w.run("web.fetch", url=f"http://127.0.0.1:{port}/hop")
            assert page.content == "T\n\nHi"
    finally:
        server.shutdown()


# ----------------------------------------------------------------------------- arguments


async def test_arguments_that_do_not_fit_the_schema_name_the_field(world: World) -> None:
    assert "`path`" in await world.fails("bad_request", "fs.read")
    assert "$.path" in await world.fails("bad_request", "fs.read", path=7)
    assert "`nope`" in await world.fails("bad_request", "fs.read", path="a.txt", nope=1)
    assert "start_line" in await world.fails("bad_request", "fs.read", path="a.txt", start_line=0)
    await world.fails("not_found", "no.such.tool")


async def test_web_fetch_caps_the_body_and_times_out(tmp_path: Path) -> None:
    release = threading.Event()

    def handler(req: Any) -> None:
        if req.path == "/slow":
            release.wait(10)
            return
        req.send_response(200)
        req.send_header("Content-Type", "text/plain")
        req.end_headers()
        req.wfile.write(b"x" * 50_000)

    server, port = _serve(handler)
    w = World(tmp_path)
    config = '[tools.web]\nallow_hosts = ["127.0.0.1"]\nmax_bytes = 2000\ntimeout = 0.5\n'
    try:
        async with tool_actor(w, config):
            big = await w.run("web.fetch", url=f"http://127.0.0.1:{port}/big")
            assert big.truncated and len(big.content) == 2000
            await w.fails("timeout", "web.fetch", url=f"http://127.0.0.1:{port}/slow")
    finally:
        release.set()
        server.shutdown()
