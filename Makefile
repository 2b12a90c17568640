# rkube: the two commands are `make up` (a working local cluster) and
# `make test` (every test). Both install what is missing on Debian first.

SHELL := /bin/bash
CARGO ?= cargo
PACKAGES := containerd runc containernetworking-plugins nftables iproute2 \
	protobuf-compiler libprotobuf-dev docker-registry skopeo busybox-static \
	etcd-server etcd-client systemd curl conntrack
# Where `make up` keeps state and logs (root: /var/lib/rkube; else ~/.rkube).
STATE ?= $(if $(filter 0,$(shell id -u)),/var/lib/rkube,$(HOME)/.rkube/state)
RUN := $(STATE)/run
LOGS := $(STATE)/logs
APISERVER_ADDR ?= 127.0.0.1:6443
RKUBECONFIG ?= $(HOME)/.rkube/config
BIN := target/release
CTL := $(BIN)/rkubectl --server http://$(APISERVER_ADDR)
NODE_NAME ?= $(shell hostname)
CONTAINERD_SOCKET ?= /run/containerd/containerd.sock
REGISTRY_ADDR ?= 127.0.0.1:5000

# $(call stop,NAME): stops a daemon started by `start` (SIGTERM, then
# SIGKILL after 5 s).
define stop
n=$(1); f=$(RUN)/$$n.pid; if [ -f $$f ]; then pid=$$(cat $$f); \
	if kill -0 $$pid 2>/dev/null; then kill $$pid; for i in $$(seq 1 50); do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
	kill -0 $$pid 2>/dev/null && kill -9 $$pid; echo "stopped $$n"; fi; rm -f $$f; fi
endef

# $(call start,NAME,COMMAND...): starts a daemon in the background with its
# own log and pid file, unless it is already running.
define start
name=$(1); if [ -f $(RUN)/$$name.pid ] && kill -0 $$(cat $(RUN)/$$name.pid) 2>/dev/null; then \
	echo "$$name already running (pid $$(cat $(RUN)/$$name.pid))"; \
else nohup $(2) >>$(LOGS)/$$name.log 2>&1 & echo $$! > $(RUN)/$$name.pid; \
	echo "started $$name (pid $$!, log $(LOGS)/$$name.log)"; fi
endef

.PHONY: all deps build up down status test bench clean-state containerd registry

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
# Running it again starts only what is not running.
up: build
	@mkdir -p $(RUN) $(LOGS) $(STATE)/apiserver $(STATE)/registry $(dir $(RKUBECONFIG))
	@$(MAKE) --no-print-directory containerd registry
	@$(call start,rkube-apiserver,$(BIN)/rkube-apiserver --listen $(APISERVER_ADDR) --data-dir $(STATE)/apiserver)
	@for i in $$(seq 1 100); do $(CTL) version >/dev/null 2>&1 && break; sleep 0.1; done; \
	$(CTL) version >/dev/null || { echo "error: the apiserver did not come up; see $(LOGS)/rkube-apiserver.log"; exit 1; }
	@printf 'server: http://%s\nnamespace: default\n' "$(APISERVER_ADDR)" > $(RKUBECONFIG)
	@if [ -x $(BIN)/rkube-controller-manager ]; then $(call start,rkube-controller-manager,$(BIN)/rkube-controller-manager --apiserver http://$(APISERVER_ADDR)); fi
	@if [ -x $(BIN)/rkube-scheduler ]; then $(call start,rkube-scheduler,$(BIN)/rkube-scheduler --apiserver http://$(APISERVER_ADDR)); fi
	@if [ -x $(BIN)/rkube-proxy ]; then $(call start,rkube-proxy,$(BIN)/rkube-proxy --apiserver http://$(APISERVER_ADDR) --node-name $(NODE_NAME) --mode nftables); fi
	@if [ -x $(BIN)/rkubelet ]; then $(call start,rkubelet,$(BIN)/rkubelet --apiserver http://$(APISERVER_ADDR) --node-name $(NODE_NAME) --containerd-socket $(CONTAINERD_SOCKET) --root-dir $(STATE)/kubelet); \
		echo "waiting for node $(NODE_NAME) to be Ready..."; \
		for i in $$(seq 1 300); do $(CTL) get node $(NODE_NAME) 2>/dev/null | grep -qw Ready && break; sleep 0.2; done; \
		$(CTL) get node $(NODE_NAME) 2>/dev/null | grep -qw Ready || { echo "error: node $(NODE_NAME) is not Ready; see $(LOGS)/rkubelet.log"; exit 1; }; fi
	@echo; echo "rkube is up. The client config is $(RKUBECONFIG). Try:"; \
	echo "  export PATH=$(CURDIR)/$(BIN):\$$PATH"; \
	echo "  rkubectl get nodes,namespaces"; \
	echo "  rkubectl apply -f deploy/examples/web.yaml"; \
	echo "  rkubectl get deployments,pods,services -o wide"; \
	echo "The image localhost:5000/rkube/busybox:latest is in the local registry."; \
	echo "Logs are in $(LOGS); 'make status' shows what runs, 'make down' stops it."

# containerd, unless one already answers on its socket.
containerd:
	@if ctr --address $(CONTAINERD_SOCKET) version >/dev/null 2>&1; then echo "containerd already running ($(CONTAINERD_SOCKET))"; \
	else $(call start,containerd,containerd); \
		for i in $$(seq 1 100); do ctr --address $(CONTAINERD_SOCKET) version >/dev/null 2>&1 && break; sleep 0.1; done; \
		ctr --address $(CONTAINERD_SOCKET) version >/dev/null 2>&1 || { echo "error: containerd did not start; see $(LOGS)/containerd.log"; exit 1; }; fi

# A registry on localhost:5000 holding the demo image, built by the project
# around Debian's busybox-static.
registry:
	@printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' "$(STATE)/registry/data" "$(REGISTRY_ADDR)" > $(STATE)/registry/config.yml
	@$(call start,docker-registry,docker-registry serve $(STATE)/registry/config.yml)
	@for i in $$(seq 1 100); do curl -fsS http://$(REGISTRY_ADDR)/v2/ >/dev/null 2>&1 && break; sleep 0.1; done
	@if ! curl -fsS http://$(REGISTRY_ADDR)/v2/rkube/busybox/tags/list 2>/dev/null | grep -q latest; then \
		rm -rf $(STATE)/images/busybox && tests/images/build-busybox-image.sh $(STATE)/images/busybox && \
		skopeo copy --quiet --dest-tls-verify=false oci:$(STATE)/images/busybox:latest docker://$(REGISTRY_ADDR)/rkube/busybox:latest && \
		echo "pushed $(REGISTRY_ADDR)/rkube/busybox:latest"; fi

# Stops everything `make up` started and removes what the node created:
# containers, pod network namespaces, CNI state, the bridge, the nftables
# table and the cgroups. The cluster's objects stay in the store.
down:
	@for name in rkube-proxy rkubelet rkube-scheduler rkube-cloud-controller-manager rkube-controller-manager rkube-apiserver; do \
		$(call stop,$$name); done
	@if ctr --address $(CONTAINERD_SOCKET) version >/dev/null 2>&1; then \
		c="ctr --address $(CONTAINERD_SOCKET) -n rkube"; \
		for t in $$($$c tasks ls -q 2>/dev/null); do $$c tasks kill -s SIGKILL $$t >/dev/null 2>&1; done; \
		for t in $$($$c tasks ls -q 2>/dev/null); do $$c tasks rm -f $$t >/dev/null 2>&1; done; \
		n=0; for id in $$($$c containers ls -q 2>/dev/null); do $$c containers rm $$id >/dev/null 2>&1; $$c snapshots rm $$id >/dev/null 2>&1; n=$$((n+1)); done; \
		[ $$n -gt 0 ] && echo "removed $$n containers"; true; fi
	@for ns in /run/rkubelet/netns/*; do [ -e "$$ns" ] || continue; umount "$$ns" 2>/dev/null; rm -f "$$ns"; done
	@rm -rf $(STATE)/kubelet
	@ip link del rkube0 2>/dev/null && echo "removed bridge rkube0"; true
	@nft delete table ip rkube 2>/dev/null && echo "removed nftables table rkube"; true
	@for d in /sys/fs/cgroup/*/rkube /sys/fs/cgroup/rkube; do [ -d "$$d" ] && find "$$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done; true
	@for name in containerd docker-registry; do $(call stop,$$name); done
	@for f in $(RUN)/*.pid; do [ -e "$$f" ] || continue; $(call stop,$$(basename $$f .pid)); done

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
