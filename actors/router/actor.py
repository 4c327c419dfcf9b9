"""``RouterActor``: the actor named "router"; it owns a ``Router`` (shared state) and runs
each call in one of its worker tasks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import trio

from convergiod.actors.memory.messages import UsageQuery
from convergiod.actors.router.catalog import Catalog
from convergiod.actors.router.core import ChatLease, Router
from convergiod.actors.router.ledger import Ledger
from convergiod.actors.router.messages import (
    BudgetSet,
    BudgetShow,
    Chat,
    ChatSlot,
    ListModels,
    ModelInfo,
    ModelList,
)
from convergiod.config import RouterConfig
from convergiod.runtime import NOT_NOW, Actor
from convergiod.service.reload import Reload

log = logging.getLogger("convergiod.router")

# Usage records of calls that end within this many seconds share one ledger transaction.
LEDGER_BATCH_WINDOW = 0.02

__all__ = ["RouterActor"]


class RouterActor(Actor):
    """Handles ``RouterMessage`` and ``UsageQuery`` (forwarded to the ledger).

    A ``Chat`` occupies one worker for the length of the call. ``ask_now(ChatSlot())`` gives
    a ``ChatLease`` to run a call on the asker's own task instead (no worker, no channel),
    or ``NOT_NOW`` when ``concurrency`` calls are already in flight (then the ``Chat`` goes
    through the mailbox and waits there: back-pressure). Both paths share the bound.
    """

    concurrency: ClassVar[int] = 512
    reloadable: ClassVar[bool] = True

    def __init__(
        self,
        config: RouterConfig,
        *,
        budget_store: Path | None = None,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
        router: Router | None = None,
    ) -> None:
        self._config = config
        self._budget_store = budget_store
        self._publish = publish
        self.router: Router | None = router

    async def started(self) -> None:
        if self.router is None:
            memory = self._memory_ask
            self.router = Router(
                self._config,
                ledger=Ledger(
                    memory, batch_window=LEDGER_BATCH_WINDOW, ask_now=self._memory_ask_now
                ),
                budget_store=self._budget_store,
                publish=self._publish,
                concurrency=self.concurrency,
            )
        self.router.defer = self._defer
        default = self.router.catalog.default
        log.info("router ready: %d models, default %r", len(self.router.catalog.models), default)

    def _defer(self, fn: Callable[[], Any]) -> bool:
        return self.start_soon(fn)

    def handle_now(self, msg: Any) -> Any:
        router = self.router
        if type(msg) is ChatSlot and router is not None:
            try:
                router.slots.acquire_nowait()
            except trio.WouldBlock:
                return NOT_NOW
            return ChatLease(router)
        return NOT_NOW

    def _memory_ask_now(self, msg: Any) -> Any:
        return self.ref("memory").ask_now(msg)

    async def _memory_ask(self, msg: Any) -> Any:
        return await self.ref("memory").ask(msg, timeout=10.0)

    async def stopping(self) -> None:
        if self.router is not None:
            with trio.move_on_after(2.0):
                await self.router.ledger.settle()
            await self.router.aclose()

    async def handle(self, msg: Any) -> Any:
        router = self.router
        assert router is not None
        if type(msg) is Chat:
            slots = router.slots
            try:
                slots.acquire_nowait()
            except trio.WouldBlock:
                await slots.acquire()
            try:
                return await router.chat(msg)
            finally:
                slots.release()
        if isinstance(msg, ListModels):
            return await self._models(router, msg.probe)
        if isinstance(msg, BudgetShow):
            return await router.budgets.show(msg.tenant)
        if isinstance(msg, BudgetSet):
            return await router.budgets.set(msg.tenant, msg.agent, msg.limit)
        if isinstance(msg, UsageQuery):
            return await router.ledger.query(msg)
        if isinstance(msg, Reload):
            # The config was validated when it was parsed (unknown models, groups, agents);
            # building the catalog is all that is left to check.
            Catalog(msg.config.router)
            if not msg.dry_run:
                router.reconfigure(msg.config.router)
            return None
        raise TypeError(f"router cannot handle {type(msg).__name__}")

    async def _models(self, router: Router, probe: bool) -> ModelList:
        from convergiod.actors.router.probe import probe_providers

        catalog = router.catalog
        reach: dict[str, tuple[bool, str]] = {}
        if probe:
            reach = await probe_providers(router)
        out: list[ModelInfo] = []
        for name, dep in catalog.models.items():
            until, failures, last_error = router.cooldowns.snapshot(name)
            if dep.kind == "local":
                available, detail = router.local.available()
                reachable: bool | None = available if probe else None
            else:
                available, detail = (
                    True,
                    dep.provider_config.base_url if dep.provider_config else "",
                )
                reachable, note = reach.get(dep.provider, (None, ""))
                if note:
                    detail = note
            out.append(
                ModelInfo(
                    name=name,
                    provider=dep.provider,
                    kind=dep.kind,
                    upstream=dep.upstream,
                    context_window=dep.context_window,
                    input_price=dep.input_price,
                    output_price=dep.output_price,
                    tools=dep.tools,
                    groups=catalog.groups_of(name),
                    default=name == catalog.default or catalog.default in catalog.groups_of(name),
                    available=available,
                    reachable=reachable,
                    detail=last_error or detail,
                    cooldown_until=until,
                    failures=failures,
                )
            )
        return ModelList(default=catalog.default, models=out)
