"""The ``convergio`` command line (click). Subcommands live in ``convergiod.commands``, one
per module beside its daemon half, and are imported only when invoked."""
