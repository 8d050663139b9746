# The two commands: `make demo` and `make test`. Both bootstrap everything on first use
# (apt packages for the native IK build, a virtualenv with pinned wheels, the native library)
# and are quick the second time.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-$(shell sha1sum requirements.lock | cut -c1-12)
APT_STAMP := build/.apt-installed
NATIVE_LIB := relaxed_ik_bindings/lib/librelaxed_ik_lib.so
NATIVE_SRC := $(wildcard relaxed_ik_bindings/native/*.cpp relaxed_ik_bindings/native/*.hpp relaxed_ik_bindings/native/CMakeLists.txt)

.PHONY: demo test test-slow lint bench venv native colcon-check clean

demo: $(VENV_STAMP) $(NATIVE_LIB)
	tools/loopback_only.sh $(PY) -m pi0_ros.demo $(DEMO_ARGS)

test: $(VENV_STAMP) $(NATIVE_LIB)
	tools/run_tests.sh $(PY) "not slow and not gpu" $(PYTEST_ARGS)

test-slow: $(VENV_STAMP) $(NATIVE_LIB)
	tools/run_tests.sh $(PY) "slow and not gpu" $(PYTEST_ARGS)

lint: $(VENV_STAMP)
	$(VENV)/bin/ruff check .

venv: $(VENV_STAMP)
native: $(NATIVE_LIB)

$(APT_STAMP):
	tools/install_apt_deps.sh
	@mkdir -p build && touch $@

$(VENV_STAMP): requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.lock
	rm -f $(VENV)/.installed-* && touch $@

$(NATIVE_LIB): $(APT_STAMP) $(NATIVE_SRC)
	cmake -S relaxed_ik_bindings/native -B build/relaxed_ik -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build/relaxed_ik -j 2
	@mkdir -p relaxed_ik_bindings/lib
	@# replace, not overwrite: processes that have the old library mapped keep running
	cp build/relaxed_ik/librelaxed_ik_lib.so $@.tmp && mv -f $@.tmp $@

clean:
	rm -rf build relaxed_ik_bindings/lib
