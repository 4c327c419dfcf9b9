"""Context for the root agent of a task: the conversation so far and the facts memory finds
for the request, packed into a token budget measured with the C core's estimate.

Facts come first (they are chosen for this request), then as much recent history as still
fits, newest kept first, presented oldest first.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from convergiod import native
from convergiod.actors.memory import messages as mem
from convergiod.actors.router import messages as rt
from convergiod.config import OrchestratorConfig
from convergiod.errors import OpError
from convergiod.runtime import NOT_NOW, ActorRef

log = logging.getLogger("convergiod.orchestrator")


async def build(
    memory: ActorRef,
    *,
    tenant: str,
    conversation: str,
    prompt: str,
    config: OrchestratorConfig,
    history: bool = True,
    resumed: bool = False,
) -> list[rt.Message]:
    """``history=False``: the conversation is new, there is none to read. ``resumed``: the
    task's own request is already in the conversation (written when the task started);
    it is left out, as it was when the task first ran."""
    budget = config.context_tokens
    if budget <= 0:
        return []
    found: dict[str, Any] = {}

    async def ask(key: str, msg: Any) -> None:
        try:
            found[key] = await memory.ask(msg, timeout=10.0)
        except OpError as exc:
            # Memory trouble must not stop the user from getting an answer.
            log.warning("context from memory unavailable: %s: %s", exc.code, exc.message)

    searches: list[tuple[str, Any]] = []
    if config.memory_facts:
        search = mem.Search(tenant=tenant, query=prompt, limit=config.memory_facts)
        try:
            # Answered at once when the tenant has no facts (nothing to read).
            answer = memory.ask_now(search)
        except OpError:
            answer = NOT_NOW  # the mailbox path logs it
        if answer is NOT_NOW:
            searches.append(("facts", search))
        else:
            found["facts"] = answer
    if history and config.history_messages:
        searches.append(
            (
                "history",
                mem.History(
                    tenant=tenant, conversation=conversation, limit=config.history_messages
                ),
            )
        )
    if len(searches) == 1:
        await ask(*searches[0])
    elif searches:
        async with trio.open_nursery() as nursery:
            for key, msg in searches:
                nursery.start_soon(ask, key, msg)
    facts: list[mem.Hit] = found.get("facts", [])
    stored: list[mem.StoredMessage] = found.get("history", [])
    if resumed:
        for i in range(len(stored) - 1, -1, -1):
            if stored[i].role == "user" and stored[i].content == prompt:
                stored = stored[:i] + stored[i + 1 :]
                break
    out: list[rt.Message] = []
    lines: list[str] = []
    used = 0
    for hit in facts:
        line = f"- {hit.fact.text}"
        cost = native.estimate_tokens(line) + 1
        if used + cost > budget // 2:
            break
        lines.append(line)
        used += cost
    if lines:
        out.append(rt.Message(role="system", content="Facts from memory:\n" + "\n".join(lines)))
    kept: list[rt.Message] = []
    for message in reversed(stored):
        if message.role not in ("user", "assistant"):
            continue
        cost = native.estimate_tokens(message.content) + 4
        if used + cost > budget:
            break
        kept.append(rt.Message(role=message.role, content=message.content))  # type: ignore[arg-type]
        used += cost
    out.extend(reversed(kept))
    return out
