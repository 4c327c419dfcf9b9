"""The agent loop of one task: model turns through the router, tool calls through the tool
actor, delegations to other agents running concurrently, checkpoints through memory.

One agent's loop::

    messages = system prompt + context + task
    repeat up to max_steps:
        turn = model call (streamed; text deltas go to the client tagged with the agent)
        checkpoint the turn
        no tool calls -> the turn's text is the agent's answer
        run the turn's tool calls at once (a nursery); `delegate` runs another agent's loop
        checkpoint each result; feed the results back

Every completed step is checkpointed under a key that depends only on its position in the
task (``ali#2:model``, ``ali/coder@call_1#1:call:call_7``), so ``task resume`` replays the
completed steps from memory instead of running them again: a model turn is not paid twice
and a tool with a side effect does not run twice.

What waits for a checkpoint's COMMIT (an fsync), and what does not:

- a turn that calls a tool with a side effect (or delegates) is committed before its tools
  run, after every earlier checkpoint of the agent: a resumed task never runs them twice;
- each result of such a turn is written as soon as it is in (a finished delegation is kept
  while the others still run), and all are committed before the next turn is asked;
- a turn whose calls only read is written together with their results once they are in,
  without waiting: the agent's next model call runs meanwhile; after a crash the turn is
  asked again and its reads run again, which is harmless;
- a final turn is not checkpointed: on resume it is simply asked again;
- no checkpoint commits before the task's own record (``recorded``), and
  ``run`` returns only when every checkpoint is committed (with a nursery of the caller's,
  ``settle`` waits for them).

A checkpoint is one write to memory (``SaveSteps``: a turn and its results together) that
the memory actor takes with no task of its own (``handle_now``): it joins the group commit
at once, and waiting for it (``_flush``) parks no task but the agent's. Writes reach the
tenant's writer in the order they are made, so a checkpoint made after the task's record
was submitted commits after it: ``recorded`` is set as soon as the record is submitted.
When the memory actor cannot take a write at once (its tenant database is not open yet, or
it is restarting), a task of the nursery writes it through the mailbox.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from convergiod import protocol
from convergiod.actors.memory import asks
from convergiod.actors.memory import messages as mem
from convergiod.actors.orchestrator.agents import AgentDef, AgentSet
from convergiod.actors.router import messages as rt
from convergiod.actors.router.client import run_chat
from convergiod.actors.tool import messages as tl
from convergiod.config import OrchestratorConfig
from convergiod.errors import OpError
from convergiod.runtime import NOT_NOW, ActorSystem, Pending

log = logging.getLogger("convergiod.orchestrator")

Emit = Callable[[protocol.EventBody], Awaitable[None]]
Approve = Callable[[str, str, dict[str, Any], str | None], Awaitable[protocol.ApprovalDecision]]

DELEGATE = "delegate"
#: Tools that change nothing: their calls may run while the turn that made them is still
#: being checkpointed (running one twice after a crash is harmless).
READ_ONLY_TOOLS = frozenset({"fs.read", "fs.list", "fs.glob", "fs.grep", "memory.search"})
#: Failures of a model call after which the agent's next fallback model is tried.
FALLBACK_CODES = frozenset({"provider_unavailable", "not_found", "unavailable", "timeout"})


class ModelStep(msgspec.Struct, kw_only=True):
    text: str
    tool_calls: list[rt.ToolCall] = []
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0


class ToolStep(msgspec.Struct, kw_only=True):
    content: str
    ok: bool = True
    code: str | None = None


class DelegateArgs(msgspec.Struct, forbid_unknown_fields=True):
    """Hand a self-contained task to another agent of the team; its answer comes back as
    this tool's result. Several delegations in one turn run at the same time."""

    agent: str
    task: str


#: A checkpoint to write: key, kind, step.
_Save = tuple[str, str, "ModelStep | ToolStep"]
#: Tool specs by (agent, tool list, team) identity: (agent, tools, team, specs).
_SPECS: dict[tuple[int, int, int], tuple[Any, Any, Any, list[rt.ToolSpec]]] = {}


@dataclass
class _Usage:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0


@dataclass
class _AgentBudget:
    tool_calls: int = 0
    tokens: int = 0
    cost: float = 0.0


@dataclass
class TaskRun:
    """Everything one task needs; ``run`` answers with the root agent's final text."""

    system: ActorSystem
    tenant: str
    request_id: int
    task: str
    team: AgentSet
    config: OrchestratorConfig
    workspace: str
    emit: Emit
    approve: Approve
    tools: list[tl.ToolInfo]
    models: dict[str, rt.ModelInfo]
    checkpoints: dict[str, bytes] = field(default_factory=dict)
    usage: dict[str, _Usage] = field(default_factory=dict)
    steps: int = 0
    replayed: int = 0
    _limiter: trio.CapacityLimiter | None = None
    _notified: set[str] = field(default_factory=set)
    _nursery: trio.Nursery | None = None
    #: Checkpoints being written, by agent path: submitted writes (``Pending``) or the
    #: tasks writing them (an ``Event`` set when done).
    _pending: dict[str, list[trio.Event | Pending]] = field(default_factory=dict)
    #: Set once the task's record is committed, or submitted to the group commit (then a
    #: checkpoint submitted after it cannot commit before it); checkpoints wait for it
    #: (None: no wait).
    recorded: trio.Event | None = None

    def __post_init__(self) -> None:
        self._memory = self.system.ref("memory")

    async def run(
        self,
        agent: AgentDef,
        prompt: str,
        context: list[rt.Message] | None = None,
        *,
        nursery: trio.Nursery | None = None,
        timed: bool = True,
    ) -> str:
        """Run the task's root agent; returns once every checkpoint is written, or with
        ``nursery``, as soon as the answer is there: checkpoints still being written are
        tasks of that nursery. ``timed=False``: the caller enforces the agent's time limit
        (``run_agent``)."""
        if nursery is not None:
            self._nursery = nursery
            return await self.run_agent(
                agent, prompt, path=agent.name, chain=(agent.name,), context=context, timed=timed
            )
        async with trio.open_nursery() as own:
            self._nursery = own
            text = await self.run_agent(
                agent, prompt, path=agent.name, chain=(agent.name,), context=context
            )
            await self.settle()
        return text

    # ------------------------------------------------------------------ one agent

    async def run_agent(
        self,
        agent: AgentDef,
        task_text: str,
        *,
        path: str,
        chain: tuple[str, ...],
        context: list[rt.Message] | None = None,
        timed: bool = True,
    ) -> str:
        """Run ``agent`` on ``task_text`` until it answers or hits a limit (``OpError``).
        ``timed=False``: the caller bounds it by ``agent.limits.timeout`` (one cancel scope
        fewer for a task's root agent, whose task has a scope anyway)."""
        limits = agent.limits
        if not timed:
            return await self._loop(agent, task_text, path, chain, context or [])
        with trio.CancelScope(deadline=trio.current_time() + limits.timeout) as scope:
            return await self._loop(agent, task_text, path, chain, context or [])
        assert scope.cancelled_caught
        raise OpError(
            "timeout", f"agent {agent.name} exceeded its time limit of {limits.timeout:g} s"
        )

    async def _loop(
        self,
        agent: AgentDef,
        task_text: str,
        path: str,
        chain: tuple[str, ...],
        context: list[rt.Message],
    ) -> str:
        specs = self._tool_specs(agent)
        messages = [
            rt.Message(role="system", content=agent.prompt),
            *context,
            rt.Message(role="user", content=task_text),
        ]
        budget = _AgentBudget()
        for n in range(1, agent.limits.max_steps + 1):
            step, deferred = await self._model_step(agent, path, n, messages, specs)
            self.steps += 1
            budget.tokens += step.input_tokens + step.output_tokens
            budget.cost += step.cost
            messages.append(
                rt.Message(role="assistant", content=step.text, tool_calls=step.tool_calls)
            )
            if not step.tool_calls:
                return step.text
            self._check_budget(agent, budget, len(step.tool_calls))
            later: list[_Save] | None = None
            if deferred:
                later = [(f"{path}#{n}:model", "model", step)]
            results = await self._tool_steps(agent, path, n, chain, step.tool_calls, later)
            if later:
                self._save_soon(path, later)
            else:
                # Results of tools with side effects (and delegations' answers) are committed
                # before the next turn is asked: a crash from here on does not repeat them.
                await self._flush(path)
            for call, result in zip(step.tool_calls, results, strict=True):
                messages.append(
                    rt.Message(role="tool", content=result.content, tool_call_id=call.id)
                )
        raise OpError(
            "budget_exceeded",
            f"agent {agent.name} reached its limit of {agent.limits.max_steps} steps "
            "without a final answer",
        )

    async def _tool_steps(
        self,
        agent: AgentDef,
        path: str,
        n: int,
        chain: tuple[str, ...],
        calls: list[rt.ToolCall],
        later: list[_Save] | None = None,
    ) -> list[ToolStep]:
        """Run one turn's tool calls at once; results in the calls' order. With ``later``,
        the new results' checkpoints are appended to it instead of being written."""
        if len(calls) == 1:
            return [await self._tool_step(agent, path, n, chain, calls[0], later)]
        results: list[ToolStep | None] = [None] * len(calls)

        async def one(i: int, call: rt.ToolCall) -> None:
            results[i] = await self._tool_step(agent, path, n, chain, call, later)

        async with trio.open_nursery() as nursery:
            for i, call in enumerate(calls):
                nursery.start_soon(one, i, call)
        return [r for r in results if r is not None]

    def _check_budget(self, agent: AgentDef, budget: _AgentBudget, new_calls: int) -> None:
        limits = agent.limits
        budget.tool_calls += new_calls
        if budget.tool_calls > limits.max_tool_calls:
            raise OpError(
                "budget_exceeded",
                f"agent {agent.name} reached its limit of {limits.max_tool_calls} tool calls",
            )
        if budget.tokens > limits.max_tokens:
            raise OpError(
                "budget_exceeded",
                f"agent {agent.name} used {budget.tokens} tokens (limit {limits.max_tokens})",
            )
        if limits.max_cost and budget.cost > limits.max_cost:
            raise OpError(
                "budget_exceeded",
                f"agent {agent.name} spent ${budget.cost:.4f} (limit ${limits.max_cost:g})",
            )

    # ------------------------------------------------------------------ model turns

    async def _model_step(
        self,
        agent: AgentDef,
        path: str,
        n: int,
        messages: list[rt.Message],
        specs: list[rt.ToolSpec],
    ) -> tuple[ModelStep, bool]:
        """The turn, and whether its checkpoint is left to the caller (a fresh turn whose
        calls all only read: written with their results, see the module's docstring)."""
        key = f"{path}#{n}:model"
        saved = self.checkpoints.get(key)
        if saved is not None:
            self.replayed += 1
            return msgspec.msgpack.decode(saved, type=ModelStep), False
        step = await self._call_model(agent, path, n, messages, specs)
        if not step.tool_calls:
            return step, False
        if all(c.name in READ_ONLY_TOOLS for c in step.tool_calls):
            return step, True
        # The earlier checkpoints (the previous step's tool results, from which this turn
        # was computed) first, then this turn, durable before its tools run.
        await self._flush(path)
        await self._save(key, "model", step)
        return step, False

    async def _call_model(
        self,
        agent: AgentDef,
        path: str,
        n: int,
        messages: list[rt.Message],
        specs: list[rt.ToolSpec],
    ) -> ModelStep:
        candidates: list[str | None] = [None if agent.model == "default" else agent.model]
        candidates += [m for m in agent.fallback if m not in candidates]
        router = self.system.ref("router")
        last: rt.Failed | None = None
        name, emit = agent.name, self.emit

        async def on_event(event: rt.ChatEvent) -> None:
            if type(event) is rt.TextDelta:
                await emit(protocol.TokenDelta(text=event.text, agent=name))

        for model in candidates:
            # On this task when the router has room: no worker, no channel per event.
            terminal = await run_chat(
                router,
                on_event,
                tenant=self.tenant,
                request_id=f"{self.task}:{path}#{n}",
                messages=messages,
                agent=agent.name,
                model=model,
                tools=specs,
                task=self.task,
                temperature=agent.temperature,
            )
            if isinstance(terminal, rt.Finished):
                return await self._finished(agent, terminal.result, bool(specs))
            assert isinstance(terminal, rt.Failed)
            last = terminal
            if terminal.partial or terminal.code not in FALLBACK_CODES:
                break
            log.info(
                "agent %s: model %s failed (%s), trying the next", agent.name, model, terminal.code
            )
        assert last is not None
        raise OpError(
            last.code if last.code in protocol.ERROR_CODES else "provider_unavailable",  # type: ignore[arg-type]
            f"agent {agent.name}: {last.message}",
            retry_after=last.retry_after,
        )

    async def _finished(self, agent: AgentDef, result: rt.ChatResult, offered: bool) -> ModelStep:
        usage = result.usage
        acc = self.usage.setdefault(agent.name, _Usage())
        acc.calls += 1
        acc.input_tokens += usage.input_tokens
        acc.output_tokens += usage.output_tokens
        acc.cost += usage.cost
        await self.emit(
            protocol.UsageEvent(
                agent=agent.name,
                model=result.model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost=usage.cost,
            )
        )
        info = self.models.get(result.model)
        if offered and info is not None and not info.tools and agent.name not in self._notified:
            self._notified.add(agent.name)
            await self.emit(
                protocol.Notice(
                    agent=agent.name,
                    message=f"model {result.model} has no tool support: {agent.name} answers "
                    "directly, without tools or delegation",
                )
            )
        return ModelStep(
            text=result.text,
            tool_calls=list(result.tool_calls),
            model=result.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=usage.cost,
        )

    # ------------------------------------------------------------------ tool calls

    def _allowed(self, agent: AgentDef, tool: str) -> bool:
        if tool == DELEGATE:
            return DELEGATE in agent.tools and bool(agent.delegates)
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in agent.tools)

    def _tool_specs(self, agent: AgentDef) -> list[rt.ToolSpec]:
        """What ``agent`` is offered; the same list for the same agent and tool list (the
        tool actor answers with the same list until a tool is added or removed)."""
        key = (id(agent), id(self.tools), id(self.team))
        cached = _SPECS.get(key)
        if (
            cached is not None
            and cached[0] is agent
            and cached[1] is self.tools
            and cached[2] is self.team
        ):
            return cached[3]
        specs = self._build_specs(agent)
        if len(_SPECS) >= 256:
            _SPECS.clear()
        _SPECS[key] = (agent, self.tools, self.team, specs)
        return specs

    def _build_specs(self, agent: AgentDef) -> list[rt.ToolSpec]:
        specs = [
            rt.ToolSpec(name=t.name, description=t.description, parameters=t.schema)
            for t in self.tools
            if t.policy != "deny" and self._allowed(agent, t.name)
        ]
        if self._allowed(agent, DELEGATE):
            from convergiod.actors.tool.base import json_schema

            team = ", ".join(
                f"{name} ({self.team.agents[name].description})"
                for name in agent.delegates
                if name in self.team.agents
            )
            schema = json_schema(DelegateArgs)
            schema["properties"]["agent"]["enum"] = list(agent.delegates)
            specs.append(
                rt.ToolSpec(
                    name=DELEGATE,
                    description=(DelegateArgs.__doc__ or "").strip() + f" Team: {team}.",
                    parameters=schema,
                )
            )
        return specs

    async def _tool_step(
        self,
        agent: AgentDef,
        path: str,
        n: int,
        chain: tuple[str, ...],
        call: rt.ToolCall,
        later: list[_Save] | None = None,
    ) -> ToolStep:
        key = f"{path}#{n}:call:{call.id}"
        try:
            args = json.loads(call.arguments or "{}")
        except json.JSONDecodeError as exc:
            args = None
            error = f"arguments are not valid JSON: {exc}"
        else:
            error = "" if isinstance(args, dict) else "arguments must be a JSON object"
        await self.emit(
            protocol.ToolCallStarted(
                agent=agent.name,
                call=call.id,
                tool=call.name,
                args=args if isinstance(args, dict) else {},
            )
        )
        saved = self.checkpoints.get(key)
        if saved is not None:
            self.replayed += 1
            result = msgspec.msgpack.decode(saved, type=ToolStep)
        else:
            if error:
                result = ToolStep(
                    content=f"error (bad_request): {error}", ok=False, code="bad_request"
                )
            elif not self._allowed(agent, call.name):
                result = ToolStep(
                    content=f"error (sandbox_denied): agent {agent.name} may not use {call.name}",
                    ok=False,
                    code="sandbox_denied",
                )
            elif call.name == DELEGATE:
                assert isinstance(args, dict)
                result = await self._delegate(agent, path, chain, call, args)
            else:
                assert isinstance(args, dict)
                result = await self._run_tool(agent, call, args)
            save: _Save = (key, "delegation" if call.name == DELEGATE else "tool", result)
            if later is not None:
                later.append(save)
            else:
                self._save_soon(path, [save])
        await self.emit(
            protocol.ToolCallFinished(
                agent=agent.name,
                call=call.id,
                tool=call.name,
                ok=result.ok,
                summary=result.content[:200],
                code=result.code,
            )
        )
        return result

    async def _run_tool(self, agent: AgentDef, call: rt.ToolCall, args: dict[str, Any]) -> ToolStep:
        async def approver(tool: str, summary: str, tool_args: dict[str, Any]) -> Any:
            return await self.approve(tool, summary, tool_args, agent.name)

        try:
            output = await self.system.ref("tool").ask(
                tl.RunTool(
                    tenant=self.tenant,
                    name=call.name,
                    args=args,
                    workspace=self.workspace,
                    request_id=self.request_id,
                    agent=agent.name,
                    approver=approver,
                ),
                timeout=None,
            )
        except OpError as exc:
            return ToolStep(content=f"error ({exc.code}): {exc.message}", ok=False, code=exc.code)
        return ToolStep(content=output.content)

    async def _delegate(
        self,
        agent: AgentDef,
        path: str,
        chain: tuple[str, ...],
        call: rt.ToolCall,
        args: dict[str, Any],
    ) -> ToolStep:
        try:
            spec = msgspec.convert(args, DelegateArgs)
        except msgspec.ValidationError as exc:
            return ToolStep(content=f"error (bad_request): {exc}", ok=False, code="bad_request")
        target = self.team.get(spec.agent)
        refusal = ""
        if spec.agent not in agent.delegates or target is None:
            refusal = f"{agent.name} may not delegate to {spec.agent!r}"
        elif spec.agent in chain:
            refusal = "delegation cycle refused: " + " -> ".join((*chain, spec.agent))
        elif len(chain) >= self.config.max_depth:
            refusal = f"delegation depth limit of {self.config.max_depth} reached"
        if refusal:
            return ToolStep(content=f"error (bad_request): {refusal}", ok=False, code="bad_request")
        assert target is not None
        await self.emit(
            protocol.DelegationStarted(
                agent=agent.name, to=target.name, call=call.id, task=spec.task
            )
        )
        ok, text = True, ""
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(self.config.max_concurrent_agents)
        try:
            async with self._limiter:
                text = await self.run_agent(
                    target,
                    spec.task,
                    path=f"{path}/{target.name}@{call.id}",
                    chain=(*chain, target.name),
                )
        except OpError as exc:
            ok, text = False, f"error ({exc.code}): {exc.message}"
        await self.emit(
            protocol.DelegationFinished(
                agent=agent.name, to=target.name, call=call.id, ok=ok, summary=text[:200]
            )
        )
        return ToolStep(content=text, ok=ok, code=None if ok else "delegation_failed")

    # ------------------------------------------------------------------ checkpoints

    def _save_soon(self, path: str, saves: list[_Save]) -> None:
        """Write checkpoints (at once, in one write) while the agent goes on;
        ``_flush(path)`` waits for them."""
        steps: list[tuple[str, Any, bytes]] = []
        for key, kind, step in saves:
            payload = self.checkpoints[key] = msgspec.msgpack.encode(step)
            steps.append((key, kind, payload))
        waits = self._pending.setdefault(path, [])
        if self.recorded is None or self.recorded.is_set():
            # Submitted to the group commit now, after the task's record (the writer keeps
            # the order): no task waits for it.
            pending = self._memory.ask_now(
                mem.SaveSteps(tenant=self.tenant, task=self.task, steps=steps)
            )
            if pending is not NOT_NOW:
                waits.append(pending)
                return
        waits[:] = [w for w in waits if not (type(w) is trio.Event and w.is_set())]
        done = trio.Event()
        waits.append(done)

        async def write() -> None:
            try:
                if len(saves) == 1:
                    await self._save(*saves[0])
                    return
                async with trio.open_nursery() as nursery:
                    for save in saves:
                        nursery.start_soon(self._save, *save)
            finally:
                done.set()

        if self._nursery is None:
            raise RuntimeError("TaskRun.run_agent called outside TaskRun.run")
        self._nursery.start_soon(write)

    async def _flush(self, path: str) -> None:
        """Wait for the checkpoints of ``path`` written so far (raises if one failed)."""
        for done in self._pending.pop(path, ()):
            if type(done) is trio.Event:
                await done.wait()
            else:
                await asks.settle(done)

    def all_submitted(self) -> bool:
        """Every checkpoint still being written is in the group commit's queue already
        (none waits in a task for the memory actor): a write submitted now commits after
        them."""
        return all(
            type(w) is not trio.Event or w.is_set()
            for waits in self._pending.values()
            for w in waits
        )

    async def settle(self) -> None:
        """Wait for every checkpoint still being written (raises if one failed). With
        ``run(..., nursery=...)``, call it before the task's end is recorded."""
        while self._pending:
            await self._flush(next(iter(self._pending)))

    async def _save(self, key: str, kind: str, step: ModelStep | ToolStep) -> None:
        payload = self.checkpoints.get(key) or msgspec.msgpack.encode(step)
        self.checkpoints[key] = payload
        msg = mem.SaveStep(
            tenant=self.tenant,
            task=self.task,
            step=key,
            kind=kind,  # type: ignore[arg-type]
            payload=payload,
        )
        recorded = self.recorded
        if recorded is None or recorded.is_set():
            pending = self._memory.ask_now(msg)
            if pending is not NOT_NOW:
                # Submitted: it commits even if this wait is cancelled.
                await asks.settle(pending)
                return
        else:
            await recorded.wait()
        with trio.CancelScope(shield=True):
            await self._memory.ask(msg, timeout=30.0)

    def usage_report(self) -> list[protocol.AgentUsage]:
        return [
            protocol.AgentUsage(
                agent=name,
                calls=u.calls,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cost=round(u.cost, 8),
            )
            for name, u in sorted(self.usage.items())
        ]


def new_id(prefix: str) -> str:
    """A task or conversation id: the (local) day, then 48 random bits (ids are keys, not
    secrets: a generator seeded once from the OS, no system call per id; 32 bits collided
    after some tens of thousands of tasks a day)."""
    return f"{prefix}{_today()}-{_ids.getrandbits(48):012x}"


_ids = random.Random(os.urandom(32))
_day: tuple[float, str] = (0.0, "")


def _today() -> str:
    """``time.strftime('%Y%m%d')``, formatted once a minute (it costs more than the rest
    of an id)."""
    global _day
    now = time.time()
    if now >= _day[0]:
        _day = (now - now % 60 + 60, time.strftime("%Y%m%d", time.localtime(now)))
    return _day[1]
