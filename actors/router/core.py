"""``Router``: one model call from target resolution to usage recording.

The steps of ``Router.chat``:

1. Resolve the target (model or group; else the agent's preference, ``router.default``, the
   embedded model) to deployments in fallback order.
2. Estimate the prompt's tokens with the C core; drop deployments whose context window it
   does not fit (none left: ``bad_request``); prefer tool-capable ones when tools are given.
3. Budgets: ``block`` → ``budget_exceeded``; ``downgrade`` → the cheapest model of the group
   first; ``warn`` → an event ``usage.<tenant>`` and a log line. A prompt whose estimated
   input cost exceeds what remains is refused (``budget_exceeded``).
4. For each deployment not in cooldown: attempts with retries and backoff (see
   ``reliability``), each under a watchdog for the first-token, idle and total timeouts.
   Once any output reached the caller a failure ends the stream (``Failed(partial=True)``):
   nothing is ever replayed.
5. Usage (real, or estimated when the provider sent none), cost from the price table; the
   terminal event goes out first, then the ledger records the call once per request id.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from convergiod import native
from convergiod.actors.memory.messages import RecordUsage
from convergiod.actors.router.budget import Budgets
from convergiod.actors.router.catalog import Catalog, Deployment
from convergiod.actors.router.http import HttpClient
from convergiod.actors.router.identity import IdentityCache
from convergiod.actors.router.ledger import Ledger
from convergiod.actors.router.messages import (
    Chat,
    ChatResult,
    Failed,
    Finished,
    Message,
    Terminal,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    Usage,
)
from convergiod.actors.router.providers import Outcome, Provider, ProviderRequest
from convergiod.actors.router.providers.anthropic import AnthropicProvider
from convergiod.actors.router.providers.local import LocalEngine
from convergiod.actors.router.providers.openai import OpenAIProvider
from convergiod.actors.router.reliability import Backoff, Cooldowns, ProviderError
from convergiod.config import RouterConfig

log = logging.getLogger("convergiod.router")

__all__ = ["ChatLease", "ClientGone", "Deliver", "Router", "channel_deliver", "estimate_prompt"]


@dataclass(frozen=True, slots=True)
class _Timeouts:
    first_token_timeout: float = 120.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0


_LOCAL_TIMEOUTS = _Timeouts()
_MESSAGE_OVERHEAD = 4  # role and separators per message, as chat templates add


def estimate_prompt(chat: Chat) -> int:
    """Estimated input tokens: every message plus the tool schemas (C core). An agent's
    turns resend the messages of the turns before (the same objects): estimates are kept
    by identity (``IdentityCache``)."""
    total = sum(map(_message_tokens, chat.messages))
    if chat.tools:
        total += _tool_tokens(chat.tools)
    return total


_CACHED_TEXT = 512  # shorter texts cost less to estimate than to look up
_long_text_tokens = IdentityCache(native.estimate_tokens)


def _text_tokens(text: str) -> int:
    if len(text) < _CACHED_TEXT:
        return native.estimate_tokens(text)
    return _long_text_tokens(text)


def _count_message(m: Message) -> int:
    n = _text_tokens(m.content) + _MESSAGE_OVERHEAD
    for call in m.tool_calls:
        n += native.estimate_tokens(call.name) + native.estimate_tokens(call.arguments)
    return n


_message_tokens = IdentityCache(_count_message)
_tool_tokens: IdentityCache[list[Any], int] = IdentityCache(
    lambda tools: native.estimate_tokens(msgspec.json.encode(tools))
)


#: Where a call's events go: awaited once per event; raises ``ClientGone`` when the caller
#: has stopped listening (the upstream call then stops).
Deliver = Callable[[Any], Awaitable[None]]


def channel_deliver(out: trio.MemorySendChannel[Any]) -> Deliver:
    """``Deliver`` into a Trio memory channel (the mailbox path, ``Chat.stream_to``). No trip
    through the scheduler while the channel has room: the caller's receive is the
    checkpoint."""
    send_nowait = out.send_nowait

    async def deliver(event: Any) -> None:
        try:
            send_nowait(event)
        except trio.WouldBlock:
            try:
                await out.send(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ClientGone() from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ClientGone() from None

    return deliver


async def _deliver_quietly(deliver: Deliver, event: Any) -> None:
    """Deliver ``event`` if the caller still listens."""
    try:
        await deliver(event)
    except ClientGone:
        pass


#: Hands a coroutine function to some task to run later; False if it cannot.
Defer = Callable[[Callable[[], Awaitable[None]]], bool]


class ClientGone(Exception):
    """The caller closed its end of the stream: stop the upstream call."""


class _Watchdog:
    """One cancel scope whose deadline tracks the first-token, idle and total timeouts.

    Moving a cancel scope's deadline costs a trip through Trio's deadline heap, and a stream
    has activity for every read. So the deadline is moved only when it is out of
    ``[last activity + idle, last activity + idle + slack]``: the idle timeout fires between
    ``idle`` and ``idle + slack`` seconds without activity (slack: 5% of it, at most a
    second); the first-token and total timeouts stay exact.
    """

    __slots__ = ("deadline", "first", "got_token", "idle", "scope", "slack", "total")

    def __init__(self, scope: trio.CancelScope, t: Any, now: float | None = None) -> None:
        if now is None:
            now = trio.current_time()
        self.scope = scope
        self.idle = t.idle_timeout
        self.slack = min(1.0, 0.05 * self.idle)
        self.total = now + t.total_timeout
        self.first = now + t.first_token_timeout
        self.got_token = False
        self.deadline = min(self.first, self.total)
        if scope.deadline != self.deadline:  # moving it costs a trip through the heap
            scope.deadline = self.deadline

    def activity(self) -> None:
        need = trio.current_time() + self.idle
        cap = self.total if self.got_token else min(self.first, self.total)
        deadline = self.deadline
        if need >= cap:
            if deadline != cap:
                self.deadline = self.scope.deadline = cap
        elif not need <= deadline <= need + self.slack:
            self.deadline = self.scope.deadline = min(need + self.slack, cap)

    def token(self) -> None:
        self.got_token = True
        self.activity()

    def which(self) -> str:
        now = trio.current_time()
        if now >= self.total:
            return "total"
        if not self.got_token and now >= self.first:
            return "first-token"
        return "idle"


class _ToolAcc:
    __slots__ = ("arguments", "done", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []
        self.done = False


class _Stream:
    """The ``Sink`` of one attempt: queues a batch of output, then forwards it to the
    caller (``flush``, through its ``Deliver``) merged — one ``TextDelta`` per run of text, one
    ``ToolCallDelta`` per run of fragments of one call — and keeps all of it."""

    __slots__ = (
        "_flushed",
        "_pending",
        "_token",
        "crowded",
        "deliver",
        "order",
        "streamed",
        "text_parts",
        "tools",
        "watchdog",
    )

    def __init__(self, deliver: Deliver, crowded: Callable[[], bool] = bool) -> None:
        self.deliver = deliver
        self.crowded = crowded
        self.watchdog: _Watchdog | None = None
        self.text_parts: list[str] = []
        self.tools: dict[int, _ToolAcc] = {}
        self.order: dict[int, int] = {}  # provider key -> dense index
        self.streamed = False
        # Queued output, in order: a list of str (a run of text), a _Frag (a run of
        # fragments of one tool call) or a ToolCallDone.
        self._pending: list[Any] = []
        self._token = False  # the queued output counts as a token for the watchdog
        self._flushed = False  # some output went out already

    def activity(self) -> None:
        if self.watchdog is not None:
            self.watchdog.activity()

    def text(self, text: str) -> None:
        self.streamed = True
        self._token = True
        self.text_parts.append(text)
        pending = self._pending
        if pending and type(pending[-1]) is list:
            pending[-1].append(text)
        else:
            pending.append([text])

    def tool_delta(self, key: int, *, id: str | None, name: str | None, arguments: str) -> None:
        if not (id or name or arguments) and key in self.order:
            return  # an empty fragment (Anthropic opens with partial_json "")
        self.streamed = True
        self._token = True
        index = self.order.get(key)
        if index is None:
            index = self.order[key] = len(self.order)
            self.tools[index] = _ToolAcc()
        acc = self.tools[index]
        if id:
            acc.id = id
        if name:
            acc.name = name
        if arguments:
            acc.arguments.append(arguments)
        pending = self._pending
        last = pending[-1] if pending else None
        if type(last) is _Frag and last.index == index:
            last.id = last.id or id
            last.name = last.name or name
            last.arguments.append(arguments)
        else:
            pending.append(_Frag(index, id, name, arguments))

    def tool_done(self, key: int) -> None:
        index = self.order.get(key)
        if index is None or self.tools[index].done:
            return
        acc = self.tools[index]
        acc.done = True
        call = ToolCall(id=acc.id, name=acc.name, arguments="".join(acc.arguments))
        self._pending.append(ToolCallDone(index=index, call=call))

    def urgent(self) -> bool:
        return not self._flushed and bool(self._pending)

    async def flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._flushed = True
        if self._token:
            self._token = False
            if self.watchdog is not None:
                self.watchdog.token()
        deliver = self.deliver
        for item in pending:
            kind = type(item)
            if kind is list:
                event: Any = TextDelta(item[0] if len(item) == 1 else "".join(item))
            elif kind is _Frag:
                event = ToolCallDelta(
                    index=item.index,
                    id=item.id,
                    name=item.name,
                    arguments="".join(item.arguments),
                )
            else:
                event = item
            await deliver(event)

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=a.id, name=a.name, arguments="".join(a.arguments))
            for _, a in sorted(self.tools.items())
        ]

    def output_estimate(self) -> int:
        text = "".join(self.text_parts)
        args = "".join("".join(a.arguments) + a.name for a in self.tools.values())
        return native.estimate_tokens(text) + native.estimate_tokens(args)


class _Frag:
    """Queued fragments of one tool call, merged into one ``ToolCallDelta``."""

    __slots__ = ("arguments", "id", "index", "name")

    def __init__(self, index: int, id: str | None, name: str | None, arguments: str) -> None:
        self.index = index
        self.id = id
        self.name = name
        self.arguments = [arguments]


class Router:
    """Shared state of all calls: providers and their connection pool, cooldowns, budgets."""

    def __init__(
        self,
        config: RouterConfig,
        *,
        ledger: Ledger,
        budget_store: Any = None,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = trio.sleep,
        http: HttpClient | None = None,
        local: LocalEngine | None = None,
        concurrency: int = 512,
        defer: Defer | None = None,
    ) -> None:
        self.config = config
        #: Calls in flight, on either path (``chat`` in a worker, ``chat_here`` on the
        #: caller's task): at most ``concurrency``.
        self.slots = trio.Semaphore(concurrency)
        self._concurrency = concurrency
        self.catalog = Catalog(config)
        self.http = http or HttpClient()
        self.defer = defer
        self.local = local or LocalEngine(config.local)
        self.ledger = ledger
        self.budgets = Budgets(
            config.budgets, ledger, store=budget_store, clock=clock, publish=publish
        )
        self.backoff = Backoff(
            base=config.backoff_base,
            maximum=config.backoff_max,
            retry_after_max=config.retry_after_max,
            rng=rng,
        )
        self.cooldowns = Cooldowns(config.cooldown_failures, config.cooldown, clock)
        self.clock = clock
        self.sleep = sleep
        self._providers: dict[str, Provider] = {}

    @property
    def defer(self) -> Defer | None:
        """Runs a coroutine function off the caller's path (a task of the actor,
        ``Actor.start_soon``); False if it cannot. Without it ``chat_here`` writes the
        usage before it returns (and a cancelled call's, to the in-process ledger), and
        HTTP responses are read to their end before the call's answer."""
        return self._defer

    @defer.setter
    def defer(self, defer: Defer | None) -> None:
        self._defer = defer
        self.http.background = defer

    def crowded(self) -> bool:
        """Other calls are in flight (their tasks may be ready to run)."""
        return self.slots.value < self._concurrency - 1

    def reconfigure(self, config: RouterConfig) -> None:
        """Take new settings (``daemon.reload``): calls in flight finish on the deployments
        they resolved; cooldowns, spending and the connection pool are kept."""
        self.config = config
        self.catalog = Catalog(config)
        self._providers = {}
        if config.local != self.local.config:
            self.local = LocalEngine(config.local)
        self.budgets.config = config.budgets
        self.backoff.base = config.backoff_base
        self.backoff.maximum = config.backoff_max
        self.backoff.retry_after_max = config.retry_after_max
        self.cooldowns.threshold = config.cooldown_failures
        self.cooldowns.period = config.cooldown

    def provider(self, dep: Deployment) -> Provider:
        if dep.kind == "local":
            return self.local
        p = self._providers.get(dep.provider)
        if p is None:
            assert dep.provider_config is not None
            cls = AnthropicProvider if dep.kind == "anthropic" else OpenAIProvider
            p = self._providers[dep.provider] = cls(dep.provider, dep.provider_config, self.http)
        return p

    async def aclose(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------------ one call

    async def chat(self, chat: Chat) -> Terminal:
        """Run ``chat``; its channel gets the events, then the terminal event, then closes.
        The mailbox path: the caller's task reads the channel while a worker runs this."""
        out: trio.MemorySendChannel[Any] = chat.stream_to
        record: RecordUsage | None = None
        try:
            terminal, record = await self._chat(chat, channel_deliver(out))
            await _deliver_quietly(channel_deliver(out), terminal)
        finally:
            out.close()
        if record is not None:
            await self._record(chat, record)
        return terminal

    async def chat_here(self, chat: Chat, deliver: Deliver) -> Terminal:
        """Run ``chat`` on the caller's task: ``deliver`` gets each event (not the terminal,
        which is returned). No task, channel or scheduler trip between the network and the
        caller. Cancelling the caller stops the upstream call; output already streamed is
        still counted. The usage is written to the ledger after the return (``defer``), so
        the caller answers first; the budget counters are updated before it returns."""
        terminal, record = await self._chat(chat, deliver)
        if record is not None and self.budgets.add(
            chat.tenant, chat.agent, chat.request_id, record.cost
        ):
            uncount = functools.partial(self.budgets.uncount, chat.tenant, chat.agent, record.cost)
            if not self.ledger.record_soon(record, uncount, self._defer):
                await self._write(chat, record)
        return terminal

    def _record_abandoned(self, chat: Chat, record: RecordUsage) -> None:
        """The usage of a call interrupted by an exception (cancelled) after output went
        out: counted now, written off this (unwinding) path."""
        if not self.budgets.add(chat.tenant, chat.agent, chat.request_id, record.cost):
            return
        uncount = functools.partial(self.budgets.uncount, chat.tenant, chat.agent, record.cost)
        # Nowhere to hand it (the actor is stopping): the in-process ledger keeps it.
        if not self.ledger.record_soon(record, uncount, self._defer) and not (
            self.ledger.local.record(record)
        ):
            uncount()

    async def _write(self, chat: Chat, record: RecordUsage) -> None:
        if not await self.ledger.record(record):
            self.budgets.uncount(chat.tenant, chat.agent, record.cost)

    async def _record(self, chat: Chat, record: RecordUsage) -> None:
        if not self.budgets.add(chat.tenant, chat.agent, chat.request_id, record.cost):
            return
        await self._write(chat, record)

    async def _chat(self, chat: Chat, deliver: Deliver) -> tuple[Terminal, RecordUsage | None]:
        target = self.catalog.target(chat.model, chat.agent)
        try:
            candidates, is_group = self.catalog.resolve(target)
        except KeyError:
            return Failed(code="not_found", message=f"unknown model or group {target!r}"), None
        estimate = estimate_prompt(chat)
        fitting = [d for d in candidates if estimate < d.context_window]
        if not fitting:
            smallest = max(candidates, key=lambda d: d.context_window)
            return Failed(
                code="bad_request",
                message=f"the prompt (about {estimate} tokens) exceeds the context window of "
                f"{target!r} ({smallest.context_window} tokens)",
            ), None
        if chat.tools:
            fitting.sort(key=lambda d: not d.tools)  # stable: tool-capable ones first
        decision = await self.budgets.check(chat.tenant, chat.agent)
        downgraded = False
        if decision.state == "block":
            return Failed(
                code="budget_exceeded",
                message=f"budget {decision.scope} exhausted: spent {decision.spent:.4f} of "
                f"{decision.limit:.4f} today",
            ), None
        if decision.state == "downgrade" and is_group and len(fitting) > 1:
            cheapest = sorted(fitting, key=lambda d: d.input_price + d.output_price)
            downgraded = cheapest[0] is not fitting[0]
            fitting = cheapest
        if decision.state != "none":
            cost = fitting[0].cost(estimate, 0)
            if cost > decision.remaining:
                return Failed(
                    code="budget_exceeded",
                    message=f"the prompt's estimated cost {cost:.4f} exceeds the remaining "
                    f"budget {decision.remaining:.4f} ({decision.scope})",
                ), None
        return await self._attempts(chat, deliver, fitting, estimate, downgraded)

    async def _attempts(
        self,
        chat: Chat,
        deliver: Deliver,
        deployments: list[Deployment],
        estimate: int,
        downgraded: bool,
    ) -> tuple[Terminal, RecordUsage | None]:
        errors: list[str] = []
        retry_after: float | None = None
        attempts = 0
        for dep in deployments:
            left = self.cooldowns.cooling(dep.name)
            if left is not None:
                errors.append(f"{dep.name}: in cooldown for {left:.1f} s")
                retry_after = left if retry_after is None else min(retry_after, left)
                continue
            for attempt in range(self.config.max_retries + 1):
                attempts += 1
                sink = _Stream(deliver, self.crowded)
                try:
                    outcome = await self._attempt(dep, chat, sink, estimate)
                except ClientGone:
                    return Failed(code="cancelled", message="the caller went away"), (
                        self._usage_record(chat, dep, sink, None, estimate)[1]
                        if sink.streamed
                        else None
                    )
                except ProviderError as exc:
                    if sink.streamed:
                        self.cooldowns.failed(dep.name, exc.message)
                        log.warning("%s failed after streaming: %s", dep.name, exc.message)
                        _, record = self._usage_record(chat, dep, sink, None, estimate)
                        return Failed(
                            code=exc.code if exc.code == "timeout" else "provider_unavailable",
                            message=exc.message,
                            partial=True,
                            model=dep.name,
                        ), record
                    errors.append(exc.message)
                    if not exc.fallback:
                        return Failed(code=exc.code, message=exc.message, model=dep.name), None
                    cooled = self.cooldowns.failed(dep.name, exc.message, now=exc.cooldown_now)
                    log.info("%s attempt %d failed: %s", dep.name, attempt + 1, exc.message)
                    if not exc.retryable or cooled or attempt == self.config.max_retries:
                        break
                    await self.sleep(self.backoff.delay(attempt, exc.retry_after))
                    continue
                except BaseException:
                    if sink.streamed:
                        # Cancelled (or the caller's ``deliver`` failed) after output went
                        # out: the tokens were spent all the same.
                        _, record = self._usage_record(chat, dep, sink, None, estimate)
                        self._record_abandoned(chat, record)
                    raise
                self.cooldowns.succeeded(dep.name)
                usage, record = self._usage_record(chat, dep, sink, outcome, estimate)
                try:
                    # The output the provider left queued (the batch that came with the
                    # end of the stream), right before the answer: they leave together.
                    await sink.flush()
                    await _deliver_quietly(deliver, usage)
                except ClientGone:
                    return Failed(code="cancelled", message="the caller went away"), record
                except BaseException:
                    self._record_abandoned(chat, record)
                    raise
                result = ChatResult(
                    model=dep.name,
                    provider=dep.provider,
                    text="".join(sink.text_parts),
                    tool_calls=sink.tool_calls(),
                    finish_reason=outcome.finish_reason,
                    usage=usage,
                    attempts=attempts,
                    downgraded=downgraded,
                )
                return Finished(result), record
        return Failed(
            code="provider_unavailable",
            message="no model could answer: " + "; ".join(errors),
            retry_after=retry_after,
        ), None

    async def _attempt(self, dep: Deployment, chat: Chat, sink: _Stream, estimate: int) -> Outcome:
        provider = self.provider(dep)
        room = max(1, dep.context_window - estimate)
        max_tokens = min(chat.max_tokens or dep.max_output_tokens, dep.max_output_tokens, room)
        request = ProviderRequest(
            upstream=dep.upstream,
            messages=chat.messages,
            tools=chat.tools if dep.tools else [],
            max_tokens=max_tokens,
            temperature=chat.temperature,
        )
        timeouts = dep.provider_config or _LOCAL_TIMEOUTS
        # The scope is entered with the watchdog's first deadline (not moved to it after).
        now = trio.current_time()
        first = now + min(timeouts.first_token_timeout, timeouts.total_timeout)
        with trio.CancelScope(deadline=first) as scope:
            watchdog = sink.watchdog = _Watchdog(scope, timeouts, now)
            try:
                return await provider.stream(request, sink)
            finally:
                sink.watchdog = None  # the output still queued is flushed after the scope
        raise ProviderError(f"{dep.name}: {watchdog.which()} timeout", code="timeout")

    def _usage_record(
        self,
        chat: Chat,
        dep: Deployment,
        sink: _Stream,
        outcome: Outcome | None,
        estimate: int,
    ) -> tuple[Usage, RecordUsage]:
        estimated = (
            outcome is None or outcome.input_tokens is None or (outcome.output_tokens is None)
        )
        inp = outcome.input_tokens if outcome and outcome.input_tokens is not None else estimate
        outp = (
            outcome.output_tokens
            if outcome and outcome.output_tokens is not None
            else sink.output_estimate()
        )
        cost = dep.cost(inp, outp)
        usage = Usage(
            model=dep.name,
            provider=dep.provider,
            input_tokens=inp,
            output_tokens=outp,
            cost=cost,
            estimated=estimated,
        )
        record = RecordUsage(
            tenant=chat.tenant,
            request_id=chat.request_id,
            model=dep.name,
            provider=dep.provider,
            agent=chat.agent,
            task=chat.task,
            input_tokens=inp,
            output_tokens=outp,
            cost=cost,
            estimated=estimated,
            time=self.clock(),
        )
        return usage, record


class ChatLease:
    """One call's place among the router's ``concurrency`` (``ask_now(ChatSlot())``): run
    it at once with ``run``, exactly once; the place is given back when ``run`` ends."""

    __slots__ = ("_router",)

    def __init__(self, router: Router) -> None:
        self._router: Router | None = router

    async def run(self, chat: Chat, deliver: Deliver) -> Terminal:
        """``Router.chat_here`` on the caller's task (``chat.stream_to`` is not used)."""
        router = self._router
        if router is None:
            raise RuntimeError("a ChatLease runs one call")
        self._router = None
        try:
            return await router.chat_here(chat, deliver)
        finally:
            router.slots.release()
