"""POST a JSON body, then read a server-sent-event stream: shared by the HTTP providers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from convergiod.actors.router.http import ConnectError, HttpClient, ProtocolError
from convergiod.actors.router.reliability import ProviderError, parse_retry_after
from convergiod.actors.router.sse import SSEDecoder
from convergiod.config import RouterProviderConfig

from .base import Sink

__all__ = ["post_sse"]

_encode = msgspec.json.encode

OnEvent = Callable[[str, str], Awaitable[bool]]


async def post_sse(
    client: HttpClient,
    url: str,
    headers: list[tuple[str, str]],
    body: object,
    config: RouterProviderConfig,
    provider: str,
    sink: Sink,
    on_event: OnEvent,
) -> None:
    """Stream the response's events into ``on_event`` until it returns True or the body
    ends. HTTP errors and broken streams become ``ProviderError``."""
    try:
        async with client.request(
            "POST",
            url,
            headers=headers,
            body=_encode(body),
            connect_timeout=config.connect_timeout,
            max_connections=config.max_connections,
        ) as response:
            if response.status != 200:
                try:
                    text = (await response.read(65536)).decode("utf-8", "replace")
                except ProtocolError:
                    text = ""
                raise ProviderError.from_status(
                    response.status,
                    text,
                    parse_retry_after(response.header("retry-after")),
                    provider,
                )
            decoder = SSEDecoder()
            async for chunk in response.iter_bytes():
                sink.activity()
                for event, data in decoder.feed(chunk):
                    if await on_event(event, data):
                        # Read the rest (normally nothing but the end of the chunked
                        # body) so the connection can be reused.
                        async for _ in response.iter_bytes():
                            pass
                        return
    except ConnectError as exc:
        raise ProviderError(f"{provider}: {exc}") from None
    except ProtocolError as exc:
        raise ProviderError(f"{provider}: {exc}") from None
