"""Context for the root agent of a task: the conversation so far and the facts memory finds
for the request, packed into a token budget measured with the C core's estimate.

Facts come first (they are chosen for this request), then as much recent history as still
fits, newest kept first, presented oldest first.
"""

from __future__ import annotations

import logging

from convergiod import native
from convergiod.actors.memory import messages as mem
from convergiod.actors.router import messages as rt
from convergiod.config import OrchestratorConfig
from convergiod.errors import OpError
from convergiod.runtime import ActorRef

log = logging.getLogger("convergiod.orchestrator")


async def build(
    memory: ActorRef,
    *,
    tenant: str,
    conversation: str,
    prompt: str,
    config: OrchestratorConfig,
) -> list[rt.Message]:
    budget = config.context_tokens
    if budget <= 0:
        return []
    out: list[rt.Message] = []
    facts: list[mem.Hit] = []
    history: list[mem.StoredMessage] = []
    try:
        if config.memory_facts:
            facts = await memory.ask(
                mem.Search(tenant=tenant, query=prompt, limit=config.memory_facts), timeout=10.0
            )
        if config.history_messages:
            history = await memory.ask(
                mem.History(
                    tenant=tenant, conversation=conversation, limit=config.history_messages
                ),
                timeout=10.0,
            )
    except OpError as exc:
        # Memory trouble must not stop the user from getting an answer.
        log.warning("context from memory unavailable: %s: %s", exc.code, exc.message)
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
    for stored in reversed(history):
        if stored.role not in ("user", "assistant"):
            continue
        cost = native.estimate_tokens(stored.content) + 4
        if used + cost > budget:
            break
        kept.append(rt.Message(role=stored.role, content=stored.content))  # type: ignore[arg-type]
        used += cost
    out.extend(reversed(kept))
    return out
