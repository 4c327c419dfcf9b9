"""Where Convergio keeps its files.

``CONVERGIO_HOME`` overrides everything (tests and side-by-side installs use it): config in
``$CONVERGIO_HOME/config``, data in ``$CONVERGIO_HOME/data``, sockets and the lock in
``$CONVERGIO_HOME/run``. Without it the platform's directories are used (platformdirs).

Imported by the CLI on every command, so it stays light.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

APP = "convergio"
#: sun_path in sockaddr_un holds 108 bytes on Linux and 104 on macOS.
MAX_IPC_PATH = 103


class PathError(Exception):
    """A directory or socket path that cannot be used safely."""


@dataclass(frozen=True, kw_only=True)
class Paths:
    home: Path | None
    config_dir: Path
    data_dir: Path
    runtime_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def api_socket(self) -> Path:
        return self.runtime_dir / "api.sock"

    @property
    def events_socket(self) -> Path:
        return self.runtime_dir / "events.sock"

    @property
    def lock_file(self) -> Path:
        return self.runtime_dir / "daemon.lock"

    @property
    def pid_file(self) -> Path:
        return self.runtime_dir / "daemon.pid"

    @property
    def log_file(self) -> Path:
        """Where ``convergio daemon start`` sends the background daemon's stderr."""
        return self.data_dir / "daemon.log"

    @property
    def api_endpoint(self) -> str:
        return "ipc://" + str(self.api_socket)

    @property
    def events_endpoint(self) -> str:
        return "ipc://" + str(self.events_socket)

    def prepare_runtime_dir(self) -> None:
        """Create the runtime directory owner-only (0700) and refuse one that others can use:
        the ``ipc://`` socket inside it is the admin door of tenant ``local``."""
        for sock in (self.api_socket, self.events_socket):
            if len(str(sock)) > MAX_IPC_PATH:
                raise PathError(
                    f"socket path {sock} is {len(str(sock))} characters; the limit is "
                    f"{MAX_IPC_PATH}: choose a shorter CONVERGIO_HOME"
                )
        self.runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = self.runtime_dir.stat()
        if st.st_uid != os.getuid():
            raise PathError(f"runtime directory {self.runtime_dir} is owned by another user")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(self.runtime_dir, 0o700)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)


def resolve(env: dict[str, str] | None = None) -> Paths:
    """The paths for this process, from ``CONVERGIO_HOME`` or the platform defaults."""
    env = dict(os.environ) if env is None else env
    home = env.get("CONVERGIO_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(
            home=root,
            config_dir=root / "config",
            data_dir=root / "data",
            runtime_dir=root / "run",
        )
    import platformdirs

    runtime = env.get("XDG_RUNTIME_DIR")
    runtime_dir = (
        Path(runtime) / APP
        if runtime
        else Path(platformdirs.user_runtime_dir(APP, appauthor=False))
    )
    return Paths(
        home=None,
        config_dir=Path(platformdirs.user_config_dir(APP, appauthor=False)),
        data_dir=Path(platformdirs.user_data_dir(APP, appauthor=False)),
        runtime_dir=runtime_dir,
    )
