# rkube: the two commands are `make up` (a working local cluster) and
# `make test` (every test). Both install what is missing on Debian first.

SHELL := /bin/bash
CARGO ?= cargo
PACKAGES := containerd runc containernetworking-plugins nftables iproute2 \
	protobuf-compiler libprotobuf-dev docker-registry skopeo busybox-static \
	etcd-server etcd-client systemd
# Where `make up` keeps state and logs (root: /var/lib/rkube; else ~/.rkube).
STATE ?= $(if $(filter 0,$(shell id -u)),/var/lib/rkube,$(HOME)/.rkube/state)
RUN := $(STATE)/run
LOGS := $(STATE)/logs
APISERVER_ADDR ?= 127.0.0.1:6443
RKUBECONFIG ?= $(HOME)/.rkube/config
BIN := target/release

.PHONY: all deps build up down status test bench clean-state

all: build

# Installs missing system packages (apt-get update once, only when needed).
deps:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "error: cargo not found; install Rust (https://rustup.rs) and retry"; exit 1; }

build: deps
	$(CARGO) build --release --workspace --bins

# Starts the local cluster: every daemon its own process with its own log.
up: build
	@mkdir -p $(RUN) $(LOGS) $(STATE)/apiserver $(dir $(RKUBECONFIG))
	@start() { name=$$1; shift; \
		if [ -f $(RUN)/$$name.pid ] && kill -0 $$(cat $(RUN)/$$name.pid) 2>/dev/null; then \
			echo "$$name already running (pid $$(cat $(RUN)/$$name.pid))"; return; fi; \
		nohup "$$@" >>$(LOGS)/$$name.log 2>&1 & echo $$! > $(RUN)/$$name.pid; \
		echo "started $$name (pid $$!, log $(LOGS)/$$name.log)"; }; \
	start rkube-apiserver $(BIN)/rkube-apiserver --listen $(APISERVER_ADDR) --data-dir $(STATE)/apiserver
	@for i in $$(seq 1 100); do $(BIN)/rkubectl --server http://$(APISERVER_ADDR) version >/dev/null 2>&1 && break; sleep 0.1; done; \
	$(BIN)/rkubectl --server http://$(APISERVER_ADDR) version >/dev/null || { echo "error: the apiserver did not come up; see $(LOGS)/rkube-apiserver.log"; exit 1; }
	@printf 'server: http://%s\nnamespace: default\n' "$(APISERVER_ADDR)" > $(RKUBECONFIG)
	@echo; echo "rkube is up. The client config is $(RKUBECONFIG). Try:"; \
	echo "  $(BIN)/rkubectl get namespaces"; \
	echo "  $(BIN)/rkubectl apply -f deploy/examples/web.yaml"; \
	echo "  $(BIN)/rkubectl get deployments,services"; \
	echo "Logs are in $(LOGS); 'make status' shows what runs, 'make down' stops it."

down:
	@for f in $(RUN)/*.pid; do [ -e "$$f" ] || continue; name=$$(basename $$f .pid); pid=$$(cat $$f); \
		if kill -0 $$pid 2>/dev/null; then kill $$pid; for i in $$(seq 1 50); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
		kill -0 $$pid 2>/dev/null && kill -9 $$pid; echo "stopped $$name"; fi; rm -f $$f; done

status:
	@for f in $(RUN)/*.pid; do [ -e "$$f" ] || { echo "nothing is running"; break; }; name=$$(basename $$f .pid); pid=$$(cat $$f); \
		if kill -0 $$pid 2>/dev/null; then echo "$$name: running (pid $$pid)"; else echo "$$name: not running (stale pid $$pid)"; fi; done

# Every test: unit, integration and end to end.
test: deps
	$(CARGO) test --workspace --no-fail-fast

bench: deps
	$(CARGO) run --release -p rkube-bench -- $(BENCH_ARGS)

clean-state: down
	rm -rf $(STATE)
