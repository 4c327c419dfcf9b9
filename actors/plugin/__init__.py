"""The plugin actor: WebAssembly plugins under wasmtime, denied everything by default.

Modules: ``manifest`` (plugin.toml), ``schema`` (argument validation), ``store`` (installed
plugins and their pins and grants), ``sandbox`` (one call under wasmtime), ``runner``
(threads) and ``pool``/``worker`` (processes), ``tools`` (plugin tools as tools), ``actor``.
See docs/plugins.md for the ABI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from convergiod.runtime import ChildSpec

if TYPE_CHECKING:
    from convergiod.daemon import Daemon

NAME = "plugin"


def child_spec(daemon: Daemon) -> ChildSpec:
    from .actor import PluginActor

    return ChildSpec(
        name=NAME,
        start=lambda: PluginActor(
            data_dir=daemon.paths.data_dir,
            runtime_dir=daemon.paths.runtime_dir,
            config=daemon.config.plugins,
        ),
        shutdown=10.0,
        mailbox_size=4096,
    )
