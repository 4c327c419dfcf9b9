"""A plugin worker process (``isolation = "process"``): runs jobs sent by the daemon.

``python -m convergiod.actors.plugin.worker ENDPOINT CACHE_DIR STACK TICK`` connects a
``DEALER`` to the daemon's ``ipc://`` endpoint, says ``Hello``, then answers each ``JobMsg``
with ``DoneMsg`` or ``ErrorMsg``: msgspec Structs encoded as MessagePack, one per frame, like
the daemon's own protocol. One job at a time; it exits when its parent goes away.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import msgspec

from convergiod.actors.plugin.runner import Job
from convergiod.actors.plugin.sandbox import RunResult


class _Msg(msgspec.Struct, kw_only=True, tag_field="type"):
    pass


class Hello(_Msg, tag="hello"):
    pid: int


class JobMsg(_Msg, tag="job"):
    id: int
    job: Job


class DoneMsg(_Msg, tag="done"):
    id: int
    result: RunResult


class ErrorMsg(_Msg, tag="error"):
    id: int
    code: str
    message: str


WorkerMessage = Hello | JobMsg | DoneMsg | ErrorMsg
encode = msgspec.msgpack.Encoder().encode
decode = msgspec.msgpack.Decoder(WorkerMessage).decode


def main(argv: list[str]) -> int:
    import zmq

    from convergiod.actors.plugin.runner import ProgramCache, execute
    from convergiod.actors.plugin.sandbox import Sandbox, SandboxError

    endpoint, cache_dir, stack, tick = argv[0], argv[1], int(argv[2]), float(argv[3])
    # The daemon's pid, as it gave it: read here, ``getppid`` would already be another
    # process's if the daemon died while this one was starting.
    parent = int(argv[4]) if len(argv) > 4 else os.getppid()
    sandbox = Sandbox(Path(cache_dir) if cache_dir else None, max_wasm_stack=stack, tick=tick)
    cache = ProgramCache(sandbox)
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    sock.send(encode(Hello(pid=os.getpid())))
    try:
        while True:
            if not sock.poll(1000):
                if os.getppid() != parent:
                    return 0
                continue
            msg = decode(sock.recv())
            if not isinstance(msg, JobMsg):
                continue
            reply: _Msg
            try:
                reply = DoneMsg(id=msg.id, result=execute(cache, msg.job))
            except SandboxError as exc:
                reply = ErrorMsg(id=msg.id, code=exc.code, message=exc.message)
            except Exception as exc:
                reply = ErrorMsg(id=msg.id, code="internal", message=f"{type(exc).__name__}: {exc}")
            sock.send(encode(reply))
    except KeyboardInterrupt:
        return 0
    finally:
        sock.close(0)
        ctx.term()
        sandbox.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
