"""The record of a task's end (``serve._finish``) when the request is cancelled while it
waits for its group commit: it still waits for the commit (shielded, only then), and the
task's event is still published."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio

from convergiod.actors.memory import messages as mem
from convergiod.actors.orchestrator import serve
from convergiod.runtime import Pending


def _daemon(published: list[str]) -> SimpleNamespace:
    """What ``_finish`` uses of the daemon: no actor is asked when the write is submitted."""
    return SimpleNamespace(
        system=SimpleNamespace(ref=lambda name: None),
        publish=lambda topic, data: published.append(topic),
    )


def _done(task: str) -> mem.SaveTask:
    return mem.SaveTask(
        tenant="local", task=task, status="done", request="p", agent="a", conversation="c"
    )


async def test_a_cancel_during_the_final_commit_waits_for_it_and_still_publishes() -> None:
    published: list[str] = []
    daemon = _daemon(published)
    run = SimpleNamespace(steps=3, request_id=1)
    write = _done("t1")
    commit = Pending()
    waited = trio.Event()
    request = trio.CancelScope()

    async def finish() -> None:
        try:
            with request:
                await serve._finish(daemon, run, write, commit)  # type: ignore[arg-type]
        finally:
            waited.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish)
        await trio.testing.wait_all_tasks_blocked()
        request.cancel()  # the request is cancelled while the commit runs
        await trio.testing.wait_all_tasks_blocked()
        assert not waited.is_set()  # it waits for the commit, shielded
        assert published == []
        with trio.fail_after(5):
            commit.resolve(None)
            await waited.wait()
    assert request.cancelled_caught  # the cancel goes on once the commit is in
    assert published == ["task.t1.done"]


async def test_a_failed_final_commit_is_logged_and_the_event_published(
    caplog: pytest.LogCaptureFixture,
) -> None:
    published: list[str] = []
    daemon = _daemon(published)
    run = SimpleNamespace(steps=1, request_id=1)
    write = _done("t2")
    commit = Pending()
    commit.fail(RuntimeError("disk on fire"))
    await serve._finish(daemon, run, write, commit)  # type: ignore[arg-type]
    assert published == ["task.t2.done"]
    assert "could not record the end of task t2" in caplog.text
