"""Who may talk to the daemon over the network, and how much.

- ``keys``: the daemon's CURVE key pair (made once, kept in the data directory, mode 0600).
- ``registry``: tenants and paired clients (public key → name, tenant, role), a live view of
  two 0600 files that ops change without a restart.
- ``zap``: the ZAP handler (RFC 27) that lets a CURVE handshake finish only for listed keys.
- ``limits``: per-tenant request rate and concurrency on the TCP door.
- ``door``: the CURVE ``ROUTER`` on ``gateway.tcp`` and the gateway serving it.

The owner-only ``ipc://`` socket is untouched by all of this: it stays the admin of tenant
``local``.
"""
