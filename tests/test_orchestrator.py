"""The orchestrator end to end: a real daemon, the real client, a scripted model server that
speaks the OpenAI streaming format. Ali delegates to three specialists who work at the same
time, one of them uses a tool, and the answers converge into one streamed answer."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from convergio_client import ClientTimeout, RemoteError
from convergio_client.trio_client import open_client
from convergiod import protocol as p
from tests.conftest import DaemonProcess
from tests.script_server import Reply, ScriptServer, Turn, router_config


@asynccontextmanager
async def scripted(script: Callable[[Turn], Reply]) -> AsyncIterator[ScriptServer]:
    server = ScriptServer(script=script)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def team_script(turn: Turn) -> Reply:
    if turn.agent == "ali":
        if not turn.tool_results:
            return Reply(
                text="I will ask the team.",
                calls=[
                    ("delegate", {"agent": "architect", "task": "Design the cache."}),
                    ("delegate", {"agent": "coder", "task": "Read notes.txt and summarise."}),
                    ("delegate", {"agent": "researcher", "task": "Find prior art."}),
                ],
            )
        return Reply(
            text="Converged answer: " + " | ".join(sorted(turn.tool_results)), chunks=6, delay=0.03
        )
    if turn.agent == "coder" and not turn.tool_results:
        return Reply(text="Reading.", calls=[("fs.read", {"path": "notes.txt"})])
    if turn.agent == "coder":
        return Reply(text=f"coder saw {turn.tool_results[0].strip()!r}", delay=0.05)
    return Reply(text=f"{turn.agent} result for {turn.task}", chunks=5, delay=0.08)


async def collect(client: Any, op: p.Op) -> tuple[list[p.EventBody], Any]:
    events: list[p.EventBody] = []
    async with client.stream(op, timeout=60) as stream:
        async for event in stream:
            if isinstance(event, p.ApprovalRequest):
                await stream.answer(event.approval, "once")
            events.append(event)
    return events, stream.result


async def test_ali_delegates_to_three_specialists_in_parallel_and_converges(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("remember the milk\n")
    async with scripted(team_script) as server:
        d = daemon_factory(router_config(server.port))
        async with open_client(paths=d.paths) as client:
            events, answer = await collect(
                client, p.Ask(prompt="Plan a cache for the app", workspace=str(tmp_path))
            )
    assert isinstance(answer, p.Answer)
    assert answer.text.startswith("Converged answer: ")
    assert "coder saw 'remember the milk'" in answer.text
    assert "architect result for Design the cache." in answer.text
    # Streamed: the final answer arrived as several token events of ali.
    ali_tokens = [e for e in events if isinstance(e, p.TokenDelta) and e.agent == "ali"]
    assert len(ali_tokens) >= 3
    delegations = [e for e in events if isinstance(e, p.DelegationStarted)]
    assert sorted(e.to for e in delegations) == ["architect", "coder", "researcher"]
    tools = [e for e in events if isinstance(e, p.ToolCallFinished) and e.tool == "fs.read"]
    assert tools and tools[0].ok and tools[0].agent == "coder"
    # The three specialists' model calls overlapped in time.
    spans = {s.agent: s for s in server.spans if s.agent in ("architect", "researcher")}
    coder = [s for s in server.spans if s.agent == "coder"]
    assert spans["architect"].start < spans["researcher"].end
    assert spans["researcher"].start < spans["architect"].end
    assert coder[0].start < spans["architect"].end
    # Usage and cost recorded per agent.
    usage = {u.agent: u for u in answer.usage}
    assert set(usage) == {"ali", "architect", "coder", "researcher"}
    assert usage["coder"].calls == 2 and usage["ali"].calls == 2
    assert all(u.cost > 0 and u.input_tokens > 0 for u in usage.values())
    report = json.loads(d.cli("usage", "--by", "agent", "--json").stdout)
    text = json.dumps(report)
    for agent in ("ali", "architect", "coder", "researcher"):
        assert agent in text


LOOPER = """+++
name = "looper"
description = "calls tools forever"
tools = ["fs.list"]
[limits]
max_tool_calls = 3
max_steps = 20
+++
You are looper.
"""

CYCLE_A = """+++
name = "alpha"
description = "delegates to beta"
tools = ["delegate"]
delegates = ["beta"]
+++
You are alpha.
"""

CYCLE_B = """+++
name = "beta"
description = "delegates back to alpha"
tools = ["delegate"]
delegates = ["alpha"]
+++
You are beta.
"""


def write_agents(d: DaemonProcess, **agents: str) -> None:
    directory = d.paths.config_dir / "agents"
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in agents.items():
        (directory / f"{name}.md").write_text(text)


def daemon_with_agents(
    daemon_factory: Callable[..., DaemonProcess], port: int, **agents: str
) -> DaemonProcess:
    """A daemon on the scripted server at ``port`` that starts with these agent files."""
    d = daemon_factory(router_config(port), start=False)
    write_agents(d, **agents)
    d.start()
    return d


async def test_agent_that_calls_tools_forever_is_stopped_at_its_limit(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    def script(turn: Turn) -> Reply:
        return Reply(text="again", calls=[("fs.list", {"path": "."})])

    async with scripted(script) as server:
        d = daemon_with_agents(daemon_factory, server.port, looper=LOOPER)
        async with open_client(paths=d.paths) as client:
            with pytest.raises(RemoteError) as info:
                await collect(client, p.Ask(prompt="go", agent="looper", workspace=str(tmp_path)))
    assert info.value.code == "budget_exceeded"
    assert "limit of 3 tool calls" in info.value.message


async def test_delegation_cycle_is_refused(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    def script(turn: Turn) -> Reply:
        if turn.tool_results:
            return Reply(text=f"{turn.agent} got: {turn.tool_results[0]}")
        other = "beta" if turn.agent == "alpha" else "alpha"
        return Reply(calls=[("delegate", {"agent": other, "task": "loop"})])

    async with scripted(script) as server:
        d = daemon_with_agents(daemon_factory, server.port, alpha=CYCLE_A, beta=CYCLE_B)
        async with open_client(paths=d.paths) as client:
            events, answer = await collect(
                client, p.Ask(prompt="go", agent="alpha", workspace=str(tmp_path))
            )
    refused = [e for e in events if isinstance(e, p.ToolCallFinished) and not e.ok]
    assert refused and "delegation cycle refused: alpha -> beta -> alpha" in refused[0].summary
    assert answer.text.startswith("alpha got: beta got: error (bad_request): delegation cycle")


async def test_read_only_turns_are_checkpointed_with_their_results(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    # A turn whose calls only read is not committed before they run, but it and the
    # results are checkpointed once they are in; the final turn is not checkpointed.
    def script(turn: Turn) -> Reply:
        if len(turn.tool_results) < 2:
            return Reply(calls=[("fs.list", {"path": "."}), ("fs.list", {"path": "."})])
        return Reply(text="listed", chunks=1)

    async with scripted(script) as server:
        d = daemon_with_agents(
            daemon_factory,
            server.port,
            looper=LOOPER.replace("max_tool_calls = 3", "max_tool_calls = 10"),
        )
        async with open_client(paths=d.paths) as client:
            # The first task opens the tenant's database (its record goes through the
            # memory actor's mailbox); the second finds it open (every write is submitted
            # to the group commit at once, with no task of the memory actor).
            details = []
            for prompt in ("go", "again"):
                _, answer = await collect(
                    client, p.Ask(prompt=prompt, agent="looper", workspace=str(tmp_path))
                )
                assert answer.text == "listed"
                details.append(await client.call(p.TaskShowOp(task=answer.task)))
    for detail in details:
        assert detail.task.status == "done"
        kinds = sorted(
            (item["step"].split(":", 1)[1].split(":")[0], item["kind"])
            for item in detail.transcript
        )
        assert kinds == [("call", "tool")] * 2 + [("model", "model")]
        assert all(item["ok"] for item in detail.transcript if item["kind"] == "tool")


async def test_a_conversation_continues_with_its_history_once(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    seen: list[list[tuple[str, str]]] = []

    def script(turn: Turn) -> Reply:
        seen.append([(m["role"], m.get("content") or "") for m in turn.messages[1:]])
        return Reply(text=f"answer to {turn.task}", chunks=1)

    async with scripted(script) as server:
        d = daemon_factory(router_config(server.port))
        async with open_client(paths=d.paths) as client:
            first = await client.call(p.Ask(prompt="one", agent="writer", workspace=str(tmp_path)))
            second = await client.call(
                p.Ask(
                    prompt="two",
                    agent="writer",
                    conversation=first.conversation,
                    workspace=str(tmp_path),
                )
            )
    assert second.conversation == first.conversation
    assert seen[0] == [("user", "one")]
    assert seen[1] == [("user", "one"), ("assistant", "answer to one"), ("user", "two")]


async def test_task_past_its_time_limit_is_cancelled_cleanly(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    def script(turn: Turn) -> Reply:
        return Reply(text="very slow words " * 20, chunks=20, delay=0.2)

    async with scripted(script) as server:
        config = router_config(server.port) + "\n[orchestrator]\ntask_timeout = 0.6\n"
        d = daemon_factory(config)
        async with open_client(paths=d.paths) as client:
            with pytest.raises(RemoteError) as info:
                await collect(client, p.Ask(prompt="go", agent="writer", workspace=str(tmp_path)))
            assert info.value.code == "timeout"
            assert "time limit of 0.6 s" in info.value.message
            tasks = await client.call(p.TaskListOp())
            assert tasks.tasks[0].status == "failed"
            assert (await client.call(p.Ping())).pid == d.proc.pid  # type: ignore[union-attr]


SLOWPOKE = """+++
name = "slowpoke"
description = "an agent with a short time limit"
[limits]
timeout = 0.5
+++
You are slowpoke.
"""


async def test_root_agent_past_its_own_time_limit_fails_with_its_name(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """The root agent's limit is shorter than the task's: the agent's limit ends the task,
    and the error names the agent."""

    def script(turn: Turn) -> Reply:
        return Reply(text="very slow words " * 20, chunks=20, delay=0.2)

    async with scripted(script) as server:
        d = daemon_with_agents(daemon_factory, server.port, slowpoke=SLOWPOKE)
        async with open_client(paths=d.paths) as client:
            with pytest.raises(RemoteError) as info:
                await collect(client, p.Ask(prompt="go", agent="slowpoke", workspace=str(tmp_path)))
            assert info.value.code == "timeout"
            assert "agent slowpoke exceeded its time limit of 0.5 s" in info.value.message
            tasks = await client.call(p.TaskListOp())
            assert tasks.tasks[0].status == "failed"


async def test_model_without_tool_support_answers_directly_and_says_so(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    seen_tools: list[list[str]] = []

    def script(turn: Turn) -> Reply:
        seen_tools.append(turn.tools)
        return Reply(text="A direct answer.")

    async with scripted(script) as server:
        d = daemon_factory(router_config(server.port, tools=False))
        async with open_client(paths=d.paths) as client:
            events, answer = await collect(client, p.Ask(prompt="hi", workspace=str(tmp_path)))
    assert answer.text == "A direct answer."
    assert seen_tools == [[]]
    notices = [e for e in events if isinstance(e, p.Notice)]
    assert notices and "no tool support" in notices[0].message


async def test_cancelling_the_request_cancels_every_agent_and_records_it(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    def script(turn: Turn) -> Reply:
        if turn.agent == "ali" and not turn.tool_results:
            return Reply(
                calls=[
                    ("delegate", {"agent": "writer", "task": "slow"}),
                    ("delegate", {"agent": "analyst", "task": "slow"}),
                ]
            )
        return Reply(text="slow words " * 50, chunks=50, delay=0.1)

    async with scripted(script) as server:
        d = daemon_factory(router_config(server.port))
        async with open_client(paths=d.paths) as client:
            async with client.stream(p.Ask(prompt="go", workspace=str(tmp_path))) as stream:
                async for event in stream:
                    if isinstance(event, p.TokenDelta) and event.agent in ("writer", "analyst"):
                        await client._send(p.Cancel(id=stream.id))
                        break
                with pytest.raises(RemoteError) as info:
                    async for _ in stream:
                        pass
            assert info.value.code == "cancelled"
            with trio.fail_after(10):
                while True:
                    tasks = (await client.call(p.TaskListOp())).tasks
                    if tasks and tasks[0].status == "cancelled":
                        break
                    await trio.sleep(0.05)
            # Usage of the calls made so far is recorded.
            usage = await client.call(p.UsageReport(by="agent"))
            assert "ali" in json.dumps(p.to_builtins(usage))


def append_script(turn: Turn) -> Reply:
    if turn.agent == "ali":
        if not turn.tool_results:
            return Reply(calls=[("delegate", {"agent": "coder", "task": "append twice"})])
        return Reply(text="all done: " + turn.tool_results[0])
    done = len(turn.tool_results)
    if done < 2:
        return Reply(calls=[("shell.exec", {"command": f"echo step{done} >> log.txt"})])
    return Reply(text="appended", chunks=1, delay=0.0)


async def test_sigkill_mid_task_then_resume_runs_each_side_effect_once(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:

    killed = {"done": False}
    users: list[int] = []

    def script(turn: Turn) -> Reply:
        users.append(sum(1 for m in turn.messages if m["role"] == "user"))
        # The coder's second turn (after its first append) waits until the daemon is killed.
        if turn.agent == "coder" and len(turn.tool_results) == 1 and not killed["done"]:
            return Reply(text="thinking " * 100, chunks=100, delay=0.2)
        return append_script(turn)

    config = '\n[tools.policy]\n"shell.exec" = "auto"\n'
    async with scripted(script) as server:
        d = daemon_factory(router_config(server.port) + config)
        async with open_client(paths=d.paths) as client:
            with pytest.raises(ClientTimeout):  # the daemon dies under us
                with trio.fail_after(30):
                    async with client.stream(
                        p.Ask(prompt="go", workspace=str(tmp_path)), timeout=3
                    ) as stream:
                        async for event in stream:
                            if (
                                isinstance(event, p.TokenDelta)
                                and event.agent == "coder"
                                and (tmp_path / "log.txt").exists()
                            ):
                                os.kill(d.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
                                d.proc.wait(10)  # type: ignore[union-attr]
                                killed["done"] = True
        assert killed["done"]
        assert (tmp_path / "log.txt").read_text() == "step0\n"
        d.start()
        async with open_client(paths=d.paths) as client:
            tasks = (await client.call(p.TaskListOp())).tasks
            assert tasks[0].status == "interrupted"
            detail = await client.call(p.TaskShowOp(task=tasks[0].task))
            assert any(item["kind"] == "tool" for item in detail.transcript)
            _, answer = await collect(
                client, p.TaskResume(task=tasks[0].task, workspace=str(tmp_path))
            )
            assert answer.resumed and answer.text == "all done: appended"
            assert (await client.call(p.TaskListOp())).tasks[0].status == "done"
    assert (tmp_path / "log.txt").read_text() == "step0\nstep1\n"
    # The resumed turns saw the request once (not again from the conversation's history).
    assert users and set(users) == {1}


def test_agents_list_and_show_through_the_cli(daemon: DaemonProcess) -> None:
    listing = daemon.cli("agents", "list")
    assert listing.returncode == 0, listing.stderr
    assert "ali" in listing.stdout and "coder" in listing.stdout
    shown = json.loads(daemon.cli("agents", "show", "ali", "--json").stdout)
    assert "delegate" in shown["tools"] and shown["limits"]["max_steps"] >= 1
    missing = daemon.cli("agents", "show", "nobody")
    assert missing.returncode == 1 and "not_found" in missing.stderr


def test_reload_picks_up_a_new_agent_and_refuses_a_broken_default(daemon: DaemonProcess) -> None:
    before = json.loads(daemon.cli("agents", "list", "--json").stdout)
    assert "poet" not in {a["name"] for a in before["agents"]}
    write_agents(daemon, poet=LOOPER.replace("looper", "poet"))
    reload = daemon.cli("daemon", "reload")
    assert reload.returncode == 0, reload.stderr
    after = json.loads(daemon.cli("agents", "list", "--json").stdout)
    assert "poet" in {a["name"] for a in after["agents"]}
    daemon.write_config('[orchestrator]\ndefault_agent = "nobody"\n')
    refused = daemon.cli("daemon", "reload")
    assert refused.returncode == 1
    assert "orchestrator.default_agent" in refused.stderr
    assert daemon.cli("agents", "show", "poet").returncode == 0


async def test_an_ask_whose_records_cannot_be_written_fails_cleanly(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """The tenant's database fills up: a task's records fail at their commit (the end of
    the task is submitted behind its first record before that commits). The ask fails with
    ``unavailable`` (not a hang, not an answer), no failed ask is recorded done, and the
    daemon serves on."""
    async with scripted(lambda turn: Reply(text="an answer to keep " * 20)) as server:
        config = router_config(server.port) + "\n[memory]\nmax_db_mib = 1\n"
        d = daemon_factory(config)
        async with open_client(paths=d.paths) as client:

            async def ask(n: int) -> None:
                await collect(
                    client, p.Ask(prompt=f"ask {n}", agent="writer", workspace=str(tmp_path))
                )

            with pytest.raises(RemoteError) as full:
                for i in range(5000):
                    await client.call(p.MemoryRemember(text=f"{i} " + "filler " * 400))
            assert full.value.code == "unavailable"
            with pytest.raises(RemoteError) as info:
                for n in range(2000):  # until the asks' own records no longer fit
                    await ask(n)
            assert info.value.code == "unavailable", info.value.message
            done = sum(
                t.status == "done" for t in (await client.call(p.TaskListOp(limit=1000))).tasks
            )
            for n in range(2):
                with pytest.raises(RemoteError) as info:
                    await ask(10_000 + n)
                assert info.value.code == "unavailable", info.value.message
            tasks = (await client.call(p.TaskListOp(limit=1000))).tasks
            assert sum(t.status == "done" for t in tasks) == done
            assert (await client.call(p.Ping())).pid == d.proc.pid  # type: ignore[union-attr]


async def test_a_task_whose_own_record_fails_alone_is_recorded_failed_not_done(
    daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """The task's first record (with the user's message) fails while its end (with the
    answer) commits: the end is submitted before the record has committed. The ask fails,
    and the task is recorded failed after its end, not left done."""
    import apsw

    async with scripted(lambda turn: Reply(text="fine")) as server:
        d = daemon_factory(router_config(server.port))
        async with open_client(paths=d.paths) as client:
            ok = await collect(
                client, p.Ask(prompt="warm", agent="writer", workspace=str(tmp_path))
            )
            assert ok[1].text == "fine"
            # A database that refuses this one message (a trigger the test adds).
            con = apsw.Connection(str(d.paths.data_dir / "tenants" / "local.db"))
            con.execute(
                "CREATE TRIGGER poison BEFORE INSERT ON messages"
                " WHEN NEW.role = 'user' AND NEW.content = 'poison'"
                " BEGIN SELECT RAISE(ABORT, 'poisoned message'); END"
            )
            con.close()
            with pytest.raises(RemoteError):
                await collect(
                    client, p.Ask(prompt="poison", agent="writer", workspace=str(tmp_path))
                )
            tasks = (await client.call(p.TaskListOp())).tasks
            poisoned = [t for t in tasks if t.request == "poison"]
            assert [t.status for t in poisoned] == ["failed"], poisoned
            assert (await client.call(p.Ping())).pid == d.proc.pid  # type: ignore[union-attr]
