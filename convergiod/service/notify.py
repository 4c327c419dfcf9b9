"""The systemd notification protocol (``sd_notify``): one datagram of ``KEY=VALUE`` lines sent
to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``.

Without ``$NOTIFY_SOCKET`` (not under systemd, or under launchd) every method is a no-op, so the
daemon calls them unconditionally. Sending never blocks and never raises: a service manager
that stopped listening must not take the daemon down with it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

log = logging.getLogger("convergiod.service")


class Notifier:
    """Sends state changes to the service manager.

    >>> n = Notifier(None)
    >>> n.enabled, n.watchdog_interval
    (False, None)
    >>> n.ready("serving")  # no-op without a socket
    """

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._warned = False
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_env(cls, env: MutableMapping[str, str], *, unset: bool = False) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from ``env``.

        With ``unset`` the variables are removed from ``env`` (pass ``os.environ``), so
        processes the daemon spawns (tools, plugins in workers) do not inherit them.
        """
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        raw = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if raw.isdigit() and int(raw) > 0 and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        if unset:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(key, None)
        return cls(address, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half the manager's timeout, as sd_watchdog_enabled
        advises, or None when the manager asked for no watchdog."""
        if self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2e6

    # ------------------------------------------------------------------ the messages

    def ready(self, status: str | None = None) -> None:
        """Start-up (or a reload) is complete."""
        self.send(READY="1", STATUS=status)

    def reloading(self, status: str | None = None) -> None:
        """A reload begins; ``ready`` must follow. ``MONOTONIC_USEC`` lets systemd (253+,
        ``Type=notify-reload``) match this message to the reload it asked for."""
        self.send(RELOADING="1", MONOTONIC_USEC=str(monotonic_usec()), STATUS=status)

    def stopping(self, status: str | None = None) -> None:
        self.send(STOPPING="1", STATUS=status)

    def status(self, text: str) -> None:
        self.send(STATUS=text)

    def watchdog(self) -> None:
        self.send(WATCHDOG="1")

    def send(self, **fields: str | None) -> bool:
        """Send one datagram with the fields that are not None; True if it was sent."""
        if self.address is None:
            return False
        payload = "".join(
            f"{key}={_one_line(value)}\n" for key, value in fields.items() if value is not None
        ).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, _sockaddr(self.address))
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)
                self._warned = True
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares ``MONOTONIC_USEC`` with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _sockaddr(address: str) -> str | bytes:
    # "@name" is a socket in the Linux abstract namespace (a leading NUL byte).
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


def _one_line(value: str) -> str:
    # A newline would start a new KEY=VALUE assignment.
    return " ".join(value.splitlines())
