# `make demo` and `make test` each bring a fresh Debian 12 machine (as root) to a working state, then run.
SHELL := /bin/bash
PY := /usr/bin/python3
VENV := .venv
KREL := $(shell uname -r)
APT := python3-bpfcc python3-venv linux-headers-amd64 iproute2 util-linux nftables python3-nftables tshark tcpreplay \
       clang libbpf-dev bpftool
# --pktassert-kernel's VMs (installed without recommends: qemu's would bring a desktop). virtme-ng builds
# the VM's initramfs (virtio and 9p modules) with busybox.
VM_APT := qemu-system-x86 udev kmod busybox-static
PYTEST := $(VENV)/bin/pytest -p no:cacheprovider --pktassert-require
# More pytest options, e.g. ARGS="--junitxml=junit.xml" (examples/ci/ does).
ARGS ?=

.PHONY: setup packages headers objects demo test test-unprivileged container-test kills kernels vm-packages clean

demo: setup objects
	$(PYTEST) examples -q --pktassert-summary $(ARGS)

test: setup objects vm-packages
	$(PYTEST) -n 2 -m "not container" tests examples $(ARGS)

# The example suite in a Debian 12 privileged container made here (debootstrap; ~2 min the first time here).
container-test: setup
	PKTASSERT_CONTAINER_TEST=1 $(PYTEST) -m container tests/test_container.py $(ARGS)

# The part of tests/ that needs no root, run as the unprivileged user nobody: it passes, and every test
# that needs the kernel skips naming the privilege it lacks.
test-unprivileged: setup objects
	d=$$(mktemp -d) && chown nobody $$d && \
	runuser -u nobody -- env HOME=$$d TMPDIR=$$d $(VENV)/bin/pytest -p no:cacheprovider -q -n 2 -m "not container" \
	  --basetemp=$$d/bt tests $(ARGS); rc=$$?; rm -rf $$d; exit $$rc

# The full fault matrix (SIGKILL/SIGTERM/SIGINT of pytest, SIGKILL of a worker, at each of 12 phases);
# `make test` runs a slice of it.
kills: setup objects
	PKTASSERT_KILLS=full $(PYTEST) -n 2 tests/test_kills.py $(ARGS)

# The whole kernel matrix: the example suite on Debian 12's 6.1 and 6.12 (each in a VM: KVM when it works,
# else TCG) and on this machine, side by side. `make test` runs a slice of it (tests/test_kernel_matrix.py).
kernels: setup objects vm-packages
	$(PYTEST) examples -q --pktassert-kernel=6.1,6.12,host $(ARGS)

# The example libbpf filters built as their Makefile builds them (examples/build/*.bpf.o).
objects: packages
	$(MAKE) -s -C examples

setup: packages headers $(VENV)/.installed

packages:
	@missing=$$(for p in $(APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

vm-packages:
	@missing=$$(for p in $(VM_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# bcc looks for headers at /lib/modules/$(uname -r)/{build,source}. Debian ships them for its own
# kernel in two trees (-amd64 and -common); when the running kernel is not Debian's, link those.
headers: packages
	@b=/lib/modules/$(KREL); \
	if [ ! -d $$b/build/include ]; then \
	  amd64=$$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -n1); \
	  [ -n "$$amd64" ] || { echo "no /usr/src/linux-headers-*-amd64: apt-get install linux-headers-amd64"; exit 1; }; \
	  mkdir -p $$b && ln -sfn $$amd64 $$b/build && ln -sfn $${amd64%-amd64}-common $$b/source; \
	  echo "bcc headers: $$b/build -> $$amd64"; \
	fi

$(VENV)/.installed: pyproject.toml
	[ -x $(VENV)/bin/python ] || $(PY) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) *.egg-info
	$(MAKE) -s -C examples clean
