"""The router actor: every model call in the system goes through it.

Providers (OpenAI-compatible chat completions, Anthropic messages, the embedded llama.cpp
model) behind one streaming interface; model groups with ordered fallbacks, retries with
backoff and jitter, per-deployment cooldowns, first-token/idle/total timeouts; token
estimates before a call and real usage after it; prices, a usage ledger in the memory actor,
budgets per tenant and agent with warn/downgrade/block.

API for other actors (the orchestrator)
---------------------------------------
An actor named ``"router"`` takes a ``messages.Chat`` carrying the send half of a Trio memory
channel; the router streams ``ChatEvent`` values into it (``TextDelta``, ``ToolCallDelta``,
``ToolCallDone``, ``Usage``) and ends with exactly one terminal event (``Finished(result)`` or
``Failed(code, message, retry_after, partial)``), then closes it. Output that arrived together
(one network read) comes merged: one ``TextDelta`` for its text, one ``ToolCallDelta`` per
run of fragments of one tool call; nothing is ever held back to wait for more. Use
``client.open_chat(ref, tenant=..., request_id=..., messages=..., agent=..., model=...,
tools=...)``, an async context manager yielding an async iterator of those events.

Faster, for a caller that handles each event as it comes (the ``model.chat`` op does):
``client.run_chat(ref, on_event, tenant=..., ...)`` takes an async callback and returns the
terminal event. It runs the call on the caller's own task (``ask_now(ChatSlot())`` hands
out a ``ChatLease``): no worker, no channel, no scheduler trip between a network read and
the callback; cancelling the caller stops the upstream call. Past ``concurrency`` calls in
flight (the bound both paths share) it goes through the mailbox instead. The usage ledger
is written by a task of the actor after the call returns (``Actor.start_soon``), so the
caller answers first; the budget counters are updated before it returns.

Why a channel in the message: the caller's task and the router's worker run concurrently,
so output reaches the caller the moment it arrives (one in-process channel hop, no
serialisation), back-pressure is the channel's buffer, and closing the receive side cancels
the upstream request. The actor keeps the shared state — connection pool, cooldowns, budget
counters, the loaded local model — so every caller sees the same cooldowns and budgets.

Other messages: ``ListModels`` → ``ModelList``, ``BudgetShow`` → ``list[BudgetLine]``,
``BudgetSet`` → ``BudgetLine``, memory's ``UsageQuery`` → ``list[UsageRow]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convergiod.runtime import ChildSpec

if TYPE_CHECKING:
    from convergiod.daemon import Daemon


def child_spec(daemon: Daemon) -> ChildSpec:
    from convergiod.actors.router.actor import RouterActor

    store = daemon.paths.data_dir / "router-budgets.json"

    def start() -> RouterActor:
        # daemon.config, read at each (re)start: a reload may have changed it.
        return RouterActor(daemon.config.router, budget_store=store, publish=daemon.publish)

    return ChildSpec(name="router", start=start, shutdown=5.0, mailbox_size=4096)
