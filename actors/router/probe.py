"""Reachability of the configured providers: one ``GET <base_url>/models`` each, at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from convergiod.actors.router.http import ConnectError, ProtocolError
from convergiod.actors.router.providers.base import api_key

if TYPE_CHECKING:
    from convergiod.actors.router.core import Router

__all__ = ["probe_providers"]

PROBE_TIMEOUT = 3.0


async def probe_providers(router: Router) -> dict[str, tuple[bool, str]]:
    """provider name -> (reachable, detail). Any HTTP answer means reachable; 401/403 are
    reported (a wrong or missing key)."""
    results: dict[str, tuple[bool, str]] = {}
    providers = router.config.providers

    async def one(name: str) -> None:
        cfg = providers[name]
        base = cfg.base_url or ("https://api.anthropic.com/v1" if cfg.kind == "anthropic" else "")
        if not base:
            results[name] = (False, "no base_url")
            return
        headers: list[tuple[str, str]] = []
        key = api_key(cfg.api_key_env)
        if key and cfg.kind == "anthropic":
            headers += [("x-api-key", key), ("anthropic-version", cfg.anthropic_version)]
        elif key:
            headers.append(("authorization", f"Bearer {key}"))
        try:
            with trio.fail_after(PROBE_TIMEOUT):
                async with router.http.request(
                    "GET",
                    base.rstrip("/") + "/models",
                    headers=headers,
                    connect_timeout=min(cfg.connect_timeout, PROBE_TIMEOUT),
                ) as response:
                    await response.read()
        except (ConnectError, ProtocolError) as exc:
            results[name] = (False, str(exc))
            return
        except trio.TooSlowError:
            results[name] = (False, f"no answer within {PROBE_TIMEOUT:g} s")
            return
        if response.status in (401, 403):
            results[name] = (True, f"HTTP {response.status}: check {cfg.api_key_env or 'the key'}")
        else:
            results[name] = (True, f"HTTP {response.status}")

    async with trio.open_nursery() as nursery:
        for name in providers:
            if providers[name].kind != "local":
                nursery.start_soon(one, name)
    return results
