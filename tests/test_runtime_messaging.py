"""Refs, mailboxes, ask/send/tell and what callers see when actors crash or stop."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from convergiod.runtime import (
    NOT_NOW,
    Actor,
    ActorCrashed,
    ActorNotFound,
    ActorStopped,
    AskTimeout,
    ChildSpec,
    MailboxFull,
    Restart,
    SupervisorSpec,
    open_actor_system,
)
from tests.test_runtime_support import Events, probe, settle


def tree(*children: ChildSpec, **kw: Any) -> SupervisorSpec:
    return SupervisorSpec(name="root", children=children, **kw)


async def test_ask_returns_the_handlers_reply() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log))) as system:
        assert await system.ref("a").ask("hi") == ("a", "hi")


async def test_send_is_fire_and_forget_and_handled_in_order() -> None:
    got: list[int] = []

    class Sink(Actor):
        async def handle(self, msg: Any) -> Any:
            got.append(msg)

    async with open_actor_system(tree(ChildSpec(name="sink", start=Sink))) as system:
        ref = system.ref("sink")
        for i in range(100):
            ref.send(i)
        await ref.ask(100)
    assert got == list(range(101))


async def test_unknown_name_raises_actor_not_found() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log))) as system:
        with pytest.raises(ActorNotFound):
            system.ref("nope")
        with pytest.raises(ActorNotFound):
            system.ref("root")  # a supervisor takes no messages
        with pytest.raises(ActorNotFound):
            await system.kill("nope")


async def test_send_and_ask_on_a_full_mailbox_raise_mailbox_full() -> None:
    log: list[str] = []
    gate = trio.Event()
    async with open_actor_system(tree(probe("a", log, mailbox_size=2))) as system:
        ref = system.ref("a")
        ref.send(("wait", gate))
        await settle()  # the actor is now busy with the first message
        ref.send(1)
        ref.send(2)
        with pytest.raises(MailboxFull):
            ref.send(3)
        with pytest.raises(MailboxFull):
            await ref.ask(3)
        assert system.info()[1].mailbox_depth == 2
        gate.set()
        await settle()
        assert await ref.ask(4) == ("a", 4)


async def test_tell_waits_for_mailbox_space() -> None:
    log: list[str] = []
    gate = trio.Event()
    async with open_actor_system(tree(probe("a", log, mailbox_size=1))) as system:
        ref = system.ref("a")
        ref.send(("wait", gate))
        await settle()
        ref.send(1)
        told = trio.Event()

        async def teller() -> None:
            await ref.tell(2)
            told.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(teller)
            await settle()
            assert not told.is_set()
            gate.set()
            await told.wait()
        assert await ref.ask(3) == ("a", 3)


async def test_ask_times_out_with_ask_timeout_and_the_late_reply_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    gate = trio.Event()
    async with open_actor_system(tree(probe("a", log))) as system:
        ref = system.ref("a")
        with pytest.raises(AskTimeout) as info:
            await ref.ask(("wait", gate), timeout=1.0)
        assert info.value.actor == "a"
        gate.set()
        assert await ref.ask("after") == ("a", "after")


async def test_asks_with_different_timeouts_expire_in_deadline_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []
    gate = trio.Event()
    expired: list[float] = []
    async with open_actor_system(tree(probe("a", log))) as system:
        ref = system.ref("a")
        ref.send(("wait", gate))

        async def asker(timeout: float) -> None:
            with pytest.raises(AskTimeout):
                await ref.ask("x", timeout=timeout)
            expired.append(timeout)

        async with trio.open_nursery() as nursery:
            for timeout in (3.0, 1.0, 2.0):
                nursery.start_soon(asker, timeout)
        gate.set()
    assert expired == [1.0, 2.0, 3.0]


async def test_cancelled_asker_leaves_the_actor_working() -> None:
    log: list[str] = []
    gate = trio.Event()
    async with open_actor_system(tree(probe("a", log))) as system:
        ref = system.ref("a")
        with trio.move_on_after(0.01):
            await ref.ask(("wait", gate), timeout=None)
        gate.set()
        assert await ref.ask("x") == ("a", "x")


async def test_crash_fails_that_ask_at_once_and_queued_messages_survive_the_restart() -> None:
    log: list[str] = []
    gate = trio.Event()
    results: dict[str, Any] = {}
    async with open_actor_system(tree(probe("a", log))) as system:
        ref = system.ref("a")
        first_id = await ref.ask("id")

        async def ask(key: str, msg: Any) -> None:
            try:
                results[key] = await ref.ask(msg)
            except ActorCrashed as exc:
                results[key] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "crash", ("wait", gate, "crash"))
            await settle()
            nursery.start_soon(ask, "q1", "id")
            nursery.start_soon(ask, "q2", "x")
            await settle()
            assert "q1" not in results
            gate.set()
    crash = results["crash"]
    assert isinstance(crash, ActorCrashed)
    assert crash.actor == "a"
    assert "RuntimeError('boom after wait')" in crash.error
    assert results["q1"] != first_id  # handled by the restarted instance
    assert results["q2"] == ("a", "x")


async def test_crash_is_logged_with_context(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log))) as system:
        with (
            caplog.at_level(logging.ERROR, logger="convergiod.runtime"),
            pytest.raises(ActorCrashed),
        ):
            await system.ref("a").ask("crash")
    record = next(r for r in caplog.records if "crashed" in r.getMessage())
    assert "'a'" in record.getMessage() and "parent=root" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


async def test_asks_to_an_actor_gone_for_good_fail_at_once() -> None:
    log: list[str] = []
    gate = trio.Event()
    results: list[BaseException] = []
    spec = tree(probe("t", log, Restart.TEMPORARY), probe("b", log))
    async with open_actor_system(spec) as system:
        ref = system.ref("t")

        async def ask(msg: Any) -> None:
            with pytest.raises(ActorCrashed) as info:
                await ref.ask(msg, timeout=None)
            results.append(info.value)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, ("wait", gate, "crash"))
            await settle()
            nursery.start_soon(ask, "queued")  # dies with the actor, not left hanging
            await settle()
            gate.set()
        assert len(results) == 2
        with pytest.raises(ActorCrashed):
            await ref.ask("later")
        with pytest.raises(ActorCrashed):
            ref.send("later")
        assert [i.state for i in system.info() if i.name == "t"] == ["failed"]


async def test_transient_normal_exit_fails_queued_asks_with_actor_stopped() -> None:
    log: list[str] = []
    gate = trio.Event()
    async with open_actor_system(tree(probe("a", log, Restart.TRANSIENT))) as system:
        ref = system.ref("a")
        results: list[Any] = []

        async def ask(msg: Any) -> None:
            try:
                results.append(await ref.ask(msg))
            except ActorStopped as exc:
                results.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, ("wait", gate))
            await settle()
            nursery.start_soon(ask, "stop")
            await settle()
            nursery.start_soon(ask, "queued")
            await settle()
            gate.set()
        assert sorted(r for r in results if isinstance(r, str)) == ["stopping", "waited"]
        assert sum(isinstance(r, ActorStopped) for r in results) == 1
        with pytest.raises(ActorStopped):
            ref.send("x")


async def test_concurrency_runs_several_handlers_of_one_actor_at_once() -> None:
    arrived = 0
    all_in = trio.Event()

    class Wide(Actor):
        concurrency = 4

        async def handle(self, msg: Any) -> Any:
            nonlocal arrived
            arrived += 1
            if arrived == 4:
                all_in.set()
            await all_in.wait()
            return msg

    async with open_actor_system(tree(ChildSpec(name="w", start=Wide))) as system:
        ref = system.ref("w")
        out: list[int] = []

        async def ask(i: int) -> None:
            out.append(await ref.ask(i, timeout=2.0))

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(ask, i)
    assert sorted(out) == [0, 1, 2, 3]


async def test_crash_with_concurrency_fails_every_in_flight_ask() -> None:
    gate = trio.Event()

    class Wide(Actor):
        concurrency = 3

        async def handle(self, msg: Any) -> Any:
            await gate.wait()
            if msg == "crash":
                raise ValueError("bad")
            await trio.sleep_forever()

    errors: list[BaseException] = []
    async with open_actor_system(tree(ChildSpec(name="w", start=Wide))) as system:
        ref = system.ref("w")

        async def ask(msg: str) -> None:
            try:
                await ref.ask(msg, timeout=None)
            except ActorCrashed as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for msg in ("crash", "a", "b"):
                nursery.start_soon(ask, msg)
            await settle()
            gate.set()
    assert len(errors) == 3
    assert all("ValueError('bad')" in str(e) for e in errors)


async def test_refs_are_stable_across_restarts() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log))) as system:
        ref = system.ref("a")
        assert system.ref("a") is ref
        before = await ref.ask("id")
        await system.kill("a")
        assert await ref.ask("id") != before


async def test_refs_raise_actor_stopped_after_the_system_exits() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log))) as system:
        ref = system.ref("a")
    with pytest.raises(ActorStopped):
        ref.send("x")
    with pytest.raises(ActorStopped):
        await ref.ask("x")


async def test_an_actor_asks_another_through_its_system() -> None:
    log: list[str] = []

    class Front(Actor):
        async def handle(self, msg: Any) -> Any:
            return await self.ref("back").ask(msg)

    spec = tree(probe("back", log), ChildSpec(name="front", start=Front))
    async with open_actor_system(spec) as system:
        assert await system.ref("front").ask(1) == ("back", 1)


async def test_info_reports_state_and_counters() -> None:
    log: list[str] = []
    async with open_actor_system(tree(probe("a", log))) as system:
        ref = system.ref("a")
        for i in range(3):
            await ref.ask(i)
        with pytest.raises(ActorCrashed):
            await ref.ask("crash")
        await system.wait_healthy()
        infos = {i.name: i for i in system.info()}
    assert infos["root"].kind == "supervisor" and infos["root"].parent is None
    a = infos["a"]
    assert (a.kind, a.parent, a.state, a.restarts, a.handled) == ("actor", "root", "running", 1, 4)
    assert a.last_error == "RuntimeError('boom in a')"
    assert a.started_at is not None and a.mailbox_depth == 0


async def test_a_raising_on_event_callback_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []

    def bad(topic: str, data: dict[str, Any]) -> None:
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="convergiod.runtime"):
        async with open_actor_system(tree(probe("a", log)), on_event=bad) as system:
            assert await system.ref("a").ask(1) == ("a", 1)
    assert any("on_event callback raised" in r.getMessage() for r in caplog.records)


async def test_crash_events_carry_the_error() -> None:
    log: list[str] = []
    events = Events()
    async with open_actor_system(tree(probe("a", log)), on_event=events) as system:
        with pytest.raises(ActorCrashed):
            await system.ref("a").ask("crash")
        await system.wait_healthy()
    crashed = [d for t, d in events.seen if t == "actor.a.crashed"]
    restarted = [d for t, d in events.seen if t == "actor.a.restarted"]
    assert crashed[0]["error"] == "RuntimeError('boom in a')"
    assert restarted[0]["restarts"] == 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["ok", "crash"]), min_size=1, max_size=40))
async def test_every_ask_ends_in_its_reply_or_actor_crashed(ops: list[str]) -> None:
    log: list[str] = []
    outcomes: dict[int, Any] = {}
    spec = tree(probe("a", log, mailbox_size=64), intensity=1000)
    async with open_actor_system(spec) as system:
        ref = system.ref("a")

        async def ask(i: int, op: str) -> None:
            try:
                outcomes[i] = await ref.ask("crash" if op == "crash" else i, timeout=5.0)
            except ActorCrashed as exc:
                outcomes[i] = exc

        async with trio.open_nursery() as nursery:
            for i, op in enumerate(ops):
                nursery.start_soon(ask, i, op)
    for i, op in enumerate(ops):
        if op == "crash":
            assert isinstance(outcomes[i], ActorCrashed)
        else:
            assert outcomes[i] == ("a", i)


class Now(Actor):
    """Answers ``("now", x)`` at once, ``("later", x)`` through the mailbox."""

    reply_errors = (KeyError,)

    def handle_now(self, msg: Any) -> Any:
        kind, value = msg
        if kind == "now":
            return ("now", value)
        if kind == "missing":
            raise KeyError(value)
        if kind == "bug":
            raise RuntimeError("bug in handle_now")
        return NOT_NOW

    async def handle(self, msg: Any) -> Any:
        return ("mailbox", msg[1])


async def test_ask_now_answers_at_once_or_declines_and_crashes_like_handle() -> None:
    async with open_actor_system(tree(ChildSpec(name="n", start=Now))) as system:
        ref = system.ref("n")
        assert ref.ask_now(("now", 1)) == ("now", 1)
        assert ref.ask_now(("later", 2)) is NOT_NOW
        assert await ref.ask(("later", 2)) == ("mailbox", 2)
        with pytest.raises(KeyError):  # a reply error is the answer, not a crash
            ref.ask_now(("missing", 3))
        assert system.info()[-1].restarts == 0
        with pytest.raises(ActorCrashed) as info:
            ref.ask_now(("bug", 4))
        assert "bug in handle_now" in info.value.error
        # Crashed: declined until the restarted instance runs, then answered again.
        assert ref.ask_now(("now", 5)) is NOT_NOW
        await system.wait_healthy()
        assert ref.ask_now(("now", 6)) == ("now", 6)
        assert [i.restarts for i in system.info() if i.name == "n"] == [1]


class Gated(Actor):
    """Handles a message only once ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.seen: list[Any] = []

    async def handle(self, msg: Any) -> None:
        await self.gate.wait()
        self.seen.append(msg)


async def test_idle_means_nothing_queued_and_no_message_in_progress() -> None:
    """``ActorRef.idle``: what lets a caller handle a message now without overtaking one
    that is queued or being handled (the daemon publishes events this way)."""
    async with open_actor_system(tree(ChildSpec(name="g", start=Gated))) as system:
        ref = system.ref("g")
        await system.wait_healthy()
        await trio.testing.wait_all_tasks_blocked()
        assert ref.idle()
        ref.send(1)
        assert not ref.idle()  # queued, its worker not yet run
        await trio.testing.wait_all_tasks_blocked()
        assert not ref.idle()  # in progress (waiting on the gate)
        instance = ref._cell.instance  # type: ignore[union-attr]
        instance.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert ref.idle() and instance.seen == [1]
