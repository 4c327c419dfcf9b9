"""``convergio task list|show ID|resume ID``: durable tasks.

A task that was running when the daemon died shows as ``interrupted``, with its transcript
so far; ``resume`` continues it from the last completed step.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import click

from convergiod import protocol
from convergiod.commands._common import client, json_option, print_json, timeout_option

if TYPE_CHECKING:
    from convergiod.actors.memory.messages import TaskRecord
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


async def _entry(daemon: Daemon, tenant: str, record: TaskRecord) -> protocol.TaskEntry:
    """A task as the client sees it: ``running`` without a live run here is ``interrupted``
    (and is recorded so)."""
    from convergiod.actors.memory import messages as mem
    from convergiod.actors.orchestrator.actor import IsLive

    assert daemon.system is not None
    status = record.status
    if status == "running" and not await daemon.system.ref("orchestrator").ask(
        IsLive(tenant=tenant, task=record.task)
    ):
        status = "interrupted"
        await daemon.system.ref("memory").ask(
            mem.SaveTask(
                tenant=tenant,
                task=record.task,
                status=status,
                request=record.request,
                agent=record.agent,
                conversation=record.conversation,
            ),
            timeout=10.0,
        )
    return protocol.TaskEntry(
        task=record.task,
        status=status,
        agent=record.agent,
        request=record.request,
        conversation=record.conversation,
        created=record.created,
        updated=record.updated,
        result=record.result,
        steps=len(record.steps),
    )


async def serve_list(
    daemon: Daemon, ctx: RequestContext, op: protocol.TaskListOp
) -> protocol.TasksReply:
    from convergiod.actors.memory import messages as mem

    assert daemon.system is not None
    tenant = ctx.caller.tenant
    records = await daemon.system.ref("memory").ask(
        mem.ListTasks(tenant=tenant, status=None, limit=op.limit), timeout=30.0
    )
    entries = [await _entry(daemon, tenant, r) for r in records]
    if op.status:
        entries = [e for e in entries if e.status == op.status]
    return protocol.TasksReply(tasks=entries)


async def serve_show(
    daemon: Daemon, ctx: RequestContext, op: protocol.TaskShowOp
) -> protocol.TaskDetail:
    import msgspec

    from convergiod.actors.memory import messages as mem
    from convergiod.actors.orchestrator.engine import ModelStep, ToolStep

    assert daemon.system is not None
    tenant = ctx.caller.tenant
    record = await daemon.system.ref("memory").ask(
        mem.LoadTask(tenant=tenant, task=op.task), timeout=30.0
    )
    transcript: list[dict[str, Any]] = []
    for step, kind, payload in record.steps:
        if kind == "model":
            m = msgspec.msgpack.decode(payload, type=ModelStep)
            transcript.append(
                {
                    "step": step,
                    "kind": kind,
                    "text": m.text,
                    "model": m.model,
                    "tool_calls": [c.name for c in m.tool_calls],
                }
            )
        else:
            t = msgspec.msgpack.decode(payload, type=ToolStep)
            transcript.append({"step": step, "kind": kind, "ok": t.ok, "text": t.content})
    return protocol.TaskDetail(task=await _entry(daemon, tenant, record), transcript=transcript)


@click.group()
def cli() -> None:
    """Durable tasks: list them, show one with its transcript, resume an interrupted one."""


@cli.command("list")
@click.option("--status", default=None, help="Only tasks in this state (e.g. interrupted).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
@timeout_option
def list_cmd(status: str | None, limit: int, as_json: bool, timeout: float) -> None:
    """Tasks, newest first."""
    with client(timeout) as c:
        reply = c.call(protocol.TaskListOp(status=status, limit=limit))
    if as_json:
        print_json(reply)
        return
    for t in reply.tasks:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(t.created))
        request = t.request if len(t.request) <= 60 else t.request[:57] + "..."
        click.echo(f"{t.task}  {t.status:<11}  {when}  {t.agent:<8}  {t.steps:>3} steps  {request}")


@cli.command()
@click.argument("task")
@json_option
@timeout_option
def show(task: str, as_json: bool, timeout: float) -> None:
    """A task and its transcript so far."""
    with client(timeout) as c:
        reply = c.call(protocol.TaskShowOp(task=task))
    if as_json:
        print_json(reply)
        return
    t = reply.task
    click.echo(f"{t.task}: {t.status}, agent {t.agent}, {t.steps} steps\nrequest: {t.request}")
    for item in reply.transcript:
        click.echo(f"\n[{item['step']}] {item['kind']}")
        click.echo(str(item.get("text", ""))[:2000])
    if t.result:
        click.echo(f"\nresult:\n{t.result}")


@cli.command()
@click.argument("task")
@click.option("--workspace", type=click.Path(file_okay=False, resolve_path=True), default=None)
@click.option("--yes", is_flag=True, help="Approve every tool call of this run.")
@json_option
def resume(task: str, workspace: str | None, yes: bool, as_json: bool) -> None:
    """Continue an interrupted task from its last completed step."""
    from convergiod.commands.ask import Renderer, run_streamed

    renderer = Renderer(as_json, yes)
    answer = run_streamed(
        protocol.TaskResume(task=task, workspace=workspace or os.getcwd()), renderer
    )
    renderer.answer(answer)
