"""cffi API-mode build of the C core (``convergiod._native``).

Used by setup.py (``cffi_modules``), so ``pip install .`` / ``pip install -e .`` build it.
Environment knobs (for `make asan` and experiments; the defaults are the release build):

* ``CONVERGIO_NATIVE_CFLAGS``: extra compiler flags, appended (e.g. ``-fsanitize=address``).
* ``CONVERGIO_NATIVE_LDFLAGS``: extra linker flags, appended.
* ``CONVERGIO_NATIVE_ABSPATHS``: absolute source paths (for ``ffibuilder.compile``).

``-ffp-contract=off`` is required: the top-k scores must be computed with separate multiply
and add (no FMA) so that the pure-Python reference reproduces them bit for bit.
"""

import os
import shlex
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _rel(p: Path) -> str:
    # setuptools wants paths relative to the project root (where setup.py runs); a direct
    # ffibuilder.compile(tmpdir=...) runs the compiler inside tmpdir and needs them absolute.
    if os.environ.get("CONVERGIO_NATIVE_ABSPATHS"):
        return str(p)
    return str(p.relative_to(ROOT))


CFLAGS = ["-std=c17", "-O3", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra"]
CFLAGS += shlex.split(os.environ.get("CONVERGIO_NATIVE_CFLAGS", ""))
LDFLAGS = shlex.split(os.environ.get("CONVERGIO_NATIVE_LDFLAGS", ""))

ffibuilder = FFI()
ffibuilder.cdef((HERE / "convergio_core.cdef").read_text())
ffibuilder.set_source(
    "convergiod._native",
    '#include "convergio_core.h"',
    sources=[_rel(p) for p in sorted(HERE.glob("*.c"))],
    include_dirs=[_rel(HERE)],
    depends=[_rel(p) for p in sorted(HERE.glob("*.h"))],
    extra_compile_args=CFLAGS,
    extra_link_args=LDFLAGS,
    libraries=[] if sys.platform == "win32" else ["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
