"""``Actor.start_soon``: work an actor starts beside its workers (after it answered)."""

from __future__ import annotations

import contextlib
from typing import Any

import trio

from convergiod.runtime import Actor, ChildSpec, SupervisorSpec, open_actor_system


class Later(Actor):
    """``("later", event, log)``: a side task waits for ``event``, then logs; ``"boom"``: a
    side task that raises; ``"alive"``: the instance's id."""

    made = 0

    def __init__(self) -> None:
        Later.made += 1
        self.id = Later.made

    def handle_now(self, msg: Any) -> Any:
        if isinstance(msg, tuple) and msg[0] == "later":
            _, event, log = msg

            async def wait_then_log() -> None:
                await event.wait()
                log.append("side task done")

            return self.start_soon(wait_then_log)
        if msg == "boom":

            async def boom() -> None:
                raise RuntimeError("side task failed")

            return self.start_soon(boom)
        return super().handle_now(msg)

    async def handle(self, msg: Any) -> Any:
        return self.id


def tree() -> SupervisorSpec:
    return SupervisorSpec(name="root", children=[ChildSpec(name="a", start=Later)])


async def test_an_orderly_stop_waits_for_side_tasks() -> None:
    log: list[str] = []
    event = trio.Event()

    async def release() -> None:
        await trio.sleep(0.05)
        log.append("released")
        event.set()

    with trio.fail_after(5):
        async with trio.open_nursery() as outer:
            async with open_actor_system(tree()) as system:
                assert system.ref("a").ask_now(("later", event, log)) is True
                outer.start_soon(release)
            # The system stopped (orderly) only once its side task was done.
            assert log == ["released", "side task done"]


async def test_a_failing_side_task_crashes_the_actor() -> None:
    with trio.fail_after(5):
        async with open_actor_system(tree()) as system:
            ref = system.ref("a")
            first = await ref.ask("alive")
            assert ref.ask_now("boom") is True
            while True:  # restarted by its supervisor: a new instance answers
                # (the crash may fail a message in flight)
                with contextlib.suppress(Exception):
                    if await ref.ask("alive") != first:
                        break
                await trio.sleep(0.01)


async def test_no_side_task_once_the_instance_stops() -> None:
    with trio.fail_after(5):
        async with open_actor_system(tree()) as system:
            instance = system._node("a").instance  # type: ignore[attr-defined]
            assert instance is not None
            await system.restart("a")
            log: list[str] = []
            assert instance.start_soon(trio.sleep, 0) is False
            assert log == []


async def test_an_instance_from_before_gc_freeze_is_collected_once_it_ends() -> None:
    """The daemon freezes its start-up objects out of the collector's sight; an instance
    made then that later crashes (held in a reference cycle, as by the bound methods an
    actor hands out) must still be collected."""
    import gc
    import weakref

    with trio.fail_after(5):
        async with open_actor_system(tree()) as system:
            instance = system._node("a").instance  # type: ignore[attr-defined]
            instance.cycle = instance.handle  # a bound method: instance -> itself
            gone = weakref.ref(instance)
            del instance
            gc.collect()
            gc.freeze()
            try:
                await system.restart("a")
                gc.collect()
                assert gone() is None
            finally:
                gc.unfreeze()
