"""POST a JSON body, then read a server-sent-event stream: shared by the HTTP providers."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import trio

from convergiod.actors.router.http import ConnectError, HttpClient, ProtocolError
from convergiod.actors.router.reliability import ProviderError, parse_retry_after
from convergiod.actors.router.sse import SSEDecoder
from convergiod.config import RouterProviderConfig

from .base import Sink

__all__ = ["post_sse"]

_encode = msgspec.json.encode

OnEvent = Callable[[str, str], bool]

#: Reads merged into one batch at most (all without waiting), so a stream that arrives
#: faster than it is handled still goes out in bounded steps.
_MERGE_READS = 16

cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint


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
    ends. ``on_event`` queues output on ``sink``; the output of one network read — and of
    the bytes that had arrived meanwhile, read without waiting — is flushed together,
    before the next wait (and before a failure propagates). The batch that ends the
    stream (``on_event`` returned True) is left queued for the caller to flush with the
    call's end. HTTP errors and broken streams become ``ProviderError``."""
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
            feed = decoder.feed
            flush = sink.flush
            activity = sink.activity
            receive = response.receive
            receive_nowait = response.receive_nowait
            urgent = sink.urgent
            crowded = sink.crowded
            while chunk := await receive():
                activity()
                done = False
                try:
                    merged = 0
                    yielded = False
                    while True:
                        events = feed(chunk)
                        for event, data in events:
                            if on_event(event, data):
                                done = True
                                break
                        # What arrived while this was handled goes out with it (one
                        # frame to the caller, not one per read), unless the caller has
                        # had nothing yet.
                        if done or merged == _MERGE_READS or urgent():
                            break
                        more = receive_nowait()
                        if more is None:
                            # One event in one read: output comes at a model's pace, and
                            # nothing more would arrive while other tasks run.
                            if yielded or (merged == 0 and len(events) < 2) or not crowded():
                                break
                            # Other calls' tasks go first; what arrives meanwhile joins.
                            yielded = True
                            await cancel_shielded_checkpoint()
                            more = receive_nowait()
                            if more is None:
                                break
                        chunk = more
                        merged += 1
                except ProviderError:
                    await flush()  # what came before the failure still goes out
                    raise
                if done:
                    # The last batch stays queued: the caller sends it with the end of
                    # the call. The rest of the body is normally nothing but the end of
                    # the chunked framing: take what has arrived; if that is not all, it
                    # is read in the background, off the caller's path (the connection
                    # is pooled after).
                    try:
                        while receive_nowait() is not None:
                            pass
                    except ProtocolError:
                        # The answer is whole: a broken end of the body fails nothing
                        # but the connection (closed, not pooled, as not complete).
                        response.reusable = False
                        return
                    response.finish_later = True
                    return
                await flush()
    except ConnectError as exc:
        raise ProviderError(f"{provider}: {exc}") from None
    except ProtocolError as exc:
        raise ProviderError(f"{provider}: {exc}") from None
