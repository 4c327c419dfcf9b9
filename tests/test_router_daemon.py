"""The router through a real daemon: the embedded model answers with no configuration at
all; a configured provider streams through ``model.chat``; the CLI shows models, usage and
budgets."""

from __future__ import annotations

import json

import pytest
import trio

from convergio_client import RemoteError
from convergio_client.trio_client import open_client
from convergiod import protocol as p
from tests.conftest import DaemonProcess
from tests.llm_server import LLMServer


async def test_daemon_without_configuration_answers_through_the_embedded_model(
    daemon: DaemonProcess,
) -> None:
    op = p.ModelChat(
        messages=[p.ChatMessage(role="user", content="Name three colours.")],
        max_tokens=24,
        temperature=0.0,
    )
    async with (
        open_client(paths=daemon.paths, timeout=120) as client,
        client.stream(op) as events,
    ):
        tokens = [e.text async for e in events if isinstance(e, p.TokenDelta)]
    reply = events.result
    assert isinstance(reply, p.ChatReply), daemon.logs()
    assert len(tokens) > 1
    assert reply.model == "local" and reply.provider == "local"
    assert "".join(tokens) == reply.text and reply.text.strip()
    assert reply.output_tokens >= len(tokens) and reply.input_tokens > 0
    assert reply.cost == 0.0


async def test_configured_provider_streams_through_the_daemon_and_is_accounted(
    daemon_factory,
    nursery: trio.Nursery,  # type: ignore[no-untyped-def]
) -> None:
    server = LLMServer()
    port = await nursery.start(server.serve)
    d: DaemonProcess = daemon_factory(
        f"""
[router]
default = "team"
[router.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
[router.models.fast]
provider = "mock"
upstream = "text;chunks=6"
input_price = 1000.0
output_price = 2000.0
[router.groups]
team = ["fast", "local"]
[router.budgets]
tenant_daily = 100.0
"""
    )
    op = p.ModelChat(messages=[p.ChatMessage(role="user", content="Hi")])
    async with open_client(paths=d.paths, timeout=30) as client:
        async with client.stream(op) as events:
            tokens = [e.text async for e in events if isinstance(e, p.TokenDelta)]
        reply = events.result
        assert isinstance(reply, p.ChatReply)
        assert "".join(tokens) == "Hello from the test server."  # deltas may be coalesced
        assert reply.model == "fast" and reply.cost == pytest.approx((21e3 + 6 * 2e3) / 1e6)
        with pytest.raises(RemoteError) as info:
            await client.call(p.ModelChat(messages=op.messages, model="missing"))
        assert info.value.code == "not_found"

    def cli(*args: str) -> object:
        out = d.cli(*args, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    models = await trio.to_thread.run_sync(cli, "models")
    by_name = {m["name"]: m for m in models["models"]}  # type: ignore[index]
    assert models["default"] == "team"  # type: ignore[index]
    assert by_name["fast"]["reachable"] is True and by_name["fast"]["groups"] == ["team"]
    assert by_name["local"]["kind"] == "local"
    usage = await trio.to_thread.run_sync(cli, "usage", "--by", "model")
    rows = {r["key"]: r for r in usage["rows"]}  # type: ignore[index]
    assert rows["fast"]["calls"] == 1 and rows["fast"]["input_tokens"] == 21
    budget = await trio.to_thread.run_sync(cli, "budget", "set", "0.01")
    assert budget["budgets"][0]["state"] == "block"  # type: ignore[index]
    shown = await trio.to_thread.run_sync(cli, "budget", "show")
    assert shown["budgets"][0]["limit"] == 0.01  # type: ignore[index]
    async with open_client(paths=d.paths, timeout=30) as client:
        with pytest.raises(RemoteError) as info:
            await client.call(op)
        assert info.value.code == "budget_exceeded"

    await trio.to_thread.run_sync(cli, "budget", "set", "0")  # removes the limit
    # A reload swaps the models without a restart.
    d.write_config(
        f"""
[router.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
[router.models.other]
provider = "mock"
upstream = "text;chunks=2"
"""
    )
    async with open_client(paths=d.paths, timeout=30) as client:
        await client.call(p.DaemonReload())
        reply = await client.call(p.ModelChat(messages=op.messages, model="other"))
        assert reply.model == "other" and reply.text == "Hello from"
