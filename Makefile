# vmbackup.qemu: developer entry points. `make test` is what CI runs.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
QEMU10_DIR ?= $(CURDIR)/.cache/qemu-10.0
QEMU11_DIR ?= $(CURDIR)/.cache/qemu-11.1
# Extra pytest arguments, e.g. `make integration PYTEST_ARGS='-k bitmap -x'`.
PYTEST_ARGS ?=
# Extra ansible-test arguments, e.g. `make sanity SANITY_ARGS='--test pylint'`.
SANITY_ARGS ?=

VPY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all test deps venv qemu10 qemu11 sanity lint action-groups units function-length integration integration-7.2 integration-10.0 integration-11.1 bench demo clean

all: test

test: action-groups function-length sanity lint units integration

$(VENV)/.installed: requirements-dev.txt requirements.txt
	@# --clear through a symlinked .venv (a clone sharing another's) would empty the other checkout's venv.
	@if [ -L $(VENV) ]; then echo "$(VENV) is a symlink: not rebuilding what it points to (make -o $@ ...)" >&2; exit 1; fi
	$(PYTHON) -m venv --clear $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

qemu10:
	scripts/fetch-qemu-backports.sh $(QEMU10_DIR)

qemu11:
	scripts/fetch-qemu-backports.sh $(QEMU11_DIR) 11.1

sanity: venv
	scripts/run-sanity.sh $(SANITY_ARGS)

action-groups: venv
	$(VPY) scripts/check-action-groups.py

# Our rule: no function in plugins/ longer than 60 lines (docstring excluded).
function-length:
	python3 scripts/long-functions.py 60

lint: venv
	scripts/run-lint.sh

units: venv
	$(VPY) -m pytest -q tests/unit $(PYTEST_ARGS)

# The three QEMUs' suites, INTEGRATION_JOBS at a time (-O: each suite's
# output in one piece; -k comes through MAKEFLAGS). They mostly wait on QEMU
# jobs and timers, so on CI's 2 cores two at a time take ~30 minutes where
# one after the other took ~50. INTEGRATION_JOBS=1 runs them in turn.
INTEGRATION_JOBS ?= 2
integration: venv qemu10 qemu11
	$(MAKE) -j$(INTEGRATION_JOBS) -O integration-7.2 integration-11.1 integration-10.0

# The system QEMU (Debian 12: 7.2).
integration-7.2: venv
	$(VPY) -m pytest -q tests/integration $(PYTEST_ARGS)

# QEMU 10.0 from bookworm-backports, unpacked beside the system one. The
# middle of the matrix runs a subset, to keep CI under 45 minutes on 2 cores:
# not the tests marked ends_of_matrix (the restore and info tests, the roles,
# hostile input, the VM lock, the real guest and the cbw-timeout stalls),
# which 7.2 and 11.1 run.
MIDDLE_QEMU_TESTS ?= -m 'not ends_of_matrix'
integration-10.0: venv qemu10
	VMBACKUP_QEMU_BINDIR=$(QEMU10_DIR)/usr/bin $(VPY) -m pytest -q tests/integration $(MIDDLE_QEMU_TESTS) $(PYTEST_ARGS)

# QEMU 11.1 from trixie-backports with trixie's libraries, unpacked beside
# them; bin/ holds wrappers that run it through its own loader.
integration-11.1: venv qemu11
	VMBACKUP_QEMU_BINDIR=$(QEMU11_DIR)/bin $(VPY) -m pytest -q tests/integration $(PYTEST_ARGS)

# Benchmarks (never part of `make test`): JSON, plots and a table in
# bench/results/ (see bench/README.md). Where the QEMU matters they run on
# both; the rest on 10.0. A benchmark whose backup or restore held the wrong
# data fails the run.
Q10 := VMBACKUP_QEMU_BINDIR=$(QEMU10_DIR)/usr/bin

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	$(VPY) -m pip install --quiet -r bench/requirements.txt
	touch $@

bench: $(VENV)/.bench-installed qemu10
	rm -f bench/results/*.json bench/results/*.png
	$(VPY) bench/guest_latency.py
	$(Q10) $(VPY) bench/guest_latency.py
	$(VPY) bench/backup_cost.py
	$(Q10) $(VPY) bench/backup_cost.py
	$(Q10) $(VPY) bench/digest_cost.py
	$(VPY) bench/encryption_cost.py
	$(Q10) $(VPY) bench/encryption_cost.py
	$(VPY) bench/fleece_size.py
	$(Q10) $(VPY) bench/fleece_size.py
	$(Q10) $(VPY) bench/restore_chain.py
	$(Q10) $(VPY) bench/role_overhead.py
	$(Q10) $(VPY) bench/scaling.py
	$(VPY) bench/report.py

# On a fresh Debian 12 machine (as root) this installs QEMU first.
demo: deps venv
	$(VPY) scripts/demo.py

deps:
	scripts/install-system-deps.sh qemu-system-x86 qemu-utils $$($(PYTHON) -c 'import ensurepip' 2>/dev/null || echo python3-venv)

clean:
	rm -rf build tests/output .pytest_cache
