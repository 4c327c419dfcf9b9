"""cffi API-mode build of the C core (``convergiod._native``)."""

from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent

ffibuilder = FFI()
ffibuilder.cdef((HERE / "convergio_core.cdef").read_text())
ffibuilder.set_source(
    "convergiod._native",
    '#include "convergio_core.h"',
    sources=[str(p.relative_to(HERE.parent)) for p in sorted(HERE.glob("*.c"))],
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    extra_compile_args=["-std=c17", "-O2"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
