"""Plugin calls run inline on the event loop's thread (``PluginActor.handle_now``): only
short, side-effect-free calls of loaded modules, bounded by fuel; everything else (a call
that waits, one that needs more than the budget, directory grants, calls while others run
on threads) goes to a worker thread with the manifest's own limits, with the same answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from convergiod.actors.plugin.actor import PluginActor
from convergiod.actors.plugin.messages import CallPlugin, CallResult, InstallPlugin, RemovePlugin
from convergiod.config import PluginConfig
from convergiod.errors import OpError
from convergiod.runtime import NOT_NOW, ActorRef, ChildSpec, SupervisorSpec, open_actor_system
from tests.plugin_helpers import FIXTURES, FS_TOOLS, make_plugin


@pytest.fixture
async def plugin(tmp_path: Path) -> AsyncIterator[tuple[ActorRef, PluginActor, Path]]:
    actors: list[PluginActor] = []

    def start() -> PluginActor:
        actor = PluginActor(
            data_dir=tmp_path / "data", runtime_dir=tmp_path / "run", config=PluginConfig()
        )
        actors.append(actor)
        return actor

    spec = SupervisorSpec(name="root", children=[ChildSpec(name="plugin", start=start)])
    async with open_actor_system(spec) as system:
        yield system.ref("plugin"), actors[-1], tmp_path


async def install(ref: ActorRef, path: Path, **kw: Any) -> None:
    await ref.ask(InstallPlugin(path=str(path), **kw), timeout=60)


def call(name: str, tool: str = "run", **args: Any) -> CallPlugin:
    return CallPlugin(plugin=name, tool=tool, args=args)


async def warmed(actor: PluginActor) -> None:
    """Wait for the background load of fuel-metered programs (started by a thread call)."""
    with trio.fail_after(30):
        while actor._warming:  # noqa: ASYNC110 (a set filled and emptied by threads)
            await trio.sleep(0.005)


async def test_a_short_call_runs_inline_once_its_module_is_loaded(plugin: Any) -> None:
    ref, actor, tmp = plugin
    await install(ref, make_plugin(tmp, "noop", FIXTURES / "noop.wasm"))
    # Not loaded for inline runs yet: declined, never compiled on the loop's thread.
    assert ref.ask_now(call("noop")) is NOT_NOW
    first = await ref.ask(call("noop"))  # on a thread; loads the inline program after
    assert first.value == {"ok": True} and actor.inline_runs == 0
    await warmed(actor)
    for i in range(3):
        answer = ref.ask_now(call("noop"))
        assert isinstance(answer, CallResult) and answer.value == {"ok": True}
        assert actor.inline_runs == i + 1
    assert (await ref.ask(call("noop"))).value == {"ok": True}  # the actor's path, inline too
    assert actor.inline_runs == 4


async def test_bad_calls_fail_the_same_inline(plugin: Any) -> None:
    ref, _, tmp = plugin
    await install(ref, make_plugin(tmp, "noop", FIXTURES / "noop.wasm"))
    with pytest.raises(OpError) as info:
        ref.ask_now(call("nope"))
    assert info.value.code == "not_found"
    with pytest.raises(OpError) as info:
        ref.ask_now(call("noop", "missing"))
    assert info.value.code == "not_found" and "no tool 'missing'" in info.value.message


async def test_a_call_that_waits_is_run_again_on_a_thread(plugin: Any) -> None:
    ref, actor, tmp = plugin
    await install(ref, make_plugin(tmp, "sleepy", FIXTURES / "sleep.wasm"))
    await ref.ask(call("sleepy"))  # loads it
    await warmed(actor)
    started = time.monotonic()
    # poll_oneoff (a 200 ms sleep) stops the inline run at once: the loop never sleeps.
    assert ref.ask_now(call("sleepy")) is NOT_NOW
    assert time.monotonic() - started < 0.15
    assert ("sleepy", "run") in actor._slow
    assert (await ref.ask(call("sleepy"))).value == {"slept": True}
    assert actor.inline_runs == 0


async def test_an_endless_loop_costs_the_loop_one_fuel_budget_then_goes_to_threads(
    plugin: Any,
) -> None:
    ref, actor, tmp = plugin
    await install(ref, make_plugin(tmp, "loop", FIXTURES / "loop.wasm", limits={"timeout_ms": 300}))
    with pytest.raises(OpError) as info:
        await ref.ask(call("loop"))  # on a thread, stopped by its deadline; loads it
    assert info.value.code == "timeout" and "300 ms" in info.value.message
    await warmed(actor)
    started = time.monotonic()
    assert ref.ask_now(call("loop")) is NOT_NOW  # out of inline fuel: not a failure
    # Bounded by fuel (about a millisecond), not by the 300 ms deadline.
    assert time.monotonic() - started < 0.25
    assert ("loop", "run") in actor._slow
    started = time.monotonic()
    assert ref.ask_now(call("loop")) is NOT_NOW  # backed off: not even tried
    assert time.monotonic() - started < 0.05


async def test_manifest_fuel_below_the_budget_is_a_real_failure_inline(plugin: Any) -> None:
    ref, _, tmp = plugin
    path = make_plugin(tmp, "fuel", FIXTURES / "loop.wasm", limits={"fuel": 50_000})
    await install(ref, path)
    with pytest.raises(OpError):
        await ref.ask(call("fuel"))  # the fuel engine's program is loaded by this call
    with pytest.raises(OpError) as info:
        ref.ask_now(call("fuel"))
    assert info.value.code == "timeout" and "ran out of fuel (50000 units)" in info.value.message


async def test_calls_with_directory_grants_never_run_inline(plugin: Any) -> None:
    ref, actor, tmp = plugin
    granted = tmp / "granted"
    granted.mkdir()
    (granted / "note.txt").write_text("hello")
    perm = {"dirs": [{"host": str(granted), "guest": "/data"}]}
    path = make_plugin(tmp, "probe", FIXTURES / "fsprobe.wasm", tools=FS_TOOLS, permissions=perm)
    await install(ref, path, grant_all=True)
    out = await ref.ask(call("probe", "read", path="/data/note.txt"))
    assert "hello" in str(out.value)
    assert ref.ask_now(call("probe", "read", path="/data/note.txt")) is NOT_NOW
    assert actor.inline_runs == 0


async def test_no_inline_runs_while_calls_run_on_threads(plugin: Any) -> None:
    ref, actor, tmp = plugin
    await install(ref, make_plugin(tmp, "noop", FIXTURES / "noop.wasm"))
    await install(ref, make_plugin(tmp, "sleepy", FIXTURES / "sleep.wasm"))
    await ref.ask(call("noop"))
    await warmed(actor)
    assert isinstance(ref.ask_now(call("noop")), CallResult)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ref.ask, call("sleepy"))
        with trio.fail_after(10):
            while actor._running == 0:  # noqa: ASYNC110 (a counter, not an event)
                await trio.sleep(0.001)
        assert ref.ask_now(call("noop")) is NOT_NOW
        assert (await ref.ask(call("noop"))).value == {"ok": True}


async def test_after_inline_answers_stores_are_made_ahead_in_batches(plugin: Any) -> None:
    """Once inline answers have gone out, a worker thread makes the next calls' stores in
    a batch (``SPARES``, again when half are used); those calls start from them, fresh
    (``echo`` exits 70 on a reused store) and reading their own calls."""
    from convergiod.actors.plugin.actor import SPARES

    ref, actor, tmp = plugin
    await install(ref, make_plugin(tmp, "echo", FIXTURES / "echo.wasm"))
    await ref.ask(call("echo"))
    await warmed(actor)
    assert actor.runner is not None
    program = actor.runner.cache.peek(  # type: ignore[attr-defined]
        str(actor.plugins["echo"].module_path), actor.plugins["echo"].record.sha256, fuel=True
    )
    assert program is not None and not program.spares

    async def pool_size(at_least: int) -> int:
        with trio.fail_after(10):  # filled by a worker thread
            while sum(map(len, program.spares.values())) < at_least:  # noqa: ASYNC110
                await trio.sleep(0.001)
        return sum(map(len, program.spares.values()))

    for i in range(3 * SPARES):
        answer = ref.ask_now(call("echo", n=i))
        assert isinstance(answer, CallResult) and answer.value == {"tool": "run", "args": {"n": i}}
        if i == 0:
            assert await pool_size(SPARES) == SPARES
    assert actor.inline_runs == 3 * SPARES
    await pool_size(SPARES // 2)
    # Removing the plugin drops its stores.
    await ref.ask(RemovePlugin(name="echo"), timeout=30)
    assert not program.spares and not actor._wanted
