"""``convergio models``: the configured models (reachability, cooldowns), and
``convergio models chat``: ask a model directly, the answer streamed as it is generated."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, cast

import click

from convergiod import protocol
from convergiod.commands._common import client, json_option, print_json, timeout_option

if TYPE_CHECKING:
    from convergiod.daemon import Daemon
    from convergiod.gateway import RequestContext


def _request_id() -> str:
    """A fresh id for the usage ledger: random, unique in practice (like ``uuid4().hex``)."""
    return os.urandom(16).hex()


async def serve_chat(
    daemon: Daemon, ctx: RequestContext, op: protocol.ModelChat
) -> protocol.ChatReply:
    from convergiod.actors.router.client import run_chat
    from convergiod.actors.router.messages import Failed, Message, TextDelta
    from convergiod.errors import OpError

    assert daemon.system is not None
    agent = op.agent
    emit = ctx.emit
    token = protocol.TokenDelta

    async def on_event(event: object) -> None:
        # Deltas that arrived together come as one TextDelta: one frame.
        if type(event) is TextDelta:
            await emit(token(text=event.text, agent=agent))

    terminal = await run_chat(
        daemon.system.ref("router"),
        on_event,
        tenant=ctx.caller.tenant,
        request_id=_request_id(),
        messages=[Message(role=m.role, content=m.content) for m in op.messages],
        agent=agent,
        model=op.model,
        max_tokens=op.max_tokens,
        temperature=op.temperature,
    )
    if isinstance(terminal, Failed):
        raise OpError(
            cast(protocol.ErrorCode, terminal.code),
            terminal.message,
            retry_after=terminal.retry_after,
        )
    r = terminal.result
    return protocol.ChatReply(
        model=r.model,
        provider=r.provider,
        text=r.text,
        finish_reason=r.finish_reason,
        input_tokens=r.usage.input_tokens,
        output_tokens=r.usage.output_tokens,
        cost=r.usage.cost,
        estimated=r.usage.estimated,
        attempts=r.attempts,
        downgraded=r.downgraded,
    )


async def serve_list(
    daemon: Daemon, ctx: RequestContext, op: protocol.ModelsList
) -> protocol.ModelsReply:
    from convergiod.actors.router.messages import ListModels, ModelList

    assert daemon.system is not None
    reply: ModelList = await daemon.system.ref("router").ask(ListModels(probe=op.probe), timeout=10)
    return protocol.ModelsReply(
        default=reply.default,
        models=[
            protocol.ModelEntry(
                name=m.name,
                provider=m.provider,
                kind=m.kind,
                upstream=m.upstream,
                context_window=m.context_window,
                input_price=m.input_price,
                output_price=m.output_price,
                tools=m.tools,
                groups=m.groups,
                default=m.default,
                available=m.available,
                reachable=m.reachable,
                detail=m.detail,
                cooldown_until=m.cooldown_until,
                failures=m.failures,
            )
            for m in reply.models
        ],
    )


def _render(reply: protocol.ModelsReply) -> str:
    rows = [("NAME", "PROVIDER", "UPSTREAM", "CONTEXT", "$IN/M", "$OUT/M", "TOOLS", "STATE")]
    now = time.time()
    for m in reply.models:
        if not m.available:
            state = "unavailable"
        elif m.cooldown_until:
            state = f"cooldown {max(0.0, m.cooldown_until - now):.0f}s"
        elif m.reachable is False:
            state = "unreachable"
        elif m.reachable:
            state = "reachable"
        else:
            state = "ok"
        if m.failures:
            state += f" ({m.failures} failures)"
        name = m.name + (" *" if m.default else "")
        rows.append(
            (
                name,
                m.provider,
                m.upstream,
                str(m.context_window),
                f"{m.input_price:g}",
                f"{m.output_price:g}",
                "yes" if m.tools else "no",
                state + (f"  {m.detail}" if m.detail and state not in ("ok", "reachable") else ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    groups: dict[str, list[str]] = {}
    for m in reply.models:
        for g in m.groups:
            groups.setdefault(g, []).append(m.name)
    lines += [f"group {g}: {' -> '.join(ms)}" for g, ms in groups.items()]
    lines.append(f"default: {reply.default}  (* = used by default)")
    return "\n".join(line.rstrip() for line in lines)


@click.group(invoke_without_command=True)
@click.option("--probe/--no-probe", default=True, help="Check that each provider answers.")
@json_option
@timeout_option
@click.pass_context
def cli(ctx: click.Context, probe: bool, as_json: bool, timeout: float) -> None:
    """List the configured models: provider, prices, groups, reachability, cooldowns."""
    if ctx.invoked_subcommand is not None:
        return
    with client(timeout) as c:
        reply = c.call(protocol.ModelsList(probe=probe))
    assert isinstance(reply, protocol.ModelsReply)
    if as_json:
        print_json(reply)
    else:
        click.echo(_render(reply))


@cli.command("chat")
@click.argument("prompt")
@click.option("--model", "-m", default=None, help="Model or group (default: the router's).")
@click.option("--system", "system_prompt", default=None, help="A system prompt.")
@click.option("--max-tokens", type=click.IntRange(1, 1_000_000), default=None)
@click.option("--temperature", type=click.FloatRange(0, 2), default=None)
@json_option
@timeout_option
def chat_cli(
    prompt: str,
    model: str | None,
    system_prompt: str | None,
    max_tokens: int | None,
    temperature: float | None,
    as_json: bool,
    timeout: float,
) -> None:
    """Ask a model directly; the answer is printed as it streams."""
    messages = [protocol.ChatMessage(role="user", content=prompt)]
    if system_prompt:
        messages.insert(0, protocol.ChatMessage(role="system", content=system_prompt))
    op = protocol.ModelChat(
        messages=messages, model=model, max_tokens=max_tokens, temperature=temperature
    )
    with client(timeout) as c:
        stream = c.stream(op)
        for event in stream:
            if isinstance(event, protocol.TokenDelta) and not as_json:
                click.echo(event.text, nl=False)
    reply = stream.result
    assert isinstance(reply, protocol.ChatReply)
    if as_json:
        print_json(reply)
    else:
        click.echo(
            f"\n[{reply.model} via {reply.provider}: {reply.input_tokens} in, "
            f"{reply.output_tokens} out{' (estimated)' if reply.estimated else ''}, "
            f"${reply.cost:.6f}]",
            err=True,
        )
