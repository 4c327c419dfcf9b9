# The two commands: `make run` and `make test`. Both create .venv and install the project
# (building the C core) and are quick when nothing changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q
SOURCES_BUILD := pyproject.toml setup.py $(wildcard native/*.c native/*.h native/*.py)

.PHONY: install install-test run test lint typecheck pytest ctest bench clean
.PHONY: asan
.PHONY: plugins
.PHONY: jsdeps

# The example plugins and the C/WAT test fixtures, compiled to wasm32-wasi with the PyPI
# package ziglang (the built .wasm files are committed: nothing else needs a compiler).
plugins: $(VENV)/bin/python
	$(PIP) 'wasmtime>=50,<51' 'ziglang>=0.15,<0.18'
	$(PY) plugins/build.py

install: $(VENV)/.installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Editable in "compat" mode: a plain path in a .pth file. The default editable mode installs an
# import hook that costs ~50 ms at every start of every `convergio` command. The client
# package lives in clients/python, so that directory gets a .pth line of its own.
EDITABLE := --config-settings editable_mode=compat -e
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

# llama-cpp-python (the embedded model) has no wheel: pip builds it (minutes) and caches the
# wheel. Built for the local CPU (-march=native) it died with SIGILL on these VMs (the CPU
# advertises more than the hypervisor enables), so it is built for a portable x86-64 baseline
# (AVX2) unless CMAKE_ARGS says otherwise. If the installed build still fails the self-check
# (e.g. a cached wheel from elsewhere), it is rebuilt once, bypassing the cache.
LLAMA_CMAKE = CMAKE_ARGS="$${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
	-DGGML_FMA=ON -DGGML_F16C=ON}"
LLAMA_REBUILD = $(LLAMA_CMAKE) $(PIP) --no-cache-dir --force-reinstall --no-deps \
	'llama-cpp-python>=0.3.16,<0.4' && $(PY) -m convergiod.actors.router.selfcheck

$(VENV)/.installed: $(VENV)/bin/python $(SOURCES_BUILD)
	$(LLAMA_CMAKE) $(PIP) $(EDITABLE) .
	echo "$(CURDIR)/clients/python" > "$(SITE)/convergio-client-dev.pth"
	$(PY) -m convergiod.actors.router.selfcheck || { $(LLAMA_REBUILD); }
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) $(EDITABLE) '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PIP) $(EDITABLE) '.[bench]'
	touch $@

install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/convergio daemon run

lint: install-test
	$(VENV)/bin/ruff check convergiod clients tests bench actors
	$(VENV)/bin/ruff format --check convergiod clients tests bench actors

typecheck: install-test
	$(VENV)/bin/mypy

pytest: install-test jsdeps
	$(VENV)/bin/pytest -q

# The JavaScript client's dependencies (zeromq ships prebuilt addons); its tests run from
# pytest (tests/test_remote_js.py), which skips them with a reason when node is missing.
jsdeps: clients/js/node_modules/.installed

clients/js/node_modules/.installed: clients/js/package.json clients/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		cd clients/js && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the JavaScript client's test will be skipped" >&2; fi

test: lint typecheck ctest pytest

bench: $(VENV)/.installed-bench install-test
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info convergiod/_native*.so

# C unit tests of the core (native/tests/) under valgrind: zero errors, zero leaks.
CC ?= cc
NATIVE_SRC := $(wildcard native/*.c)
CTEST_BIN := native/build/test_core
VALGRIND := valgrind -q --error-exitcode=1 --leak-check=full \
	--errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect
# Debian packages a clean machine may lack; installed only when missing and apt-get exists.
APT_INSTALL = if command -v apt-get >/dev/null 2>&1; then \
	(apt-get update -q >/dev/null || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(1); \
	else echo "please install $(1)" >&2; exit 1; fi

ctest: $(NATIVE_SRC) $(wildcard native/*.h native/tests/*.c)
	@command -v $(CC) >/dev/null 2>&1 || { $(call APT_INSTALL,gcc libc6-dev); }
	@command -v valgrind >/dev/null 2>&1 || { $(call APT_INSTALL,valgrind); }
	@mkdir -p native/build
	$(CC) -std=c17 -g -O1 -Wall -Wextra -ffp-contract=off -Inative $(NATIVE_SRC) \
		native/tests/test_core.c -lm -o $(CTEST_BIN)
	$(VALGRIND) ./$(CTEST_BIN)
	@# again without the SIMD paths (what a CPU without AVX2 runs)
	$(CC) -std=c17 -g -O1 -Wall -Wextra -ffp-contract=off -DCV_NO_VECTOR -Inative \
		$(NATIVE_SRC) native/tests/test_core.c -lm -o $(CTEST_BIN)_plain
	$(VALGRIND) ./$(CTEST_BIN)_plain

# The kernel Python tests against an AddressSanitizer build of the extension.
asan: install-test
	@libasan=$$($(CC) -print-file-name=libasan.so); \
	case "$$libasan" in /*) ;; *) $(call APT_INSTALL,libgcc-$$($(CC) -dumpversion | cut -d. -f1)-dev) ;; esac
	LD_PRELOAD=$$($(CC) -print-file-name=libasan.so) PYTHONMALLOC=malloc \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
		$(PY) native/tests/run_asan.py
