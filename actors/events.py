"""The ``events`` actor: publishes daemon events on the ``PUB`` socket.

The socket belongs to the daemon, not to this actor, so subscribers stay connected across a
restart of the actor; events raised while it is down wait in its mailbox (which survives the
restart) and go out when it is back.
"""

from __future__ import annotations

import logging

import trio

from convergiod import protocol
from convergiod.runtime import NOT_NOW, Actor
from convergiod.zmqtrio import TrioSocket

log = logging.getLogger("convergiod.events")


class EventsActor(Actor):
    def __init__(self, pub: TrioSocket) -> None:
        self._pub = pub

    def handle_now(self, msg: object) -> object:
        """Publish at once when the socket takes it (the daemon asks this only while the
        actor is idle, ``ActorRef.idle``: nothing queued that this would overtake)."""
        if not isinstance(msg, protocol.PubEvent):
            return NOT_NOW
        try:
            if self._pub.try_send_multipart((msg.topic.encode(), protocol.encode(msg))):
                return None
        except trio.ClosedResourceError:
            log.debug("event %s dropped: the PUB socket is closed", msg.topic)
            return None
        return NOT_NOW

    async def handle(self, msg: object) -> None:
        if not isinstance(msg, protocol.PubEvent):
            raise TypeError(f"events actor cannot publish {type(msg).__name__}")
        try:
            await self._pub.send_multipart((msg.topic.encode(), protocol.encode(msg)))
        except trio.ClosedResourceError:
            log.debug("event %s dropped: the PUB socket is closed", msg.topic)
