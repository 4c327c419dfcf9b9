"""The service watchdog: ``WATCHDOG=1`` goes out only while the daemon is healthy.

Healthy means two things at once, checked by ``health_problem``:

- the supervision tree is alive (the root supervisor has not given up), and
- a probe sent through the ``health`` actor came back recently. The probe is sent by the
  daemon's health loop on the event loop and answered by an actor of the tree, so a fresh
  answer proves that the loop runs and that the tree delivers messages.

The pinger itself is a task on the same event loop: if something blocks the loop, no ping is
sent, and the service manager (``WatchdogSec=``) kills and restarts the daemon.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from convergiod.service.notify import Notifier

log = logging.getLogger("convergiod.service")


def health_problem(
    *, tree_alive: bool, last_probe_ok: float, now: float, probe_interval: float
) -> str | None:
    """None when healthy, else what is wrong, in a few words for ``STATUS=``.

    >>> health_problem(tree_alive=True, last_probe_ok=10.0, now=11.0, probe_interval=1.0)
    >>> health_problem(tree_alive=True, last_probe_ok=10.0, now=16.0, probe_interval=1.0)
    'no health probe answered for 6.0 s'
    """
    if not tree_alive:
        return "the actor tree has failed"
    stale = now - last_probe_ok
    # A probe goes out every probe_interval and may take up to 2 s to answer; allow two misses.
    if stale >= 3 * probe_interval + 2.0:
        return f"no health probe answered for {stale:.1f} s"
    return None


async def run_watchdog(
    notifier: Notifier,
    interval: float,
    problem: Callable[[], str | None],
    *,
    healthy_status: Callable[[], str],
) -> None:
    """Ping every ``interval`` seconds while ``problem()`` is None; say in ``STATUS=`` when the
    daemon turns unhealthy and when it recovers. Runs until cancelled."""
    was_healthy = True
    while True:
        what = problem()
        if what is None:
            notifier.watchdog()
            if not was_healthy:
                log.warning("healthy again: watchdog pings resume")
                notifier.status(healthy_status())
        elif was_healthy:
            log.error("unhealthy: %s; watchdog pings stop", what)
            notifier.status(f"unhealthy: {what}")
        was_healthy = what is None
        await trio.sleep(interval)
