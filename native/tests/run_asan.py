"""`make asan`: build the C core with AddressSanitizer and run the kernel tests against it.

    LD_PRELOAD=$(cc -print-file-name=libasan.so) PYTHONMALLOC=malloc \
        .venv/bin/python native/tests/run_asan.py [pytest args]

The instrumented extension is built into native/build/asan/ (the installed one is left
alone, so other processes using the tree are not disturbed) and put first on
``convergiod.__path__`` before anything imports ``convergiod._native``.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "native" / "build" / "asan"


def build() -> None:
    os.environ["CONVERGIO_NATIVE_CFLAGS"] = "-fsanitize=address -fno-omit-frame-pointer -O1 -g"
    os.environ["CONVERGIO_NATIVE_LDFLAGS"] = "-fsanitize=address"
    os.environ["CONVERGIO_NATIVE_ABSPATHS"] = "1"
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT / "native"))
    from build_native import ffibuilder

    ffibuilder.compile(tmpdir=str(BUILD), verbose=False)


def main() -> int:
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        print("run_asan.py: LD_PRELOAD must name libasan", file=sys.stderr)
        return 2
    build()
    import convergiod

    convergiod.__path__.insert(0, str(BUILD / "convergiod"))
    import pytest

    from convergiod import _native

    print(f"run_asan.py: using {_native.__file__}")
    if not str(_native.__file__).startswith(str(BUILD)):
        print("run_asan.py: the instrumented build was not picked up", file=sys.stderr)
        return 2
    args = sys.argv[1:] or ["-q", "-p", "no:cacheprovider"]
    tests = sorted(str(p) for p in (ROOT / "tests").glob("test_native*.py"))
    return int(pytest.main([*args, *tests]))


if __name__ == "__main__":
    sys.exit(main())
