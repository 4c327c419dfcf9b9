"""Reloading without a restart: the ``Reload`` message and its two-phase fan-out.

The contract for service actors (router, tool, plugin, orchestrator, ...)
--------------------------------------------------------------------------
An actor that can take new settings (or re-read agents, providers, budgets, plugins) while it
runs sets the class attribute ``reloadable = True`` and handles ``Reload``::

    class RouterActor(Actor):
        reloadable: ClassVar[bool] = True
        reply_errors = (OpError,)   # a refusal is the answer, not a crash

        async def handle(self, msg):
            if isinstance(msg, Reload):
                table = load_providers(msg.config)  # read and validate everything first;
                                                    # raise OpError("bad_request", ...) if bad
                if not msg.dry_run:
                    self.table = table              # then swap, in one step
                return None
            ...

The daemon sends every reloadable actor ``Reload(dry_run=True)`` first, in tree order. If any
of them raises ``OpError`` the reload is refused as a whole, nothing has changed anywhere, and
the caller gets that error (so its message must name the file and key that is wrong). Only then
does the daemon switch ``daemon.config`` and send ``Reload(dry_run=False)``; an actor that
fails in this phase keeps its old state and is reported, the others carry on.

Rules: handle ``Reload`` quickly (blocking reads go through ``trio.to_thread``) within
``RELOAD_TIMEOUT``; never drop in-flight work: requests that started on the old settings may
finish on them. An actor that is restarted later builds itself from ``daemon.config``, so read
``daemon.config`` in the factory (``start=lambda: RouterActor(daemon.config.router)``), not
once in ``child_spec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from convergiod.config import Config
from convergiod.errors import OpError
from convergiod.runtime import (
    ActorCrashed,
    ActorNotFound,
    ActorStopped,
    ActorSystem,
    AskTimeout,
    MailboxFull,
)

RELOAD_TIMEOUT = 10.0
_RUNTIME_ERRORS = (ActorCrashed, ActorNotFound, ActorStopped, AskTimeout, MailboxFull)

#: Config sections that the running daemon cannot change; a new value waits for a restart.
RESTART_ONLY: tuple[str, ...] = ("supervisor",)


@dataclass(frozen=True, slots=True)
class Reload:
    """Sent to every actor whose class has ``reloadable = True``; see the module docstring."""

    config: Config
    previous: Config
    #: True: validate only and change nothing. False: apply.
    dry_run: bool


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted names of the settings that differ, e.g. ``["gateway.max_in_flight"]``."""
    out: list[str] = []
    _diff(msgspec.to_builtins(old), msgspec.to_builtins(new), "", out)
    return out


def _diff(old: Any, new: Any, prefix: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            _diff(old.get(key), new.get(key), f"{prefix}{key}.", out)
    elif old != new:
        out.append(prefix.rstrip("."))


#: Single keys that apply only at the next start (the tcp door is bound once).
RESTART_ONLY_KEYS: tuple[str, ...] = ("gateway.tcp",)


def needs_restart(keys: list[str]) -> list[str]:
    return [k for k in keys if k.split(".", 1)[0] in RESTART_ONLY or k in RESTART_ONLY_KEYS]


def reloadable_actors(system: ActorSystem) -> list[str]:
    """Names of the running actors whose class says ``reloadable = True``, in tree order."""
    from convergiod.runtime.cell import ActorCell

    names: list[str] = []
    for info in system.info():
        if info.kind != "actor":
            continue
        # The runtime has no public accessor for the current instance; read the cell's.
        cell = system._nodes.get(info.name)
        instance = cell.instance if isinstance(cell, ActorCell) else None
        if getattr(type(instance), "reloadable", False) is True:
            names.append(info.name)
    return names


async def check(system: ActorSystem, names: list[str], config: Config, previous: Config) -> None:
    """Phase one: every actor validates ``config``; the first refusal raises ``OpError``."""
    for name in names:
        try:
            await system.ref(name).ask(
                Reload(config=config, previous=previous, dry_run=True), timeout=RELOAD_TIMEOUT
            )
        except OpError as exc:
            raise OpError(exc.code, f"{name}: {exc.message}") from None
        except _RUNTIME_ERRORS as exc:
            raise OpError(
                "unavailable", f"{name} could not check the new configuration: {exc}"
            ) from None


async def apply(
    system: ActorSystem, names: list[str], config: Config, previous: Config
) -> tuple[list[str], list[str]]:
    """Phase two: every actor applies ``config``. Returns (reloaded, failures)."""
    done: list[str] = []
    failed: list[str] = []
    for name in names:
        try:
            await system.ref(name).ask(
                Reload(config=config, previous=previous, dry_run=False), timeout=RELOAD_TIMEOUT
            )
        except OpError as exc:
            failed.append(f"{name}: {exc.message}")
        except _RUNTIME_ERRORS as exc:
            failed.append(f"{name}: {exc}")
        else:
            done.append(name)
    return done, failed
