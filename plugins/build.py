"""Build the example plugins and the test fixtures (``make plugins``).

C sources are compiled to ``wasm32-wasi`` with the PyPI package ``ziglang``
(``python -m ziglang cc``); WAT fixtures are assembled with wasmtime's ``wat2wasm``. The
built ``.wasm`` files are committed, so tests and users need no compiler.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
C_SOURCES = [
    "plugins/examples/textkit/textkit.c",
    "plugins/examples/calc/calc.c",
    "tests/fixtures/plugins/fsprobe.c",
    "tests/fixtures/plugins/bench.c",
]
WAT_DIR = "tests/fixtures/plugins"
CFLAGS = ["--target=wasm32-wasi", "-O2", "-s", "-std=c11", "-Wall", "-Wextra"]
# A 256 KiB stack instead of the toolchain's 1 MiB default, and memory that starts small:
# linear memory counts against each plugin's memory limit.
LDFLAGS = ["-Wl,-z,stack-size=262144", "-Wl,--initial-memory=1048576"]


def main() -> int:
    import wasmtime

    for rel in C_SOURCES:
        src = ROOT / rel
        out = src.with_suffix(".wasm")
        if out.exists() and out.stat().st_mtime >= max(
            src.stat().st_mtime, (ROOT / "plugins/sdk/convergio_plugin.h").stat().st_mtime
        ):
            continue
        print(f"cc {rel}", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ziglang",
                "cc",
                *CFLAGS,
                *LDFLAGS,
                "-o",
                str(out),
                str(src),
                "-lm",
            ],
            check=True,
        )
    for src in sorted((ROOT / WAT_DIR).glob("*.wat")):
        out = src.with_suffix(".wasm")
        if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
            continue
        print(f"wat2wasm {src.relative_to(ROOT)}", flush=True)
        out.write_bytes(wasmtime.wat2wasm(src.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
