"""Living under a service manager: systemd (``sd_notify`` readiness, status, watchdog, reload)
and launchd, plus the rendering and installation of their unit files and property lists.

- ``notify``: the ``$NOTIFY_SOCKET`` datagram client (no dependency on libsystemd).
- ``watchdog``: when the daemon counts as healthy, and the task that pings ``WATCHDOG=1``.
- ``reload``: the ``Reload`` message that reloadable service actors receive, and its fan-out.
- ``units``: systemd units and launchd property lists rendered for this installation.
- ``install``: what ``convergio service install|uninstall|status|logs`` write and run.
"""
