"""``shell.exec``: run a command in the workspace, contained.

The command runs in its own session and process group (``start_new_session``); the whole
group is killed with SIGKILL on timeout, on cancellation, when its output passes the cap, when
it has more than ``tools.shell.max_processes`` processes alive (a watchdog counts them, which
also contains fork bombs when ``RLIMIT_NPROC`` cannot, e.g. for root), and when the main
process exits (background jobs do not outlive the call). The environment is scrubbed of
secrets, the working directory is inside the sandbox, and destructive patterns are refused
before anything runs.

Not a jail: an approved command runs with the user's rights and can read outside the
workspace. Approval (``ask`` by default) is the boundary.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec
import trio

from convergiod.errors import OpError

from ..base import Policy, ToolContext, ToolOutput
from . import ToolEnv
from .fs_read import _Args
from .guard import destructive, scrubbed_env

WATCH_INTERVAL = 0.05
MESSAGE_TAIL = 2000


class ExecArgs(_Args):
    command: Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)] | None = None
    argv: Annotated[list[str], msgspec.Meta(min_length=1, max_length=10_000)] | None = None
    cwd: Annotated[str, msgspec.Meta(description="working directory in the workspace")] = "."
    timeout: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None
    stdin: str | None = None
    env: dict[str, str] = {}


@dataclass
class _Run:
    cap: int
    out: bytearray = field(default_factory=bytearray)
    truncated: bool = False
    too_many: int = 0
    drained: trio.Event = field(default_factory=trio.Event)


class ShellExec:
    name = "shell.exec"
    description = (
        "Run a shell command (`command`, run by /bin/sh) or a program with arguments (`argv`, "
        "no shell) in the workspace. stdout and stderr are merged. Background processes are "
        "killed when the command exits."
    )
    args_type: type[msgspec.Struct] = ExecArgs
    default_policy: Policy = "ask"

    def __init__(self, env: ToolEnv) -> None:
        self.env = env

    def summarize(self, args: ExecArgs) -> str:
        what = args.command if args.command is not None else " ".join(args.argv or [])
        return f"run `{what}` in {args.cwd}"

    def approval_key(self, ctx: ToolContext, args: ExecArgs) -> str:
        """``always`` covers exactly this command, in this directory of this workspace."""
        what: Any = args.command if args.command is not None else args.argv
        return msgspec.json.encode([str(ctx.workspace), args.cwd, what]).decode()

    async def run(self, ctx: ToolContext, args: ExecArgs) -> ToolOutput:
        cfg = self.env.config.shell
        if (args.command is None) == (args.argv is None):
            raise OpError("bad_request", "give exactly one of `command` and `argv`")
        text = args.command if args.command is not None else " ".join(args.argv or [])
        why = destructive(text)
        if why is not None:
            raise OpError("sandbox_denied", f"refused: the command looks like {why}")
        sb = self.env.sandbox(ctx)
        fd, cwd = await self.env.run_sync(sb.open_dir, args.cwd)
        os.close(fd)
        argv = (
            [cfg.shell, "-c", args.command] if args.command is not None else list(args.argv or [])
        )
        env = scrubbed_env(os.environ, remove=self.env.scrub_env, extra=args.env)
        timeout = min(args.timeout or cfg.timeout, cfg.max_timeout, ctx.timeout)
        nproc = await self.env.run_sync(_nproc_limit, cfg.max_processes)
        limits = _limits(nproc, cfg.max_memory_mib)
        try:
            proc = await trio.lowlevel.open_process(
                argv,
                stdin=subprocess.PIPE if args.stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=limits,
            )
        except OSError as exc:
            raise OpError("bad_request", f"cannot run {argv[0]!r}: {exc.strerror}") from None
        run = _Run(cap=cfg.max_output_bytes)
        timed_out = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, proc, run)
                nursery.start_soon(self._watch, proc.pid, run, cfg.max_processes)
                if args.stdin is not None:
                    nursery.start_soon(_feed, proc, args.stdin.encode())
                with trio.move_on_after(timeout) as scope:
                    await proc.wait()
                timed_out = scope.cancelled_caught
                _kill_group(proc.pid)
                with trio.move_on_after(1.0):
                    await run.drained.wait()
                nursery.cancel_scope.cancel()
        finally:
            _kill_group(proc.pid)
            with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                await proc.wait()
        output = run.out.decode("utf-8", errors="replace")
        shown = f"`{text[:200]}`"
        if run.too_many:
            raise OpError(
                "sandbox_denied",
                f"{shown} had more than {cfg.max_processes} processes "
                f"(tools.shell.max_processes); its process group was killed",
            )
        if timed_out:
            raise OpError(
                "timeout",
                f"{shown} did not finish within {timeout:g} s; its process group was killed. "
                f"Output so far:\n{output[-MESSAGE_TAIL:]}",
            )
        code = proc.returncode
        assert code is not None
        status = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
        note = (
            f"\n[output truncated at {run.cap} bytes; the command was stopped]"
            if run.truncated
            else ""
        )
        return ToolOutput(
            content=f"{output}{note}\n[{status}]",
            data={"exit_code": code, "cwd": sb.relative(cwd)},
            truncated=run.truncated,
        )

    async def _pump(self, proc: Any, run: _Run) -> None:
        stream = proc.stdout
        try:
            while chunk := await stream.receive_some(65536):
                room = run.cap - len(run.out)
                run.out += chunk[:room]
                if len(chunk) > room:
                    run.truncated = True
                    _kill_group(proc.pid)
                    break
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            run.drained.set()

    async def _watch(self, pgid: int, run: _Run, limit: int) -> None:
        while True:
            await trio.sleep(WATCH_INTERVAL)
            count = await self.env.run_sync(_group_size, pgid)
            if count > limit:
                run.too_many = count
                _kill_group(pgid)
                return


async def _feed(proc: Any, data: bytes) -> None:
    try:
        await proc.stdin.send_all(data)
        await proc.stdin.aclose()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _kill_group(pgid: int) -> None:
    """SIGKILL the group until it is empty: a forking process with SIGKILL pending cannot
    create new children, so a few rounds empty even a fork bomb."""
    for _ in range(50):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        if _group_size(pgid) == 0:
            return


def _group_size(pgid: int) -> int:
    """Live (not zombie) processes in process group ``pgid``, from /proc (0 elsewhere)."""
    count = 0
    try:
        pids = os.listdir("/proc")
    except OSError:
        return 0
    for pid in pids:
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            count += 1
    return count


def _nproc_limit(allowance: int) -> int | None:
    """RLIMIT_NPROC counts every task of the user, so the limit is the user's current count
    plus ``allowance``. None for root (the kernel does not apply it; the watchdog does)."""
    uid = os.getuid()
    if uid == 0:
        return None
    tasks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                tasks += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return tasks + allowance


def _limits(nproc: int | None, memory_mib: int) -> Any:
    def apply() -> None:  # runs in the child between fork and exec: syscalls only
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
            soft = nproc if hard == resource.RLIM_INFINITY else min(nproc, hard)
            resource.setrlimit(resource.RLIMIT_NPROC, (soft, hard))
        if memory_mib:
            size = memory_mib << 20
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return apply
