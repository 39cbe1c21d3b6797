# gdbfault: `make demo` sets everything up and runs the main job;
# `make test` sets everything up and runs the test suite.
PYTHON ?= python3
ITERATIONS ?= 2000

.PHONY: setup deps build kernel workloads plugin demo test test-fast bench clean

setup: deps build

deps:
	./scripts/install-deps.sh

build: workloads kernel plugin

workloads:
	$(MAKE) -C qemu/workloads

kernel:
	$(MAKE) -C qemu/kernel

# The TCG plugin backend is optional: without QEMU's plugin header the GDB
# backend still works, so a failure here only warns.
plugin:
	@$(MAKE) -C qemu/plugin || echo "warning: the TCG plugin backend was not built (see above); --backend gdb still works"

demo: setup
	$(PYTHON) -m gdbfault attach --qemu --workload mprotect --iterations $(ITERATIONS) --output run.json

test: setup
	$(PYTHON) -m pytest -q -ra

test-fast: setup
	$(PYTHON) -m pytest -q -ra -m "not qemu"

bench: setup
	$(PYTHON) scripts/bench.py

clean:
	$(MAKE) -C qemu/workloads clean
	$(MAKE) -C qemu/kernel clean
	-$(MAKE) -C qemu/plugin clean
