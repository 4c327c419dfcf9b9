"""Convergio's actor runtime: supervised Trio actors with Erlang/OTP supervisor semantics.

Usage::

    spec = SupervisorSpec(name="root", children=[ChildSpec(name="echo", start=Echo)])
    async with open_actor_system(spec) as system:
        reply = await system.ref("echo").ask("hi")
"""

from .actor import NOT_NOW, Actor
from .doorbell import Doorbell
from .errors import (
    ActorCrashed,
    ActorError,
    ActorKilled,
    ActorNotFound,
    ActorStopped,
    AskTimeout,
    ChildStartError,
    MailboxFull,
    SupervisorEscalation,
)
from .events import ActorInfo, EventCallback
from .node import State
from .pending import Pending
from .ref import ActorRef
from .spec import ChildSpec, Restart, Strategy, SupervisorSpec
from .system import ActorSystem, open_actor_system

__all__ = [
    "NOT_NOW",
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorInfo",
    "ActorKilled",
    "ActorNotFound",
    "ActorRef",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "ChildSpec",
    "ChildStartError",
    "Doorbell",
    "EventCallback",
    "MailboxFull",
    "Pending",
    "Restart",
    "State",
    "Strategy",
    "SupervisorEscalation",
    "SupervisorSpec",
    "open_actor_system",
]
