"""The Convergio Python client: a thin library over the daemon's ZeroMQ protocol.

Blocking API (no Trio import, fast to start)::

    from convergio_client import Client
    from convergiod.protocol import Ping

    with Client() as client:
        print(client.call(Ping()).pid)

Trio API: ``convergio_client.trio_client.open_client()``.
"""

from convergio_client.errors import (
    ClientTimeout,
    ConvergioError,
    DaemonNotRunning,
    RemoteError,
)
from convergio_client.sync import Client, Stream

__all__ = [
    "Client",
    "ClientTimeout",
    "ConvergioError",
    "DaemonNotRunning",
    "RemoteError",
    "Stream",
]
