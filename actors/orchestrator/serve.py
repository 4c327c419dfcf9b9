"""The daemon half of ``convergio ask`` and ``convergio task resume``: a task runs in the
request's own Trio task, so a client ``Cancel``, the request deadline or the daemon's drain
cancel every agent under it. The task and each of its completed steps are checkpointed in
memory, so ``task resume`` can finish a task that a crash interrupted.

(Its own module, with its imports at the top: ``convergiod.commands.ask`` is the CLI half and
stays light to import; function-level imports cost the event loop on every ask.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import outcome
import trio

from convergiod import protocol
from convergiod.actors.memory import asks
from convergiod.actors.memory import messages as mem
from convergiod.actors.orchestrator import context as ctxmod
from convergiod.actors.orchestrator.actor import (
    GetModels,
    GetTeam,
    IsLive,
    TaskBegin,
    TaskEnd,
    ask_soon,
)
from convergiod.actors.orchestrator.engine import TaskRun, new_id
from convergiod.actors.tool import messages as tl
from convergiod.errors import OpError
from convergiod.runtime import NOT_NOW, Pending
from convergiod.security.workspace import tenant_workspace

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext

log = logging.getLogger("convergiod.orchestrator")

__all__ = ["serve_ask", "serve_resume"]


async def serve_ask(daemon: Daemon, ctx: RequestContext, op: protocol.Ask) -> protocol.Answer:

    return await _run_task(
        daemon,
        ctx,
        task=new_id("t"),
        prompt=op.prompt,
        agent_name=op.agent,
        conversation=op.conversation or new_id("c"),
        workspace=op.workspace,
        checkpoints={},
        fresh=True,
        new_conversation=op.conversation is None,
    )


async def serve_resume(
    daemon: Daemon, ctx: RequestContext, op: protocol.TaskResume
) -> protocol.Answer:

    assert daemon.system is not None
    tenant = ctx.caller.tenant
    if await daemon.system.ref("orchestrator").ask(IsLive(tenant=tenant, task=op.task)):
        raise OpError("bad_request", f"task {op.task} is still running")
    record: mem.TaskRecord = await daemon.system.ref("memory").ask(
        mem.LoadTask(tenant=tenant, task=op.task), timeout=30.0
    )
    if record.status == "done":
        raise OpError("bad_request", f"task {op.task} is already done")
    await ctx.emit(
        protocol.Notice(
            message=f"resuming task {op.task} after {len(record.steps)} completed steps"
        )
    )
    return await _run_task(
        daemon,
        ctx,
        task=op.task,
        prompt=record.request,
        agent_name=record.agent,
        conversation=record.conversation or op.task,
        workspace=op.workspace,
        checkpoints={step: payload for step, _kind, payload in record.steps},
        fresh=False,
        new_conversation=False,
    )


async def _run_task(
    daemon: Daemon,
    ctx: RequestContext,
    *,
    task: str,
    prompt: str,
    agent_name: str | None,
    conversation: str,
    workspace: str,
    checkpoints: dict[str, bytes],
    fresh: bool,
    new_conversation: bool,
) -> protocol.Answer:
    """Run a task. What waits for whom: the task's record (and the user's message) is
    written while the context is gathered and the first model call runs; the task's first
    checkpoint comes after it (``TaskRun.recorded``), and so does the record of its end.

    The memory actor takes these writes with no task of its own (``handle_now``): they
    are submitted to the group commit in the order they are made, so a write made after
    the record cannot commit before it. When it cannot (the tenant's database is not open
    yet), they go through its mailbox and the order is kept by waiting."""

    assert daemon.system is not None
    system = daemon.system
    config = daemon.config.orchestrator
    tenant = ctx.caller.tenant
    if workspace and not os.path.isabs(workspace):
        raise OpError("bad_request", f"workspace must be an absolute path, got {workspace!r}")

    workspace = tenant_workspace(daemon, ctx.caller, workspace)
    orchestrator = system.ref("orchestrator")
    team = await ask_soon(orchestrator, GetTeam())
    name = agent_name or config.default_agent
    agent = team.get(name)
    if agent is None:
        raise OpError("not_found", f"no agent named {name!r}; see `convergio agents list`")
    memory = system.ref("memory")
    tools: list[tl.ToolInfo] = await ask_soon(system.ref("tool"), tl.ListTools(tenant=tenant))
    models: dict[str, Any] = await ask_soon(orchestrator, GetModels())
    await ask_soon(orchestrator, TaskBegin(tenant=tenant, task=task))
    try:

        async def approve(
            tool: str, summary: str, args: dict[str, Any], agent_: str | None
        ) -> protocol.ApprovalDecision:
            return await ctx.request_approval(
                tool=tool,
                summary=summary,
                args=args,
                agent=agent_,
                timeout=daemon.config.tools.approval_timeout,
            )

        recorded = trio.Event()
        run = TaskRun(
            system=system,
            tenant=tenant,
            request_id=ctx.id,
            task=task,
            team=team,
            config=config,
            workspace=workspace,
            emit=ctx.emit,
            approve=approve,
            tools=tools,
            models=models,
            checkpoints=checkpoints,
            recorded=recorded,
        )

        #: The record once submitted; the first error of the record, if any.
        submitted: list[Pending] = []
        failed: list[BaseException] = []

        def record(scope: trio.CancelScope) -> None:
            """Submit the task's record, with the user's message for a new task (one
            write), to the group commit; a failure ends the task (``scope``) with its
            error. When the memory actor cannot take it at once, a task of the nursery
            writes it (see ``recorded``)."""
            message = None
            if fresh:
                message = mem.AppendMessage(
                    tenant=tenant, conversation=conversation, role="user", content=prompt
                )
            write = mem.SaveTask(
                tenant=tenant,
                task=task,
                status="running",
                request=prompt,
                agent=agent.name,
                conversation=conversation,
                message=message,
            )
            pending = memory.ask_now(write)
            if pending is NOT_NOW:
                nursery.start_soon(record_slowly, write)
                return

            def done(result: outcome.Outcome[Any]) -> None:
                if isinstance(result, outcome.Error) and not failed:
                    failed.append(result.error)
                    scope.cancel()

            submitted.append(pending)
            recorded.set()
            pending.on_done(done)

        async def record_slowly(write: Any) -> None:
            # It completes even when the task is cancelled.
            with trio.CancelScope(shield=True):
                await memory.ask(write, timeout=30.0)
            recorded.set()

        def end(status: str, result: str | None) -> mem.SaveTask:
            return _end_write(
                tenant=tenant,
                task=task,
                status=status,
                prompt=prompt,
                result=result,
                conversation=conversation,
                agent=agent.name,
            )

        async def finish(status: str, result: str | None, submitted: Any = NOT_NOW) -> None:
            await _finish(daemon, run, end(status, result), submitted)

        status, finished = "failed", False
        text = ""
        # One cancel scope bounds the task and its root agent: the nursery's, with the
        # nearer of the two deadlines (each scope costs the event loop several µs).
        if agent.limits.timeout < config.task_timeout:
            limit = agent.limits.timeout
            too_slow = f"agent {agent.name} exceeded its time limit of {limit:g} s"
        else:
            limit = config.task_timeout
            too_slow = f"task {task} exceeded its time limit of {limit:g} s"
        try:
            # The nursery holds the task's writes when the memory actor cannot take them
            # at once: its record, checkpoints still being written when the answer is there.
            async with trio.open_nursery() as nursery:
                nursery.cancel_scope.deadline = trio.current_time() + limit
                if new_conversation:
                    record(nursery.cancel_scope)
                context = await ctxmod.build(
                    memory,
                    tenant=tenant,
                    conversation=conversation,
                    prompt=prompt,
                    config=config,
                    history=not new_conversation,
                    resumed=not fresh,
                )
                if not new_conversation:
                    # After the history is read: it must not contain this prompt yet.
                    record(nursery.cancel_scope)
                text = await run.run(agent, prompt, context, nursery=nursery, timed=False)
                if not recorded.is_set():
                    await recorded.wait()
                early: Any = NOT_NOW
                if run.all_submitted():
                    # The end's record goes to the group commit now, right behind the
                    # task's record and its last checkpoints, committed or not (the writer
                    # keeps the order of submission): they commit together or one after
                    # the other, and the answer waits for one commit instead of a chain of
                    # them (under load, each group commit takes milliseconds).
                    early = _submit(memory, end("done", text), task)
                if type(early) is Pending:
                    # Everything of the task is submitted: it is done, whatever becomes of
                    # this request now (a cancel does not withdraw a submitted write).
                    status, finished = "done", True
                    try:
                        for pending in submitted:
                            await asks.settle(pending)
                        await run.settle()
                    except BaseException as exc:
                        if failed or not _is_cancellation(exc):
                            # The task's record (its failure cancels this scope: ``failed``
                            # says so) or a checkpoint failed after all: the record of the
                            # failure goes after the end's (``finally``). The answer stays
                            # in the conversation: only a database failing under a write
                            # does this.
                            status, finished = "failed", False
                        else:
                            # Cancelled or out of time with everything submitted: the task
                            # is done all the same; its end is waited for (shielded) and
                            # published before the cancel goes on.
                            await finish("done", text, early)
                        raise
                else:
                    for pending in submitted:
                        await asks.settle(pending)
                    await run.settle()
                    status, finished = "done", True
                await finish("done", text, early)
            if failed:
                raise failed[0]
            if nursery.cancel_scope.cancelled_caught and not finished:
                raise OpError("timeout", too_slow)
        except BaseException as exc:
            if _is_cancellation(exc):
                status = "cancelled"
            raise
        finally:
            if not finished:
                await finish(status, None)
    finally:
        gone = TaskEnd(tenant=tenant, task=task)
        if orchestrator.ask_now(gone) is NOT_NOW:  # the actor is restarting
            orchestrator.send(gone)
    return protocol.Answer(
        task=task,
        conversation=conversation,
        agent=agent.name,
        text=text,
        usage=run.usage_report(),
        steps=run.steps,
        resumed=not fresh,
    )


def _is_cancellation(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        return rest is None
    return isinstance(exc, trio.Cancelled)


def _end_write(
    *,
    tenant: str,
    task: str,
    status: str,
    prompt: str,
    result: str | None,
    conversation: str,
    agent: str,
) -> mem.SaveTask:
    """The record of how a task ended, with the answer for its conversation (one write)."""
    message = None
    if result is not None:
        message = mem.AppendMessage(
            tenant=tenant, conversation=conversation, role="assistant", content=result, agent=agent
        )
    return mem.SaveTask(
        tenant=tenant,
        task=task,
        status=status,
        request=prompt,
        agent=agent,
        conversation=conversation,
        result=result,
        message=message,
    )


def _submit(memory: Any, write: mem.SaveTask, task: str) -> Any:
    """``write`` submitted to the group commit at once: its ``Pending``; ``NOT_NOW`` when
    the memory actor cannot take it so; None when it was refused (logged)."""
    try:
        return memory.ask_now(write)
    except Exception:
        log.exception("could not record the end of task %s", task)
        return None


async def _finish(daemon: Daemon, run: TaskRun, write: mem.SaveTask, submitted: Any) -> None:
    """Record how the task ended (``write``), even while it is being cancelled; a write
    already ``submitted`` (its ``Pending``, or None if refused) is waited for instead. The
    task's first record is submitted by then (or written, when it went through the
    mailbox), so this one commits after it. The task's event is published in any case."""
    assert daemon.system is not None
    memory = daemon.system.ref("memory")
    task, status = write.task, write.status
    pending: Any = submitted
    if pending is NOT_NOW and status == "done":
        pending = _submit(memory, write, task)
    try:
        if type(pending) is Pending:
            # Submitted to the group commit: it commits whatever becomes of this task now,
            # and the answer waits for it. No shield scope on this path (the common one): a
            # cancel only then waits for the commit, shielded, before it goes on.
            try:
                await _logged(asks.settle(pending), task)
            except trio.Cancelled:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 30):
                    await _logged(asks.settle(pending), task)
                raise
        elif pending is NOT_NOW:
            # Maybe while being cancelled: shielded, bounded.
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 30):
                if status == "cancelled":
                    daemon.system.ref("tool").send(
                        tl.CancelTool(tenant=write.tenant, request_id=run.request_id)
                    )
                await _logged(asks.ask(memory, write, timeout=10.0), task)
    finally:
        daemon.publish(f"task.{task}.{status}", {"tenant": write.tenant, "steps": run.steps})


async def _logged(write: Awaitable[Any], task: str) -> None:
    """Wait for the write of a task's end; a failure is logged (the task has ended)."""
    try:
        await write
    except Exception:
        log.exception("could not record the end of task %s", task)
