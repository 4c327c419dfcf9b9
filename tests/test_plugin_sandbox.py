"""The plugin sandbox, manifest and schema in-process (no daemon): fast, one engine per test
module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from convergiod.actors.plugin import manifest as mf
from convergiod.actors.plugin import schema
from convergiod.actors.plugin.sandbox import (
    CallGrants,
    CallLimits,
    DirGrant,
    Sandbox,
    SandboxError,
    interpret,
    spare_key,
)
from tests.plugin_helpers import EXAMPLES, FIXTURES


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("cache"))
    yield sb
    sb.close()


def call(
    sb: Sandbox,
    wasm: Path,
    tool: str = "run",
    args: dict[str, Any] | None = None,
    *,
    limits: CallLimits | None = None,
    grants: CallGrants | None = None,
) -> Any:
    limits = limits or CallLimits(timeout=1.0, memory_bytes=16 << 20)
    rt = sb.runtime(fuel=limits.fuel is not None)
    program = rt.load(wasm.read_bytes())
    stdin = json.dumps({"tool": tool, "args": args or {}}).encode()
    result = rt.run(program, stdin, limits, grants or CallGrants())
    return interpret(result, limits, what=wasm.stem)


def failure(*args: Any, **kwargs: Any) -> SandboxError:
    with pytest.raises(SandboxError) as info:
        call(*args, **kwargs)
    return info.value


def test_examples_compute_useful_answers(sandbox: Sandbox) -> None:
    textkit, calc = EXAMPLES / "textkit/textkit.wasm", EXAMPLES / "calc/calc.wasm"
    assert call(sandbox, textkit, "word_count", {"text": "One two. Three!\nFour"}) == {
        "words": 4,
        "lines": 2,
        "chars": 20,
        "bytes": 20,
        "sentences": 3,
    }
    assert call(sandbox, textkit, "slugify", {"text": "Crème Brûlée: à la carte!"}) == {
        "slug": "creme-brulee-a-la-carte"
    }
    top = call(sandbox, textkit, "top_words", {"text": "b a B c b a", "limit": 2})
    assert top == {"words": [{"word": "b", "count": 3}, {"word": "a", "count": 2}], "distinct": 3}
    assert call(sandbox, calc, "evaluate", {"expression": "2^10 + sqrt(16)*(3-1)"}) == {
        "value": 1032
    }
    assert call(sandbox, calc, "convert", {"value": 212, "from": "F", "to": "C"})["value"] == 100
    assert call(sandbox, calc, "convert", {"value": 1, "from": "mi", "to": "km"})["value"] == (
        pytest.approx(1.609344)
    )
    err = failure(sandbox, calc, "convert", {"value": 1, "from": "kg", "to": "km"})
    assert (err.code, "cannot convert kg to km" in err.message) == ("bad_request", True)


def test_endless_loop_is_stopped_by_the_deadline(sandbox: Sandbox) -> None:
    err = failure(sandbox, FIXTURES / "loop.wasm", limits=CallLimits(timeout=0.1))
    assert err.code == "timeout" and "time limit of 100 ms" in err.message


def test_endless_loop_is_stopped_by_fuel(sandbox: Sandbox) -> None:
    limits = CallLimits(timeout=30.0, fuel=1_000_000)
    err = failure(sandbox, FIXTURES / "loop.wasm", limits=limits)
    assert err.code == "timeout" and "fuel" in err.message


def test_memory_bomb_is_refused_growth_and_reported(sandbox: Sandbox) -> None:
    err = failure(sandbox, FIXTURES / "membomb.wasm", limits=CallLimits(memory_bytes=8 << 20))
    assert err.code == "sandbox_denied" and "memory limit of 8 MiB" in err.message


def test_unbounded_recursion_hits_the_stack_limit(sandbox: Sandbox) -> None:
    err = failure(sandbox, FIXTURES / "recurse.wasm")
    assert err.code == "sandbox_denied" and "stack" in err.message


def test_stdout_is_capped_without_buffering_it(sandbox: Sandbox, tmp_path: Path) -> None:
    limits = CallLimits(output_bytes=64 << 10, timeout=10.0)
    rt = sandbox.runtime(fuel=False)
    program = rt.load((FIXTURES / "flood.wasm").read_bytes())
    # Without grants stdout is served on the calling thread; with a directory granted,
    # by wasmtime's WASI with a custom callback. Both cap it.
    with_dir = CallGrants(dirs=(DirGrant(host=str(tmp_path), guest="/data"),))
    for grants in (CallGrants(), with_dir):
        result = rt.run(program, b"{}", limits, grants)
        assert result.stdout_overflow and len(result.stdout) == 64 << 10
        with pytest.raises(SandboxError) as info:
            interpret(result, limits, what="flood")
        assert info.value.code == "sandbox_denied"


def test_a_missing_granted_directory_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    grants = CallGrants(dirs=(DirGrant(host=str(tmp_path / "gone"), guest="/data"),))
    err = failure(sandbox, FIXTURES / "fsprobe.wasm", "read", {"path": "/data/x"}, grants=grants)
    assert err.code == "sandbox_denied" and "cannot be opened" in err.message


def test_invalid_json_and_nonzero_exit_are_errors(sandbox: Sandbox) -> None:
    err = failure(sandbox, FIXTURES / "badjson.wasm")
    assert err.code == "internal" and "JSON" in err.message
    err = failure(sandbox, FIXTURES / "exit.wasm")
    assert err.code == "internal"
    assert "status 70: plugin gave up: out of ideas" in err.message


def test_non_wasi_import_is_refused_before_instantiation(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxError) as info:
        sandbox.runtime(fuel=False).load((FIXTURES / "host_import.wasm").read_bytes())
    assert info.value.code == "sandbox_denied" and "env.host_secret" in info.value.message


def test_changed_hash_refuses_to_load(sandbox: Sandbox) -> None:
    wasm = (FIXTURES / "loop.wasm").read_bytes()
    with pytest.raises(SandboxError) as info:
        sandbox.runtime(fuel=False).load(wasm, expected_sha256="0" * 64)
    assert info.value.code == "sandbox_denied" and "hash changed" in info.value.message


def test_files_are_denied_without_a_grant(sandbox: Sandbox) -> None:
    probe = FIXTURES / "fsprobe.wasm"
    for path in ("/etc/passwd", str(Path.home() / ".ssh" / "id_rsa"), "../etc/passwd"):
        err = failure(sandbox, probe, "read", {"path": path})
        assert err.code == "sandbox_denied", err.message


def test_read_only_grant_allows_reading_only_inside(sandbox: Sandbox, tmp_path: Path) -> None:
    probe = FIXTURES / "fsprobe.wasm"
    (tmp_path / "note.txt").write_text("hello")
    ro = CallGrants(dirs=(DirGrant(host=str(tmp_path), guest="/data"),))
    assert call(sandbox, probe, "read", {"path": "/data/note.txt"}, grants=ro)["head"] == "hello"
    err = failure(sandbox, probe, "write", {"path": "/data/new.txt", "text": "x"}, grants=ro)
    assert err.code == "sandbox_denied"
    assert not (tmp_path / "new.txt").exists()
    for escape in ("/data/../etc/passwd", "/data/../../../../etc/passwd"):
        err = failure(sandbox, probe, "read", {"path": escape}, grants=ro)
        assert err.code == "sandbox_denied"
    rw = CallGrants(dirs=(DirGrant(host=str(tmp_path), guest="/data", write=True),))
    assert call(sandbox, probe, "write", {"path": "/data/new.txt", "text": "x"}, grants=rw) == {
        "written": 1
    }
    assert (tmp_path / "new.txt").read_text() == "x"


def test_compiled_modules_are_cached_on_disk(tmp_path: Path) -> None:
    wasm = (EXAMPLES / "calc/calc.wasm").read_bytes()
    first = Sandbox(tmp_path)
    try:
        assert not first.runtime(fuel=True).load(wasm).from_cache
    finally:
        first.close()
    second = Sandbox(tmp_path)
    try:
        program = second.runtime(fuel=True).load(wasm)
        assert program.from_cache
        # Other engine settings never share an entry.
        assert not second.runtime(fuel=False).load(wasm).from_cache
    finally:
        second.close()
    other_stack = Sandbox(tmp_path, max_wasm_stack=256 * 1024)
    try:
        assert not other_stack.runtime(fuel=True).load(wasm).from_cache
    finally:
        other_stack.close()


def test_manifest_unknown_keys_are_errors_naming_the_key() -> None:
    base = 'name = "x"\nversion = "1"\n'
    with pytest.raises(mf.ManifestError, match="unknown key 'permisions'"):
        mf.parse(base + '[[tools]]\nname = "t"\n[permisions]\nenv = []\n')
    with pytest.raises(mf.ManifestError, match=r"unknown key 'limits.memory'"):
        mf.parse(base + '[limits]\nmemory = 5\n[[tools]]\nname = "t"\n')
    with pytest.raises(mf.ManifestError, match="unsupported keyword 'pattern'"):
        mf.parse(base + '[[tools]]\nname = "t"\nargs = {type = "object", pattern = "x"}\n')
    with pytest.raises(mf.ManifestError, match="missing key 'tools'"):
        mf.parse(base)


def test_schema_subset_names_the_bad_field() -> None:
    s = mf.parse((EXAMPLES / "textkit/plugin.toml").read_bytes()).tool("slugify")
    assert s is not None
    schema.validate(s.args, {"text": "hi", "max_length": 5})
    cases = [
        ({}, "args.text: required field missing"),
        ({"text": 5}, "args.text: expected string, got integer"),
        ({"text": "a", "max_length": 0}, "args.max_length: 0 is less than the minimum 1"),
        ({"text": "a", "extra": 1}, "args.extra: unknown field"),
    ]
    for args, message in cases:
        with pytest.raises(schema.SchemaError) as info:
            schema.validate(s.args, args)
        assert str(info.value) == message
    with pytest.raises(schema.SchemaError, match=r"args\[1\]: 'z' is not one of"):
        schema.validate({"type": "array", "items": {"enum": ["a", "b"]}}, ["a", "z"])


@pytest.mark.parametrize("fuel", [False, True])
def test_a_prepared_store_is_fresh_and_reads_its_own_call(sandbox: Sandbox, fuel: bool) -> None:
    """``prepare`` instantiates the next calls' stores ahead of time; a call that takes one
    still starts from a fresh store (the fixture exits 70 if its memory counter is not 0)
    and reads its own stdin, in pieces (``fd_read`` on the calling thread), with bad
    pointers and fds refused (exit 71 otherwise)."""
    rt = sandbox.runtime(fuel=fuel)
    program = rt.load((FIXTURES / "echo.wasm").read_bytes())
    limits = CallLimits(timeout=1.0, memory_bytes=16 << 20, fuel=10**6 if fuel else None)
    key = spare_key(fuel, limits, CallGrants(), "plugin")
    assert rt.prepare(program, limits, inline=fuel, depth=3) == 3
    for i in range(5):
        stdin = json.dumps({"tool": "run", "args": {"i": i, "pad": "x" * 37 * i}}).encode()
        waiting = len(program.spares[key])
        result = rt.run(program, stdin, limits, inline=fuel)
        assert (result.exit_code, result.trap, result.stdout) == (0, None, stdin)
        assert len(program.spares[key]) == max(0, waiting - 1)  # each used once
    assert rt.prepare(program, limits, inline=fuel, depth=2) == 2  # topped up to the depth
    # Stores are only for calls shaped like them: another memory limit makes its own.
    other = CallLimits(timeout=1.0, memory_bytes=32 << 20, fuel=limits.fuel)
    assert rt.run(program, b"{}", other, inline=fuel).stdout == b"{}"
    assert len(program.spares[key]) == 2


def test_modules_with_a_start_function_get_no_spare(sandbox: Sandbox) -> None:
    rt = sandbox.runtime(fuel=False)
    wat = """(module (memory (export "memory") 1) (func $init) (start $init)
             (func (export "_start")))"""
    program = rt.load(wasmtime.wat2wasm(wat))
    assert program.has_start
    assert rt.prepare(program, CallLimits(), depth=4) == 0
    assert not program.spares
    assert not rt.load((FIXTURES / "echo.wasm").read_bytes()).has_start
