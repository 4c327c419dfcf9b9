"""``convergio memory``: remember, search, forget, stats, export, import and backup.

Every op runs in the caller's tenant (from the connection, never from the message). The long
ones (export, import, backup) stream ``progress`` events that the CLI draws as a bar.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from convergiod import protocol
from convergiod.commands._common import client, json_option, print_json, timeout_option

if TYPE_CHECKING:
    from convergiod.actors.memory import messages as m
    from convergiod.daemon import Daemon
    from convergiod.gateway import Caller, RequestContext
    from convergiod.runtime import Pending

#: Seconds an op may wait for the memory actor (the request's own deadline still applies).
ASK_TIMEOUT = 120.0
LONG_TIMEOUT = 24 * 3600.0


async def _ask(daemon: Daemon, msg: Any, timeout: float = ASK_TIMEOUT) -> Any:
    assert daemon.system is not None
    return await daemon.system.ref("memory").ask(msg, timeout=timeout)


def _fact(f: m.Fact) -> protocol.MemoryFact:
    return protocol.MemoryFact(
        id=f.id,
        text=f.text,
        kind=f.kind,
        source=f.source,
        importance=f.importance,
        conversation=f.conversation,
        valid_from=f.valid_from,
        valid_to=f.valid_to,
        access_count=f.access_count,
    )


def _progress(ctx: RequestContext) -> Any:
    async def report(message: str, done: int, total: int | None) -> None:
        await ctx.emit(protocol.Progress(message=message, done=done, total=total))

    return report


# ----------------------------------------------------------------------------- daemon half


def _remember(tenant: str, op: protocol.MemoryRemember) -> m.Remember:
    from convergiod.actors.memory import messages as m

    return m.Remember(
        tenant=tenant,
        text=op.text,
        kind=op.kind,
        importance=op.importance,
        conversation=op.conversation,
        supersedes=op.supersedes,
    )


async def serve_remember(
    daemon: Daemon, ctx: RequestContext, op: protocol.MemoryRemember
) -> protocol.MemoryFact:
    return _fact(await _ask(daemon, _remember(ctx.caller.tenant, op)))


def serve_remember_now(
    daemon: Daemon, caller: Caller, request_id: int, op: protocol.MemoryRemember
) -> Pending | None:
    """``memory.remember`` with no task: the memory actor submits the write to the group
    commit at once and the answer goes out when it has committed (``MemoryActor.handle_now``).
    ``None`` (the usual path) when the tenant's database is not open yet."""
    from convergiod.runtime import NOT_NOW

    if daemon.system is None:
        return None
    pending = daemon.system.ref("memory").ask_now(_remember(caller.tenant, op))
    if pending is NOT_NOW:
        return None
    answer: Pending = pending.map(_fact)
    return answer


async def serve_search(
    daemon: Daemon, ctx: RequestContext, op: protocol.MemorySearch
) -> protocol.MemoryHits:
    from convergiod.actors.memory import messages as m

    hits = await _ask(
        daemon,
        m.Search(
            tenant=ctx.caller.tenant,
            query=op.query,
            limit=op.limit,
            kind=op.kind,
            conversation=op.conversation,
            at=op.at,
        ),
    )
    return protocol.MemoryHits(
        hits=[
            protocol.MemoryHit(
                fact=_fact(h.fact),
                score=h.score,
                keyword_rank=h.keyword_rank,
                vector_rank=h.vector_rank,
            )
            for h in hits
        ]
    )


async def serve_forget(
    daemon: Daemon, ctx: RequestContext, op: protocol.MemoryForget
) -> protocol.Ack:
    from convergiod.actors.memory import messages as m
    from convergiod.errors import OpError

    if not await _ask(daemon, m.Forget(tenant=ctx.caller.tenant, id=op.id)):
        raise OpError("not_found", f"fact {op.id} does not exist")
    return protocol.Ack(message=f"forgot fact {op.id}")


async def serve_stats(
    daemon: Daemon, ctx: RequestContext, op: protocol.MemoryStats
) -> protocol.MemoryStatsReply:
    import msgspec

    from convergiod.actors.memory import messages as m

    stats = await _ask(daemon, m.Stats(tenant=ctx.caller.tenant))
    return protocol.MemoryStatsReply(**msgspec.structs.asdict(stats))


async def serve_export(
    daemon: Daemon, ctx: RequestContext, op: protocol.MemoryExport
) -> protocol.MemoryTransfer:
    from convergiod.actors.memory import messages as m
    from convergiod.commands._common import check_admin

    check_admin(ctx.caller.role)  # the path is on the daemon's machine
    done = await _ask(
        daemon,
        m.Export(tenant=ctx.caller.tenant, path=op.path, progress=_progress(ctx)),
        LONG_TIMEOUT,
    )
    return protocol.MemoryTransfer(path=done.path, records=done.records, added=done.added)


async def serve_import(
    daemon: Daemon, ctx: RequestContext, op: protocol.MemoryImport
) -> protocol.MemoryTransfer:
    from convergiod.actors.memory import messages as m
    from convergiod.commands._common import check_admin

    check_admin(ctx.caller.role)  # the path is on the daemon's machine
    done = await _ask(
        daemon,
        m.Import(tenant=ctx.caller.tenant, path=op.path, progress=_progress(ctx)),
        LONG_TIMEOUT,
    )
    return protocol.MemoryTransfer(path=done.path, records=done.records, added=done.added)


async def serve_backup(
    daemon: Daemon, ctx: RequestContext, op: protocol.MemoryBackup
) -> protocol.MemoryTransfer:
    from convergiod.actors.memory import messages as m
    from convergiod.commands._common import check_admin

    check_admin(ctx.caller.role)  # the path is on the daemon's machine
    done = await _ask(
        daemon,
        m.Backup(tenant=ctx.caller.tenant, path=op.path, progress=_progress(ctx)),
        LONG_TIMEOUT,
    )
    return protocol.MemoryTransfer(path=done.path, records=done.records, added=done.added)


SERVE: dict[type, Any] = {
    protocol.MemoryRemember: serve_remember,
    protocol.MemorySearch: serve_search,
    protocol.MemoryForget: serve_forget,
    protocol.MemoryStats: serve_stats,
    protocol.MemoryExport: serve_export,
    protocol.MemoryImport: serve_import,
    protocol.MemoryBackup: serve_backup,
}


# ----------------------------------------------------------------------------- client half


class _Bar:
    """A one-line progress bar on stderr, drawn from ``progress`` events."""

    WIDTH = 30

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.drawn = False

    def draw(self, event: protocol.Progress) -> None:
        if not self.enabled:
            return
        if event.total:
            frac = min(1.0, event.done / event.total)
            fill = int(frac * self.WIDTH)
            bar = "#" * fill + "-" * (self.WIDTH - fill)
            line = f"{event.message} [{bar}] {event.done:,}/{event.total:,} {frac:4.0%}"
        else:
            line = f"{event.message}... {event.done:,}" if event.done else f"{event.message}..."
        sys.stderr.write("\r\x1b[2K" + line)
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _run_long(op: protocol.Op, as_json: bool, timeout: float) -> protocol.MemoryTransfer:
    bar = _Bar(enabled=not as_json)
    try:
        with client(timeout) as c:
            stream = c.stream(op)
            for event in stream:
                if isinstance(event, protocol.Progress):
                    bar.draw(event)
    finally:
        bar.close()
    result = stream.result
    assert isinstance(result, protocol.MemoryTransfer)
    return result


def _absolute(file: str) -> str:
    """The daemon refuses relative paths: resolve against the CLI's working directory."""
    return str(Path(file).expanduser().absolute())


@click.group()
def cli() -> None:
    """Remember facts and find them again (keyword and meaning), export, import, back up."""


@cli.command()
@click.argument("text")
@click.option("--kind", default="note", show_default=True, help="What kind of fact this is.")
@click.option("--importance", type=click.FloatRange(0, 1), default=0.5, show_default=True)
@click.option("--supersedes", type=int, help="Id of an older fact this one replaces.")
@json_option
@timeout_option
def remember(
    text: str,
    kind: str,
    importance: float,
    supersedes: int | None,
    as_json: bool,
    timeout: float,
) -> None:
    """Store TEXT as a fact; print its id."""
    with client(timeout) as c:
        fact = c.call(
            protocol.MemoryRemember(
                text=text, kind=kind, importance=importance, supersedes=supersedes
            )
        )
    if as_json:
        print_json(fact)
    else:
        click.echo(f"remembered fact {fact.id}")


@cli.command()
@click.argument("query")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--kind", help="Only facts of this kind.")
@json_option
@timeout_option
def search(query: str, limit: int, kind: str | None, as_json: bool, timeout: float) -> None:
    """Find facts matching QUERY by keyword and by meaning, best first."""
    with client(timeout) as c:
        result = c.call(protocol.MemorySearch(query=query, limit=limit, kind=kind))
    if as_json:
        print_json(result)
        return
    if not result.hits:
        click.echo("no matching facts")
    for hit in result.hits:
        click.echo(f"{hit.fact.id:>6}  {hit.score:.4f}  [{hit.fact.kind}] {hit.fact.text}")


@cli.command()
@click.argument("fact_id", metavar="ID", type=int)
@json_option
@timeout_option
def forget(fact_id: int, as_json: bool, timeout: float) -> None:
    """Delete the fact ID."""
    with client(timeout) as c:
        ack = c.call(protocol.MemoryForget(id=fact_id))
    if as_json:
        print_json(ack)
    else:
        click.echo(ack.message)


@cli.command()
@json_option
@timeout_option
def stats(as_json: bool, timeout: float) -> None:
    """Counts and sizes of your memory."""
    with client(timeout) as c:
        s = c.call(protocol.MemoryStats())
    if as_json:
        print_json(s)
        return
    click.echo(
        f"tenant {s.tenant}: {s.facts:,} facts ({s.current_facts:,} current), "
        f"{s.conversations:,} conversations, {s.messages:,} messages, "
        f"{s.usage_records:,} usage records, {s.tasks:,} tasks\n"
        f"database {s.bytes / (1 << 20):.1f} MiB, schema v{s.schema_version}, "
        f"{s.vectors:,} vectors of {s.dim} dims; {s.writes:,} writes in "
        f"{s.group_commits:,} group commits since the daemon started"
    )


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@timeout_option
def export(file: str, as_json: bool, timeout: float) -> None:
    """Write every fact to FILE (JSONL, one checksum per line)."""
    done = _run_long(protocol.MemoryExport(path=_absolute(file)), as_json, timeout)
    if as_json:
        print_json(done)
    else:
        click.echo(f"exported {done.records:,} facts to {done.path}")


@cli.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@json_option
@timeout_option
def import_(file: str, as_json: bool, timeout: float) -> None:
    """Import an export FILE; facts already present are skipped."""
    done = _run_long(protocol.MemoryImport(path=_absolute(file)), as_json, timeout)
    if as_json:
        print_json(done)
    else:
        click.echo(
            f"imported {done.added:,} new facts ({done.records - done.added:,} already present)"
        )


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@json_option
@timeout_option
def backup(file: str, as_json: bool, timeout: float) -> None:
    """Copy the memory database to FILE while the daemon keeps serving."""
    done = _run_long(protocol.MemoryBackup(path=_absolute(file)), as_json, timeout)
    if as_json:
        print_json(done)
    else:
        click.echo(f"backed up {done.records:,} pages to {done.path}")
