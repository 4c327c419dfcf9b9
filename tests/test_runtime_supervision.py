"""Erlang/OTP supervisor semantics: strategies, restart types, intensity, ordering, shutdown."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from convergiod.runtime import (
    Actor,
    ActorCrashed,
    ActorStopped,
    ChildSpec,
    ChildStartError,
    Restart,
    Strategy,
    SupervisorEscalation,
    SupervisorSpec,
    open_actor_system,
)
from tests.test_runtime_support import Events, FakeClock, probe, settle


def tree(*children: ChildSpec, **kw: Any) -> SupervisorSpec:
    return SupervisorSpec(name="root", children=children, **kw)


def sup(
    name: str, *children: ChildSpec, restart: Restart = Restart.PERMANENT, **kw: Any
) -> ChildSpec:
    return ChildSpec(
        name=name, start=SupervisorSpec(name=name, children=children, **kw), restart=restart
    )


async def crash(system: Any, name: str) -> None:
    with pytest.raises(ActorCrashed):
        await system.ref(name).ask("crash")
    await system.wait_healthy()


async def test_children_start_in_spec_order_and_stop_in_reverse_order() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log), probe("b", log), probe("c", log))):
        assert log == ["start a", "start b", "start c"]
    assert log[3:] == ["stop c", "stop b", "stop a"]


async def test_each_child_has_started_before_the_next_starts() -> None:
    log: list[str] = []

    class Slow(Actor):
        async def started(self) -> None:
            log.append(f"begin {self.name}")
            await trio.sleep(0.01)
            log.append(f"end {self.name}")

        async def handle(self, msg: Any) -> Any:
            return msg

    spec = tree(ChildSpec(name="a", start=Slow), ChildSpec(name="b", start=Slow))
    async with open_actor_system(spec):
        pass
    assert log == ["begin a", "end a", "begin b", "end b"]


async def test_one_for_one_restarts_only_the_crashed_child() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log), probe("b", log), probe("c", log))) as system:
        log.clear()
        await crash(system, "b")
        assert log == ["start b"]
        assert [i.restarts for i in system.info()[1:]] == [0, 1, 0]


async def test_one_for_all_restarts_siblings_in_start_order() -> None:
    log: list[str] = []
    spec = tree(probe("a", log), probe("b", log), probe("c", log), strategy=Strategy.ONE_FOR_ALL)
    async with open_actor_system(spec) as system:
        log.clear()
        await crash(system, "b")
        # b crashed (no stopping hook); the others stop in reverse order, all start in order
        assert log == ["stop c", "stop a", "start a", "start b", "start c"]
        assert [i.restarts for i in system.info()[1:]] == [1, 1, 1]


async def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it() -> None:
    log: list[str] = []
    spec = tree(
        probe("a", log),
        probe("b", log),
        probe("c", log),
        probe("d", log),
        strategy=Strategy.REST_FOR_ONE,
    )
    async with open_actor_system(spec) as system:
        log.clear()
        await crash(system, "b")
        assert log == ["stop d", "stop c", "start b", "start c", "start d"]
        assert [i.restarts for i in system.info()[1:]] == [0, 1, 1, 1]


async def test_permanent_child_is_restarted_even_after_a_normal_exit() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log))) as system:
        assert await system.ref("a").ask("stop") == "stopping"
        await system.wait_healthy()
        assert log == ["start a", "stop a", "start a"]
        assert system.info()[1].restarts == 1


async def test_transient_child_is_restarted_after_a_crash_but_not_after_a_normal_exit() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log, Restart.TRANSIENT))) as system:
        await crash(system, "a")
        assert system.info()[1].state == "running"
        await system.ref("a").ask("stop")
        await settle()
        assert system.info()[1].state == "stopped"
        assert log == ["start a", "start a", "stop a"]
        with pytest.raises(ActorStopped):
            await system.ref("a").ask("x")


async def test_temporary_child_is_never_restarted() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("t", log, Restart.TEMPORARY))) as system:
        with pytest.raises(ActorCrashed):
            await system.ref("t").ask("crash")
        await settle()
        assert log == ["start t"]
        assert system.info()[1].state == "failed"
        assert system.healthy


async def test_group_restart_does_not_bring_back_a_temporary_sibling() -> None:
    log: list[str] = []
    spec = tree(probe("t", log, Restart.TEMPORARY), probe("p", log), strategy=Strategy.ONE_FOR_ALL)
    async with open_actor_system(spec) as system:
        log.clear()
        await crash(system, "p")
        assert log == ["stop t", "start p"]
        assert system.info()[1].state == "stopped"
        with pytest.raises(ActorStopped):
            system.ref("t").send("x")


async def test_group_restart_brings_back_a_transient_sibling_that_exited_normally() -> None:
    # OTP keeps a normally-exited transient child's spec; a group restart starts it again.
    log: list[str] = []
    spec = tree(probe("tr", log, Restart.TRANSIENT), probe("p", log), strategy=Strategy.ONE_FOR_ALL)
    async with open_actor_system(spec) as system:
        await system.ref("tr").ask("stop")
        await settle()
        log.clear()
        await crash(system, "p")
        assert log == ["start tr", "start p"]
        assert await system.ref("tr").ask(1) == ("tr", 1)


async def test_more_restarts_than_intensity_within_period_fails_the_system() -> None:
    log: list[str] = []
    clock = FakeClock()
    events = Events()
    spec = tree(probe("a", log), probe("b", log), intensity=2, period=10.0)
    with pytest.raises(SupervisorEscalation) as info:
        async with open_actor_system(spec, clock=clock, on_event=events) as system:
            await crash(system, "b")
            await crash(system, "b")
            log.clear()
            with pytest.raises(ActorCrashed):
                await system.ref("b").ask("crash")
            await trio.sleep_forever()  # the failure cancels the body
    assert info.value.supervisor == "root"
    assert "more than 2 restarts" in str(info.value)
    assert not system.healthy
    assert log == ["stop a"]  # the remaining children were stopped in reverse order
    assert "supervisor.root.escalated" in events.topics()
    with pytest.raises(ActorCrashed):
        system.ref("a").send("x")


async def test_restarts_spread_wider_than_the_period_do_not_escalate() -> None:
    log: list[str] = []
    clock = FakeClock()
    spec = tree(probe("a", log), intensity=1, period=5.0)
    async with open_actor_system(spec, clock=clock) as system:
        for _ in range(5):
            await crash(system, "a")
            clock.advance(5.1)
        assert system.healthy
        assert system.info()[1].restarts == 5


async def test_intensity_zero_escalates_on_the_first_crash() -> None:
    log: list[str] = []
    with pytest.raises(SupervisorEscalation):
        async with open_actor_system(tree(probe("a", log), intensity=0)) as system:
            with pytest.raises(ActorCrashed):
                await system.ref("a").ask("crash")
            await trio.sleep_forever()


async def test_nested_supervisors_start_in_order_and_stop_in_reverse() -> None:
    log: list[str] = []
    spec = tree(probe("a", log), sup("inner", probe("b", log), probe("c", log)), probe("d", log))
    async with open_actor_system(spec) as system:
        assert log == ["start a", "start b", "start c", "start d"]
        assert [(i.name, i.parent) for i in system.info()] == [
            ("root", None),
            ("a", "root"),
            ("inner", "root"),
            ("b", "inner"),
            ("c", "inner"),
            ("d", "root"),
        ]
    assert log[4:] == ["stop d", "stop c", "stop b", "stop a"]


async def test_nested_supervisor_that_gives_up_is_restarted_by_its_parents_strategy() -> None:
    log: list[str] = []
    events = Events()
    spec = tree(
        probe("a", log),
        sup("inner", probe("b", log), probe("c", log), intensity=0),
        probe("d", log),
        strategy=Strategy.REST_FOR_ONE,
    )
    async with open_actor_system(spec, on_event=events) as system:
        log.clear()
        await crash(system, "b")
        assert "supervisor.inner.escalated" in events.topics()
        assert log == ["stop c", "stop d", "start b", "start c", "start d"]
        infos = {i.name: i for i in system.info()}
        assert infos["inner"].restarts == 1 and infos["a"].restarts == 0
        assert system.healthy


async def test_escalation_climbs_until_a_supervisor_can_cope() -> None:
    log: list[str] = []
    clock = FakeClock()
    spec = tree(sup("mid", sup("leaf", probe("x", log), intensity=0), intensity=0), intensity=5)
    async with open_actor_system(spec, clock=clock) as system:
        await crash(system, "x")
        infos = {i.name: i for i in system.info()}
        assert (infos["mid"].restarts, infos["leaf"].restarts, infos["x"].restarts) == (1, 1, 1)


async def test_messages_queued_during_a_group_restart_are_handled_afterwards() -> None:
    log: list[str] = []
    spec = tree(probe("a", log), probe("b", log), strategy=Strategy.ONE_FOR_ALL)
    async with open_actor_system(spec) as system:
        with pytest.raises(ActorCrashed):
            await system.ref("b").ask("crash")
        system.ref("a").send("queued")  # a is being stopped/restarted right now
        assert await system.ref("a").ask("x") == ("a", "x")
        assert system.info()[1].handled >= 1


async def test_stopping_that_hangs_is_cancelled_after_the_shutdown_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Stubborn(Actor):
        async def handle(self, msg: Any) -> Any:
            return msg

        async def stopping(self) -> None:
            await trio.sleep_forever()

    log: list[str] = []
    spec = tree(probe("a", log), ChildSpec(name="s", start=Stubborn, shutdown=2.0))
    t0 = trio.current_time()
    async with open_actor_system(spec):
        pass
    assert trio.current_time() - t0 == pytest.approx(2.0)
    assert log == ["start a", "stop a"]  # a was still stopped after s was cancelled


async def test_in_flight_ask_fails_with_actor_stopped_when_an_orderly_stop_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    gate = trio.Event()
    async with open_actor_system(tree(probe("a", log, shutdown=1.0))) as system:
        ref = system.ref("a")

        async def ask() -> None:
            with pytest.raises(ActorStopped):
                await ref.ask(("wait", gate), timeout=None)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask)
            await settle()
            t0 = trio.current_time()
            await system.restart("a")  # waits 1 s for the handler to finish, then cancels it
            assert trio.current_time() - t0 == pytest.approx(1.0)
        assert await ref.ask(1) == ("a", 1)


async def test_kill_crashes_an_actor_and_returns_once_it_was_restarted() -> None:
    log: list[str] = []
    events = Events()
    spec = tree(probe("a", log), probe("b", log), strategy=Strategy.ONE_FOR_ALL)
    async with open_actor_system(spec, on_event=events) as system:
        log.clear()
        await system.kill("a")
        assert log == ["stop b", "start a", "start b"]
        assert events.topics("actor.a.crashed")
        crashed = next(d for t, d in events.seen if t == "actor.a.crashed")
        assert "ActorKilled" in crashed["error"]
        assert await system.ref("a").ask(1) == ("a", 1)


async def test_kill_fails_the_in_flight_ask_with_actor_crashed() -> None:
    log: list[str] = []
    gate = trio.Event()
    async with open_actor_system(tree(probe("a", log))) as system:
        ref = system.ref("a")
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                with pytest.raises(ActorCrashed, match="ActorKilled"):
                    await ref.ask(("wait", gate))

            nursery.start_soon(ask)
            await settle()
            await system.kill("a")


async def test_kill_of_a_supervisor_restarts_its_whole_subtree() -> None:
    log: list[str] = []
    spec = tree(probe("a", log), sup("inner", probe("b", log), probe("c", log)))
    async with open_actor_system(spec) as system:
        log.clear()
        await system.kill("inner")
        assert log == ["start b", "start c"]  # killed children get no stopping()
        infos = {i.name: i for i in system.info()}
        assert (infos["inner"].restarts, infos["b"].restarts, infos["a"].restarts) == (1, 1, 0)
        assert await system.ref("c").ask(1) == ("c", 1)


async def test_kill_of_the_root_fails_the_system() -> None:
    log: list[str] = []
    with pytest.raises(SupervisorEscalation, match="ActorKilled"):
        async with open_actor_system(tree(probe("a", log))) as system:
            await system.kill("root")
            await trio.sleep_forever()
    assert not system.healthy


async def test_operator_restart_is_graceful_counted_and_not_a_crash() -> None:
    log: list[str] = []
    events = Events()
    spec = tree(probe("a", log), probe("b", log), strategy=Strategy.ONE_FOR_ALL, intensity=0)
    async with open_actor_system(spec, on_event=events) as system:
        log.clear()
        await system.restart("a")
        await system.restart("a")  # intensity 0: a crash would have failed the system
        assert log == ["stop a", "start a", "stop a", "start a"]  # siblings untouched
        assert system.info()[1].restarts == 2
        assert system.healthy
        assert "actor.a.crashed" not in events.topics()
        assert events.topics("actor.a.")[-2:] == ["actor.a.stopped", "actor.a.restarted"]


async def test_operator_restart_revives_a_stopped_temporary_child() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("t", log, Restart.TEMPORARY))) as system:
        with pytest.raises(ActorCrashed):
            await system.ref("t").ask("crash")
        await settle()
        await system.restart("t")
        assert await system.ref("t").ask(1) == ("t", 1)
        with pytest.raises(ValueError):
            await system.restart("root")


async def test_a_child_failing_to_start_initially_fails_the_system_start() -> None:
    log: list[str] = []

    class Broken(Actor):
        async def started(self) -> None:
            raise OSError("no database")

    spec = tree(probe("a", log), ChildSpec(name="broken", start=Broken), probe("c", log))
    with pytest.raises(ChildStartError) as info:
        async with open_actor_system(spec):
            pytest.fail("the body must not run")
    assert "no database" in str(info.value)
    assert log == ["start a", "stop a"]


async def test_a_restart_that_fails_to_start_counts_toward_intensity() -> None:
    log: list[str] = []
    starts = 0

    class FlakyStart(Actor):
        async def started(self) -> None:
            nonlocal starts
            starts += 1
            if starts > 1:
                raise OSError("still broken")

        async def handle(self, msg: Any) -> Any:
            raise RuntimeError("crash")

    spec = tree(probe("a", log), ChildSpec(name="f", start=FlakyStart), intensity=3)
    with pytest.raises(SupervisorEscalation, match="more than 3 restarts"):
        async with open_actor_system(spec, clock=FakeClock()) as system:
            with pytest.raises(ActorCrashed):
                await system.ref("f").ask("x")
            await trio.sleep_forever()
    assert starts == 4  # the first start, then three failed restarts; the fourth gives up


async def test_lifecycle_events_are_published() -> None:
    log: list[str] = []
    events = Events()
    async with open_actor_system(tree(probe("a", log)), on_event=events) as system:
        await crash(system, "a")
    assert events.topics() == [
        "actor.a.started",
        "supervisor.root.started",
        "actor.a.crashed",
        "actor.a.restarted",
        "actor.a.stopped",
        "supervisor.root.stopped",
    ]


async def test_wait_healthy_times_out_while_a_child_is_down() -> None:
    log: list[str] = []
    gate = trio.Event()

    class SlowRestart(Actor):
        runs = 0

        async def started(self) -> None:
            SlowRestart.runs += 1
            if SlowRestart.runs > 1:
                await gate.wait()

        async def handle(self, msg: Any) -> Any:
            raise RuntimeError("x")

    async with open_actor_system(
        tree(probe("a", log), ChildSpec(name="s", start=SlowRestart))
    ) as system:
        system.ref("s").send("crash")
        await settle()
        with pytest.raises(trio.TooSlowError):
            await system.wait_healthy(timeout=0.05)
        gate.set()
        await system.wait_healthy()


def test_specs_are_validated() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        SupervisorSpec(name="r", children=[probe("a", []), probe("a", [])])
    with pytest.raises(ValueError):
        ChildSpec(name="a", start=Actor, mailbox_size=0)
    with pytest.raises(ValueError):
        SupervisorSpec(name="r", children=[], period=0)
    assert math.isfinite(ChildSpec(name="a", start=Actor).shutdown)


async def test_duplicate_names_across_the_tree_are_rejected() -> None:
    log: list[str] = []
    with pytest.raises(ValueError, match="duplicate"):
        async with open_actor_system(tree(probe("a", log), sup("inner", probe("a", log)))):
            pass


async def test_asks_under_repeated_kills_of_actor_and_supervisor_never_hang() -> None:
    log: list[str] = []
    spec = tree(
        sup("inner", probe("a", log), probe("b", log), strategy=Strategy.ONE_FOR_ALL),
        intensity=1000,
    )
    counts = {"ok": 0, "crashed": 0}
    async with open_actor_system(spec) as system:
        done = False

        async def asker(name: str) -> None:
            ref = system.ref(name)
            while not done:
                try:
                    await ref.ask(1, timeout=None)  # must still end: reply or ActorCrashed
                    counts["ok"] += 1
                except ActorCrashed:
                    counts["crashed"] += 1

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(asker, "ab"[i % 2])
                for i in range(30):
                    await settle()
                    await system.kill(["a", "b", "inner"][i % 3])
                done = True
        await system.wait_healthy()
    assert counts["ok"] > 0
