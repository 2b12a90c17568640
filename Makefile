# rkube: the two commands are `make up` (a working local cluster) and
# `make test` (every test). Both install what is missing on Debian first.

SHELL := /bin/bash
CARGO ?= cargo
PACKAGES := containerd runc containernetworking-plugins nftables iproute2 \
	protobuf-compiler libprotobuf-dev docker-registry skopeo busybox-static \
	etcd-server etcd-client systemd curl conntrack gcc libc6-dev python3 python3-venv \
	openssl dnsmasq-base e2fsprogs mount
# The official Python client, which the REST API's tests drive (into target/python).
PYTHON_CLIENT := kubernetes==37.0.3
# Where `make up` keeps state and logs (root: /var/lib/rkube; else ~/.rkube).
STATE ?= $(if $(filter 0,$(shell id -u)),/var/lib/rkube,$(HOME)/.rkube/state)
RKUBECONFIG ?= $(HOME)/.rkube/config
BIN := target/release
NODES ?= 1
# Control-plane machines: 1 (one apiserver on sled), or 3 or 5 (etcd members and
# apiservers, two of each other control-plane daemon; see deploy/local-cluster.sh).
HA ?= 1

.PHONY: all deps python-client build up down status test fuzz soak bench clean-state install

all: build

# Installs missing system packages (apt-get update once, only when needed).
deps:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found; install Rust (https://rustup.rs) and retry"; exit 1; }

# The official Python client for the REST API's tests, in a virtualenv of its own.
python-client: deps
	@target/python/bin/python -c 'import kubernetes' 2>/dev/null || { \
		echo "installing the Python client ($(PYTHON_CLIENT)) into target/python"; \
		python3 -m venv target/python && target/python/bin/pip install -q $(PYTHON_CLIENT); }

build: deps
	$(CARGO) build --release --workspace --bins

# The local cluster (deploy/local-cluster.sh): every daemon its own process
# with its own log under $(STATE)/logs. NODES=3 runs three nodes, each in its
# own network namespace with its own containerd, kubelet and proxy. Running
# `make up` again starts only what is not running. HA=3 runs a highly available control
# plane: three etcd members, three apiservers on them, two schedulers, controller-managers
# and cloud-controller-managers electing leaders.
up: build
	@STATE=$(STATE) BIN=$(BIN) RKUBECONFIG=$(RKUBECONFIG) deploy/local-cluster.sh up --nodes $(NODES) --ha $(HA)

# Stops everything `make up` started and removes what the nodes created:
# containers, network namespaces, CNI state, bridges, nftables tables and
# cgroups. The cluster's objects stay in the store.
down:
	@STATE=$(STATE) BIN=$(BIN) deploy/local-cluster.sh down

status:
	@STATE=$(STATE) BIN=$(BIN) deploy/local-cluster.sh status

# Every test: unit, integration and end to end.
# CARGO_INCREMENTAL=0: a one-shot build gains nothing from incremental state,
# which would only add gigabytes to target/.
test: deps python-client
	CARGO_INCREMENTAL=0 $(CARGO) test --workspace --no-fail-fast

# The property tests of `make test` with many more cases, optimised: the manifest,
# JSON and protobuf decoders, selectors, quantities, cron schedules, patches, SPDY
# framing and the gRPC request path (`--test fuzz` and the transcoder's `fuzz` tests).
# FUZZ_CASES inputs per property (`make test` runs proptest's default of 256).
FUZZ_CASES ?= 20000
fuzz: deps
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p rkube-api --test fuzz
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p rkube-apiserver --test fuzz
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p rkube-apiserver --lib fuzz

# The chaos soak (tests/tests/soak.rs) for MINUTES minutes: a three-node cluster under a
# moving workload while a random daemon is killed every few seconds, a new sequence of
# faults each run (`make test` runs one minute of a fixed one); SOAK_SEED=N replays run N.
MINUTES ?= 10
soak: deps
	SOAK_SECONDS=$$(( $(MINUTES) * 60 )) SOAK_SEED=$${SOAK_SEED:-random} $(CARGO) test -p rkube-e2e --test soak -- --nocapture

# `build` first: some suites run the release daemons as their own processes.
bench: build
	$(CARGO) run --release -p rkube-bench -- $(BENCH_ARGS)

# Installs the release binaries, systemd units and sample settings for a
# server (see deploy/install.sh): ROLE=control-plane, node or all;
# DESTDIR=DIR installs below DIR instead of /.
ROLE ?= all
install: build
	DESTDIR="$(DESTDIR)" deploy/install.sh --role $(ROLE) --bin-dir $(BIN)

clean-state: down
	rm -rf $(STATE)
