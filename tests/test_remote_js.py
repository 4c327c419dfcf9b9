"""The JavaScript client (clients/js, on the `zeromq` npm package) against a real daemon over
tcp + CURVE: connection file, streamed ticks, an `ask` answer streamed token by token, cancel.
It shows the protocol is language-neutral."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import trio

from tests.conftest import DaemonProcess
from tests.llm_server import LLMServer
from tests.remote_helpers import TCP_CONFIG, add_tenant, connection_path, pair

JS = Path(__file__).resolve().parent.parent / "clients" / "js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed on this machine"),
    pytest.mark.skipif(
        not (JS / "node_modules" / "zeromq").is_dir(),
        reason="clients/js/node_modules is missing: run `npm ci` in clients/js (make test does)",
    ),
]


async def test_js_client_streams_an_answer_over_curve_tcp(
    daemon_factory,
    nursery: trio.Nursery,  # type: ignore[no-untyped-def]
) -> None:
    server = LLMServer()
    port = await nursery.start(server.serve)
    d: DaemonProcess = await trio.to_thread.run_sync(
        daemon_factory,
        TCP_CONFIG
        + f"""
[router]
default = "fake"
[router.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
[router.models.fake]
provider = "mock"
upstream = "text;chunks=6"
""",
    )
    await trio.to_thread.run_sync(add_tenant, d, "web")
    await trio.to_thread.run_sync(pair, d, "browser", "web")
    assert NODE is not None
    env = {
        **os.environ,
        "CONVERGIO_CONNECTION": str(connection_path(d, "browser")),
        "CONVERGIO_TENANT": "web",
    }
    result = await trio.run_process(
        [NODE, "--test", "test/"],
        cwd=JS,
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, out
    assert "# pass 6" in out and "# skipped 0" in out, out
