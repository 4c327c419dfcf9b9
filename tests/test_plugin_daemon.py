"""Plugins through a real daemon: the hostile suite (each a clean Failure with its code, the
daemon fine and the next call working), tools in the registry, the CLI, and process
isolation surviving a SIGKILLed worker."""

from __future__ import annotations

import json
import os
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from convergio_client import RemoteError
from convergio_client.trio_client import open_client
from convergiod import protocol as p
from tests.conftest import DaemonProcess
from tests.plugin_helpers import EXAMPLES, FIXTURES, FS_TOOLS, make_plugin


async def install(client: Any, path: Path, **kw: Any) -> p.PluginDetail:
    reply = await client.call(p.PluginInstall(path=str(path), **kw), timeout=60)
    assert isinstance(reply, p.PluginDetail)
    return reply


async def fails(client: Any, op: Any, code: str, *fragments: str) -> str:
    with pytest.raises(RemoteError) as info:
        await client.call(op, timeout=30)
    assert info.value.code == code, info.value.message
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value.message


async def still_fine(client: Any) -> None:
    out = await client.call(p.PluginCall(plugin="textkit", tool="word_count", args={"text": "a b"}))
    assert out.output["words"] == 2
    assert (await client.call(p.Status())).healthy


async def test_hostile_suite_fails_cleanly_and_the_next_call_works(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "note.txt").write_text("hello")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    fs_perm = {"dirs": [{"host": str(granted), "guest": "/data", "write": True}]}
    plugins = {
        "loop": make_plugin(tmp_path, "loop", FIXTURES / "loop.wasm", limits={"timeout_ms": 200}),
        "fuel": make_plugin(tmp_path, "fuel", FIXTURES / "loop.wasm", limits={"fuel": 2_000_000}),
        "bomb": make_plugin(tmp_path, "bomb", FIXTURES / "membomb.wasm", limits={"memory_mb": 8}),
        "recurse": make_plugin(tmp_path, "recurse", FIXTURES / "recurse.wasm"),
        "flood": make_plugin(tmp_path, "flood", FIXTURES / "flood.wasm"),
        "badjson": make_plugin(tmp_path, "badjson", FIXTURES / "badjson.wasm"),
        "quitter": make_plugin(tmp_path, "quitter", FIXTURES / "exit.wasm"),
        "probe": make_plugin(tmp_path, "probe", FIXTURES / "fsprobe.wasm", tools=FS_TOOLS),
        "rprobe": make_plugin(
            tmp_path, "rprobe", FIXTURES / "fsprobe.wasm", tools=FS_TOOLS, permissions=fs_perm
        ),
    }
    proc = psutil.Process(daemon.proc.pid)  # type: ignore[union-attr]
    async with open_client(paths=daemon.paths) as client:
        await install(client, EXAMPLES / "textkit")
        for name, path in plugins.items():
            # rprobe asks for write access; the user grants it read-only.
            grants = ["dir:/data:ro"] if name == "rprobe" else []
            await install(client, path, grants=grants)

        def run(plugin: str, tool: str = "run", **args: Any) -> p.PluginCall:
            return p.PluginCall(plugin=plugin, tool=tool, args=args)

        await fails(client, run("loop"), "timeout", "time limit of 200 ms")
        await still_fine(client)
        await fails(client, run("fuel"), "timeout", "fuel")
        await still_fine(client)
        await fails(client, run("bomb"), "sandbox_denied", "memory limit of 8 MiB")
        await still_fine(client)
        await fails(client, run("recurse"), "sandbox_denied", "stack")
        await still_fine(client)
        rss_before = proc.memory_info().rss
        await fails(client, run("flood"), "sandbox_denied", "stdout")
        assert proc.memory_info().rss - rss_before < 50 << 20
        await still_fine(client)
        await fails(client, run("badjson"), "internal", "JSON")
        await fails(client, run("quitter"), "internal", "status 70", "out of ideas")
        await still_fine(client)
        for path in ("/etc/passwd", str(Path.home() / ".ssh/id_rsa"), str(secret)):
            await fails(client, run("probe", "read", path=path), "sandbox_denied", "cannot open")
        ok = await client.call(run("rprobe", "read", path="/data/note.txt"))
        assert ok.output["head"] == "hello"
        await fails(
            client, run("rprobe", "write", path="/data/new.txt", text="x"), "sandbox_denied"
        )
        assert not (granted / "new.txt").exists()
        for escape in ("/data/../secret.txt", "/data/../../../etc/passwd"):
            await fails(client, run("rprobe", "read", path=escape), "sandbox_denied")
        await still_fine(client)

        # A non-WASI import: refused at install, before any instantiation.
        bad = make_plugin(tmp_path, "importer", FIXTURES / "host_import.wasm")
        await fails(client, p.PluginInstall(path=str(bad)), "sandbox_denied", "env.host_secret")
        # A manifest with an unknown key, named in the error.
        typo = make_plugin(
            tmp_path, "typo", FIXTURES / "loop.wasm", extra={"permisions": {"env": []}}
        )
        await fails(client, p.PluginInstall(path=str(typo)), "bad_request", "'permisions'")
        # Arguments that do not match the manifest's schema, naming the field.
        await fails(
            client,
            run("textkit", "word_count", text=5),
            "bad_request",
            "args.text: expected string",
        )
        # The module changed after install: refused until reinstalled.
        info = await client.call(p.PluginShow(name="textkit"))
        installed = Path(info.path) / "textkit.wasm"
        installed.write_bytes((EXAMPLES / "calc/calc.wasm").read_bytes())
        await fails(
            client,
            run("textkit", "word_count", text="a"),
            "sandbox_denied",
            "hash changed since install",
        )
        await install(client, EXAMPLES / "textkit")
        await still_fine(client)
        status = await client.call(p.Status())
        plugin_actor = next(a for a in status.actors if a.name == "plugin")
        assert plugin_actor.restarts == 0 and plugin_actor.state == "running"


async def test_plugin_tools_appear_in_the_tool_registry(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    async with open_client(paths=daemon.paths) as client:
        await install(client, EXAMPLES / "calc")
        tools = await client.call(p.ToolList())
        spec = next(t for t in tools.tools if t.name == "calc.evaluate")
        assert spec.owner == "plugin:calc"
        assert spec.schema["required"] == ["expression"]
        out = await client.call(
            p.ToolRun(
                name="calc.convert",
                args={"value": 3, "from": "ft", "to": "in"},
                workspace=str(tmp_path),
            ),
        )
        assert out.data == {"value": 36, "from": "ft", "to": "in"}
        await client.call(p.PluginRemove(name="calc"))
        tools = await client.call(p.ToolList())
        assert not [t for t in tools.tools if t.name.startswith("calc.")]


def test_cli_install_list_info_call_remove(daemon: DaemonProcess) -> None:
    r = daemon.cli("plugin", "install", str(EXAMPLES / "textkit"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "textkit"
    r = daemon.cli("plugin", "list", "--json")
    assert [x["name"] for x in json.loads(r.stdout)["plugins"]] == ["textkit"]
    r = daemon.cli("plugin", "info", "textkit")
    assert "textkit.slugify" in r.stdout and "sha256" in r.stdout
    r = daemon.cli(
        "plugin", "call", "textkit", "slugify", "--args", '{"text": "Hello World"}', "--json"
    )
    assert json.loads(r.stdout)["output"] == {"slug": "hello-world"}, r.stderr
    r = daemon.cli("plugin", "call", "textkit", "slugify", "--args", '{"txt": 1}')
    assert r.returncode == 1 and "bad_request" in r.stderr and "args.text" in r.stderr
    r = daemon.cli("plugin", "remove", "textkit", "--json")
    assert r.returncode == 0
    r = daemon.cli("plugin", "info", "textkit")
    assert r.returncode == 1 and "not_found" in r.stderr


def test_tar_gz_install_and_plugins_survive_a_restart(daemon_factory: Any, tmp_path: Path) -> None:
    archive = tmp_path / "calc-1.0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(EXAMPLES / "calc/plugin.toml", "calc/plugin.toml")
        tar.add(EXAMPLES / "calc/calc.wasm", "calc/calc.wasm")
    d: DaemonProcess = daemon_factory()
    r = d.cli("plugin", "install", str(archive))
    assert r.returncode == 0, r.stderr
    assert d.terminate() == 0
    d.start()
    r = d.cli("plugin", "call", "calc", "evaluate", "--args", '{"expression": "6*7"}', "--json")
    assert json.loads(r.stdout)["output"] == {"value": 42}, r.stderr


def _workers(daemon: DaemonProcess) -> list[psutil.Process]:
    parent = psutil.Process(daemon.proc.pid)  # type: ignore[union-attr]
    return [
        c for c in parent.children() if "convergiod.actors.plugin.worker" in " ".join(c.cmdline())
    ]


async def test_process_isolation_survives_a_sigkilled_worker(
    daemon_factory: Any, tmp_path: Path
) -> None:
    d: DaemonProcess = daemon_factory('[plugins]\nisolation = "process"\nworkers = 1\n')
    slow = make_plugin(tmp_path, "slow", FIXTURES / "loop.wasm", limits={"timeout_ms": 20_000})
    async with open_client(paths=d.paths) as client:
        await install(client, EXAMPLES / "textkit")
        await install(client, slow)
        await still_fine(client)
        [worker] = _workers(d)
        outcome: list[str] = []

        async def doomed() -> None:
            try:
                await client.call(p.PluginCall(plugin="slow", tool="run"), timeout=30)
                outcome.append("ok")
            except RemoteError as exc:
                outcome.append(f"{exc.code}: {exc.message}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed)
            # Wait until the worker is busy running the loop, then kill it.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if worker.cpu_percent(0.05) >= 20:
                    break
                await trio.sleep(0.02)
            os.kill(worker.pid, signal.SIGKILL)
        assert outcome and outcome[0].startswith("internal:") and "SIGKILL" in outcome[0]
        await still_fine(client)
        [replacement] = _workers(d)
        assert replacement.pid != worker.pid
        # The hostile basics hold in the worker too.
        await fails(
            client,
            p.PluginCall(plugin="textkit", tool="word_count", args={"text": 1}),
            "bad_request",
        )


def _worker_processes(home: Path) -> list[psutil.Process]:
    """Every worker process of the daemon on ``home``, whoever its parent is now."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "convergiod.actors.plugin.worker" in cmd and str(home) in cmd:
            found.append(proc)
    return found


def _none_left(home: Path, within: float) -> bool:
    deadline = time.monotonic() + within
    while _worker_processes(home):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class _GroupLeader(DaemonProcess):
    """A daemon leading its own process group, as in a terminal (``make run``)."""

    new_session = True


@pytest.mark.parametrize("how", ["group-signal", "sigkill"])
def test_process_workers_never_outlive_the_daemon(home: Path, how: str) -> None:
    """Ctrl-C in a terminal (or ``timeout``) signals the daemon's whole process group: the
    workers must not die with it and be replaced by workers nobody stops. A daemon killed
    outright leaves no worker behind either (they watch their parent)."""
    d = _GroupLeader(home, '[plugins]\nisolation = "process"\nworkers = 2\n')
    try:
        d.start()
        assert d.proc is not None and len(_workers(d)) == 2
        if how == "group-signal":
            os.killpg(d.proc.pid, signal.SIGTERM)
        else:
            d.proc.kill()
        d.proc.wait(30)
        assert _none_left(home, within=10.0), [p.pid for p in _worker_processes(home)]
    finally:
        d.kill()
        for proc in _worker_processes(home):
            proc.kill()


async def test_inline_calls_never_stall_the_daemon(daemon: DaemonProcess, tmp_path: Path) -> None:
    """Short calls are answered in the receive loop; a loop, a sleeper and a memory bomb
    are sent to threads, and pings keep being answered meanwhile."""
    async with open_client(paths=daemon.paths) as client:
        await install(client, make_plugin(tmp_path, "noop", FIXTURES / "noop.wasm"))
        await install(
            client,
            make_plugin(tmp_path, "loop", FIXTURES / "loop.wasm", limits={"timeout_ms": 1500}),
        )
        await install(client, make_plugin(tmp_path, "sleepy", FIXTURES / "sleep.wasm"))
        for _ in range(20):
            out = await client.call(p.PluginCall(plugin="noop", tool="run"))
            assert out.output == {"ok": True}
        worst = 0.0
        outcomes: dict[str, list[Any]] = {"loop": [], "sleepy": []}

        async def slow_call(name: str) -> None:
            for _ in range(2):  # the second call is the one that may be tried inline
                try:
                    out = await client.call(p.PluginCall(plugin=name, tool="run"), timeout=30)
                    outcomes[name].append(out.output)
                except RemoteError as exc:
                    outcomes[name].append(exc.code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_call, "loop")
            nursery.start_soon(slow_call, "sleepy")
            while sum(map(len, outcomes.values())) < 4:
                started = time.monotonic()
                await client.call(p.Ping())
                worst = max(worst, time.monotonic() - started)
                await trio.sleep(0.01)
        assert outcomes == {"loop": ["timeout"] * 2, "sleepy": [{"slept": True}] * 2}
        # A stalled loop would hold a ping for the whole 1.5 s deadline.
        assert worst < 0.75, worst
        out = await client.call(p.PluginCall(plugin="noop", tool="run"))
        assert out.output == {"ok": True}
