"""What ``shell.exec`` refuses before running anything, and the environment it runs with.

The destructive patterns are a speed bump against a model's worst ideas (``rm -rf /``,
``mkfs``, ``dd`` onto a disk, fork bombs...), not a security boundary: a command that hides
its intent gets through them. The boundaries are approval (``ask`` by default), the scrubbed
environment, the rlimits and the process-group watchdog.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

_END = r"(?=$|[\s;&|)`'\"])"
_ROOTISH = (
    r"(?:/+\*?|~/?\*?|\$HOME/?\*?|\$\{HOME\}/?\*?"
    r"|/(?:bin|boot|etc|home|lib\w*|opt|root|sbin|srv|usr|var)/?\*?)"
)

DESTRUCTIVE: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rx, re.IGNORECASE), why)
    for rx, why in (
        (rf"\brm\s+(?:-{{1,2}}[\w-]+\s+)*{_ROOTISH}{_END}", "removing / or the home directory"),
        (r"--no-preserve-root", "removing /"),
        (r"\b(?:mkfs(?:\.\w+)?|mke2fs|mkswap|wipefs|mkdosfs|mkntfs)\b", "formatting a disk"),
        (r"\bdd\b[^;&|]*\bof=/dev/(?!null\b|zero\b|stdout\b|stderr\b)", "dd onto a device"),
        (r">\s*/dev/(?:sd|hd|vd|xvd|nvme|mmcblk|disk|mapper|md|dm-)", "writing onto a disk"),
        (r"\b(?:shred|blkdiscard)\b[^;&|]*/dev/", "wiping a disk"),
        (r":\s*\(\s*\)\s*\{[^}]*:\s*\|\s*:", "a fork bomb"),
        (r"\b(\w+)\s*\(\s*\)\s*\{[^}]*\b\1\s*\|\s*\1\b", "a fork bomb"),
        (r"\bkill(?:all)?\s+(?:-[\w]+\s+)*-1\b", "killing every process"),
        (
            r"(?:^|[;&|(]\s*|\b(?:sudo|doas|exec)\s+)(?:shutdown|reboot|poweroff|halt|init\s+[06])\b",
            "shutting the machine down",
        ),
        (rf"\bch(?:mod|own|grp)\s+(?:-\w+\s+)*-R\s+(?:\S+\s+)?{_ROOTISH}{_END}", "changing /"),
        (rf"\bch(?:mod|own|grp)\s+(?:\S+\s+)?-R\s+{_ROOTISH}{_END}", "changing /"),
        (r">\s*/(?:etc/(?:passwd|shadow|sudoers)|boot/)", "overwriting system files"),
    )
)


def destructive(command: str) -> str | None:
    """Why ``command`` is refused, or None."""
    text = command.replace("\\\n", " ")
    for rx, why in DESTRUCTIVE:
        if rx.search(text):
            return why
    return None


#: Names that look like they hold a secret. PWD/OLDPWD are directories, not passwords.
SECRET_NAME = re.compile(
    r"KEY|TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|AUTH|COOKIE|SESSION|PRIVATE|SIGNATURE|"
    r"_PAT$|^PAT_|DSN$|DATABASE_URL|CONN(?:ECTION)?_?STR",
    re.IGNORECASE,
)
KEEP = frozenset(("PWD", "OLDPWD", "PATH", "HOME", "LANG", "TERM", "USER", "LOGNAME", "SHELL"))


def looks_secret(name: str) -> bool:
    return name not in KEEP and bool(SECRET_NAME.search(name))


def scrubbed_env(
    environ: Mapping[str, str], *, remove: Iterable[str] = (), extra: Mapping[str, str] = {}
) -> dict[str, str]:
    """``environ`` without secret-looking names, ``remove`` and the daemon's own variables,
    then ``extra`` on top (what the tool call asked for)."""
    drop = set(remove)
    env = {
        k: v
        for k, v in environ.items()
        if k not in drop and not looks_secret(k) and not k.startswith("CONVERGIO_")
    }
    env.update(extra)
    return env
