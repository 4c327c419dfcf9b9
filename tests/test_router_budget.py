"""Budgets: warn at 80 %, downgrade to the cheapest model of the group at 90 %, block at
100 %; prompts costing more than what remains are refused; a retried request is counted
once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from convergiod.actors.memory.messages import RecordUsage, UsageQuery
from convergiod.actors.router.budget import Budgets
from convergiod.actors.router.ledger import Ledger
from convergiod.actors.router.messages import Failed, Finished
from convergiod.config import RouterBudgetConfig
from tests.llm_server import LLMServer
from tests.router_helpers import FakeMemory, Harness, models

PRICED = models(
    "big=oa:text@big|input_price = 1000.0,output_price = 1000.0",
    "small=an:text@small|input_price = 1.0,output_price = 2.0",
)
GROUP = '[router.groups]\nteam = ["big", "small"]\n'


@pytest.fixture
async def server(nursery: trio.Nursery) -> LLMServer:
    s = LLMServer()
    await nursery.start(s.serve)
    return s


def harness(port: int, spent: float, budgets: str, extra: str = "") -> Harness:
    return Harness(port, PRICED, memory=FakeMemory(spent=spent), extra=GROUP + budgets + extra)


async def test_below_the_warn_threshold_nothing_changes(server: LLMServer) -> None:
    h = harness(server.port, 0.5, "[router.budgets]\ntenant_daily = 1.0\n")
    _, terminal = await h.chat("team")
    assert isinstance(terminal, Finished)
    assert terminal.result.model == "big" and not terminal.result.downgraded
    assert h.events == []


async def test_warn_at_80_percent_publishes_a_usage_event_once(server: LLMServer) -> None:
    h = harness(server.port, 0.85, "[router.budgets]\ntenant_daily = 1.0\n")
    for _ in range(2):
        _, terminal = await h.chat("team")
        assert isinstance(terminal, Finished) and terminal.result.model == "big"
    assert len(h.events) == 1
    topic, data = h.events[0]
    assert topic == "usage.t1"
    assert data["level"] == "warn" and data["scope"] == "tenant"
    assert data["fraction"] == pytest.approx(0.85)


async def test_downgrade_at_90_percent_uses_the_cheapest_model_of_the_group(
    server: LLMServer,
) -> None:
    h = harness(server.port, 0.92, "[router.budgets]\ntenant_daily = 1.0\n")
    _, terminal = await h.chat("team")
    assert isinstance(terminal, Finished)
    assert terminal.result.model == "small" and terminal.result.downgraded
    assert server.counts.get("text@big", 0) == 0
    assert [d["level"] for _, d in h.events] == ["downgrade"]


async def test_block_at_100_percent_refuses_without_calling_anyone(server: LLMServer) -> None:
    h = harness(server.port, 1.0, "[router.budgets]\ntenant_daily = 1.0\n")
    _, terminal = await h.chat("team")
    assert isinstance(terminal, Failed) and terminal.code == "budget_exceeded"
    assert "tenant" in terminal.message
    assert server.requests == []


async def test_agent_budget_blocks_that_agent_only(server: LLMServer) -> None:
    h = harness(server.port, 0.0, "[router.budgets]\nagents = { coder = 0.5 }\n")
    h.memory.base_spent = 0.6  # every scope reads as 0.6 spent today
    _, terminal = await h.chat("team", agent="coder")
    assert isinstance(terminal, Failed) and terminal.code == "budget_exceeded"
    assert "agent:coder" in terminal.message
    _, terminal = await h.chat("team", agent="writer")
    assert isinstance(terminal, Finished)


async def test_prompt_costing_more_than_the_remaining_budget_is_refused(
    server: LLMServer,
) -> None:
    h = harness(server.port, 0.79, "[router.budgets]\ntenant_daily = 1.0\n")
    _, terminal = await h.chat("big", content="lorem ipsum dolor sit amet " * 60)
    assert isinstance(terminal, Failed) and terminal.code == "budget_exceeded"
    assert "remaining budget" in terminal.message
    assert server.requests == []


async def test_spending_accumulates_until_the_block_threshold(server: LLMServer) -> None:
    # "big" costs (21 + 5) * 1000 / 1e6 = 0.026 per call
    h = harness(server.port, 0.0, "[router.budgets]\ntenant_daily = 0.06\n")
    outcomes = []
    for _ in range(4):
        _, terminal = await h.chat("big")
        outcomes.append(terminal.code if isinstance(terminal, Failed) else "ok")
    assert outcomes == ["ok", "ok", "ok", "budget_exceeded"]
    assert await h.router.budgets.spent("t1", None) == pytest.approx(0.078)


async def test_a_retried_request_is_counted_once(server: LLMServer) -> None:
    h = Harness(
        server.port,
        models("m=oa:status;code=429;times=2;retry_after=0@r|input_price = 1000.0"),
        extra="[router.budgets]\ntenant_daily = 10.0\n",
    )
    _, terminal = await h.chat("m", request_id="req-once")
    assert isinstance(terminal, Finished) and terminal.result.attempts == 3
    assert len(h.memory.records) == 1
    assert h.memory.records[0].request_id == "req-once"
    spent = await h.router.budgets.spent("t1", None)
    assert spent == pytest.approx(21 * 1000 / 1e6)
    # The same request id again (a caller retrying the whole call) is not counted again.
    _, terminal = await h.chat("m", request_id="req-once")
    assert isinstance(terminal, Finished)
    assert await h.router.budgets.spent("t1", None) == pytest.approx(spent)
    assert len(h.memory.ledger.rows) == 1


async def test_budget_set_persists_and_overrides_the_config(tmp_path: Path) -> None:
    store = tmp_path / "budgets.json"
    config = RouterBudgetConfig(tenant_daily=5.0)
    budgets = Budgets(config, Ledger(FakeMemory(spent=1.0).ask), store=store)
    line = await budgets.set("t1", None, 2.0)
    assert (line.scope, line.limit, line.spent, line.state) == ("tenant", 2.0, 1.0, "ok")
    await budgets.set("t1", "coder", 0.5)
    again = Budgets(config, Ledger(FakeMemory(spent=1.0).ask), store=store)
    lines = await again.show("t1")
    assert [(x.scope, x.limit, x.state) for x in lines] == [
        ("tenant", 2.0, "ok"),
        ("agent:coder", 0.5, "block"),
    ]


async def test_checks_see_a_new_limit_and_a_new_config_at_once(tmp_path: Path) -> None:
    """The limits a check uses are kept between checks: ``set`` and a new configuration
    (a reload) replace them before the next check."""
    budgets = Budgets(RouterBudgetConfig(), Ledger(FakeMemory(spent=1.0).ask))
    assert (await budgets.check("t1", "coder")).state == "none"  # no budget at all
    await budgets.set("t1", "coder", 1.05)
    decision = await budgets.check("t1", "coder")
    assert (decision.state, decision.scope) == ("downgrade", "agent:coder")
    budgets.config = RouterBudgetConfig(tenant_daily=1.0)
    decision = await budgets.check("t1", "coder")
    assert (decision.state, decision.scope) == ("block", "tenant")
    budgets.config = RouterBudgetConfig()
    assert (await budgets.check("t1", "coder")).scope == "agent:coder"
    assert (await budgets.check("t1", "writer")).state == "none"


def _usage(request_id: str, cost: float = 0.5) -> RecordUsage:
    return RecordUsage(
        tenant="t1", request_id=request_id, model="m", provider="p", cost=cost, time=0.0
    )


async def test_ledger_batches_records_that_end_close_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = FakeMemory()
    arrivals: list[tuple[float, str]] = []

    async def ask(msg: object) -> object:
        if isinstance(msg, RecordUsage):
            arrivals.append((trio.current_time(), msg.request_id))
        return await memory.ask(msg)

    ledger = Ledger(ask, batch_window=0.05)
    results: list[tuple[str, bool]] = []

    async def record(request_id: str, after: float) -> None:
        await trio.sleep(after)
        results.append((request_id, await ledger.record(_usage(request_id))))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i, after in enumerate([0.0, 0.01, 0.03, 0.2]):
            nursery.start_soon(record, f"r{i}", after)
        nursery.start_soon(record, "r0", 0.04)  # the same request again: not counted twice
    # r0..r2 (and the repeat) went together at the end of the first window; r3 alone later.
    times = sorted({round(t - start, 3) for t, _ in arrivals})
    assert times == [0.05, 0.25]
    assert sorted(results) == [
        ("r0", False),
        ("r0", True),
        ("r1", True),
        ("r2", True),
        ("r3", True),
    ]
    assert sorted(memory.ledger.rows) == [("t1", "r0"), ("t1", "r1"), ("t1", "r2"), ("t1", "r3")]


async def test_ledger_reads_send_waiting_records_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = FakeMemory()
    ledger = Ledger(memory.ask, batch_window=10.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ledger.record, _usage("a", 0.25))
        await trio.sleep(0.001)
        start = trio.current_time()
        assert await ledger.spent("t1", None, 0.0) == pytest.approx(0.25)
        rows = await ledger.query(UsageQuery(tenant="t1", by="model"))
        assert [(r.key, r.calls) for r in rows] == [("m", 1)]
        assert trio.current_time() - start < 1.0  # did not wait out the window
        await ledger.settle()  # nothing pending: returns at once


async def test_record_soon_submits_without_a_task_per_record_and_reports_duplicates() -> None:
    from convergiod.runtime import Pending

    submitted: list[tuple[Any, Pending]] = []

    def ask_now(msg: Any) -> Pending:
        pending = Pending()
        submitted.append((msg, pending))
        return pending

    async def ask(msg: Any) -> Any:
        raise AssertionError("the mailbox path is not taken")

    ledger = Ledger(ask, batch_window=0.01, ask_now=ask_now)
    duplicates: list[str] = []
    spawned: list[Any] = []
    async with trio.open_nursery() as nursery:

        def spawn(fn: Any) -> bool:
            spawned.append(fn)
            nursery.start_soon(fn)
            return True

        for rid in ("a", "b", "c"):
            record = _usage(rid)
            assert ledger.record_soon(record, lambda rid=rid: duplicates.append(rid), spawn)
        assert len(spawned) == 1  # one task for the batch
        settled = trio.Event()

        async def settle() -> None:
            await ledger.settle()
            settled.set()

        nursery.start_soon(settle)  # sends the batch now, then waits for the answers
        await trio.testing.wait_all_tasks_blocked()
        assert len(submitted) == 3 and not settled.is_set()
        for msg, pending in submitted:
            pending.resolve(msg.request_id != "b")  # "b" was already in the ledger
        await settled.wait()
    assert duplicates == ["b"]
    assert not ledger.record_soon(_usage("d"), lambda: None, None)  # no task: refused


def test_prompt_estimates_kept_by_identity_match_fresh_ones() -> None:
    """``estimate_prompt`` keeps the estimates of long texts and tool lists by identity (an
    agent sends the same objects every turn): a hit gives what a fresh estimate gives, and
    another object with other content is never taken for a cached one."""
    from convergiod import native
    from convergiod.actors.router.core import estimate_prompt
    from convergiod.actors.router.messages import Chat, Message, ToolSpec

    system = "You plan, delegate and converge. " * 40
    tools = [ToolSpec(name=f"t{i}", description="reads a file " * 5) for i in range(5)]

    def chat(text: str, specs: list[ToolSpec]) -> Chat:
        return Chat(
            tenant="local",
            request_id="r",
            messages=[Message(role="system", content=text), Message(role="user", content="hi")],
            tools=specs,
            stream_to=None,
        )

    def fresh(text: str, specs: list[ToolSpec]) -> int:
        encoded = native.estimate_tokens(msgspec.json.encode(specs))
        return native.estimate_tokens(text) + native.estimate_tokens("hi") + 8 + encoded

    first = estimate_prompt(chat(system, tools))
    assert first == fresh(system, tools) == estimate_prompt(chat(system, tools))  # cached
    other_text = system.replace("plan", "write code")  # another string, another estimate
    other_tools = tools[:2]
    assert estimate_prompt(chat(other_text, other_tools)) == fresh(other_text, other_tools)
    assert estimate_prompt(chat(other_text, other_tools)) != first
