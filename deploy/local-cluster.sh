#!/bin/bash
# A local rkube cluster on this machine, every daemon its own process with its own log:
# what `make up`, `make down` and `make status` run.
#
#   deploy/local-cluster.sh up [--nodes N] [--ha M]
#                                            start (again: only what is not running)
#   deploy/local-cluster.sh down             stop everything and remove what it created
#   deploy/local-cluster.sh status           what runs
#
# One node (the default) is this machine itself: the system's containerd (started if
# none answers), pods on the bridge rkube0, rkube-proxy's table in the host's nftables;
# the apiserver listens on the lan bridge's address (172.30.0.1:6443), as with several
# nodes, so pods reach it through the kubernetes Service.
#
# Several nodes (--nodes 3) share this machine the way separate machines share a lan:
#   host:        apiserver on the lan address, scheduler, controller-managers, registry,
#                bridge rkube-lan 172.30.0.1/24; routes to every node's pod network come
#                from the cloud-controller-manager's route controller (local provider)
#   node-N:      a network namespace rkube-node-N with eth0 172.30.0.(10+N) on the lan,
#                its own containerd, the kubelet's pods and server (the kubelet process
#                stays on the host with --node-netns, so it reaches the registry on
#                localhost), and its own rkube-proxy inside the namespace
#
# A highly available control plane (--ha 3, `make up HA=3`): every control-plane
# "machine" i (0..M-1) is a network namespace rkube-cp-i with eth0 172.30.0.(2+i) on the
# lan (the master is not on the worker, and etcd's peers see each other's own
# addresses, which their certificates name) and runs an etcd member (its own process and data directory $STATE/etcd-i, peer and client TLS
# from etcd's own CA in $STATE/pki/etcd, made by deploy/etcd-pki.sh) and an apiserver on
# etcd (--storage-backend etcd, listening on that address); two schedulers, two
# controller-managers and two cloud-controller-managers elect their leaders; every daemon
# and the kubeconfig's users get every apiserver and fail over between them.
#
# Secure as in production: the apiserver creates the cluster PKI in $STATE/pki at first
# start (CA, its TLS certificate, a certificate and client config per component and for
# admin) and authorizes with RBAC; every daemon runs with its own certificate; each
# kubelet joins with a one-time bootstrap token (`rkubectl token create`) and gets its
# own certificate, as a new machine would.
#
# Environment: STATE (default /var/lib/rkube), BIN (target/release), RKUBECONFIG
# (~/.rkube/config), REGISTRY_ADDR (127.0.0.1:5000), INGRESS_HTTP_ADDR and
# INGRESS_HTTPS_ADDR (where rkube-ingress serves: 0.0.0.0:80 and 0.0.0.0:443, on the
# first node's namespace with several nodes).
set -euo pipefail

STATE=${STATE:-/var/lib/rkube}
BIN=${BIN:-target/release}
RKUBECONFIG=${RKUBECONFIG:-$HOME/.rkube/config}
REGISTRY_ADDR=${REGISTRY_ADDR:-127.0.0.1:5000}
INGRESS_HTTP_ADDR=${INGRESS_HTTP_ADDR:-0.0.0.0:80}
INGRESS_HTTPS_ADDR=${INGRESS_HTTPS_ADDR:-0.0.0.0:443}
# The kubelets' eviction thresholds. Kubernetes' defaults (nodefs.available<10%, ...) are
# for dedicated nodes; a local cluster shares its disk with the developer's own files, and
# a large disk 91% full still has room for pods, so the disk thresholds here are absolute.
EVICTION_HARD=${EVICTION_HARD:-memory.available<100Mi,nodefs.available<1Gi,imagefs.available<1Gi}
RUN=$STATE/run
LOGS=$STATE/logs
PKI=$STATE/pki
LAN_BRIDGE=rkube-lan
LAN_PREFIX=172.30.0
LAN_GATEWAY=$LAN_PREFIX.1
LB_POOL=172.30.1.0/24
# each node's rkube-proxy serves the cluster DNS here (a dummy interface rkube-dns)
CLUSTER_DNS=169.254.20.10
SYSTEM_CONTAINERD=/run/containerd/containerd.sock
ETCD=${ETCD:-/usr/bin/etcd}
ETCDCTL=${ETCDCTL:-/usr/bin/etcdctl}
# the replicas of the scheduler and the controller managers with --ha
HA_REPLICAS=2

die() { echo "error: $*" >&2; exit 1; }

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# start NAME COMMAND...: runs a daemon in the background with its own log and pid file,
# unless it already runs.
start() {
	local name=$1; shift
	local pidfile=$RUN/$name.pid
	if running "$name"; then
		echo "$name already running (pid $(cat "$pidfile"))"
		return
	fi
	nohup "$@" >>"$LOGS/$name.log" 2>&1 &
	echo $! >"$pidfile"
	echo "started $name (pid $!, log $LOGS/$name.log)"
}

# stop NAME: SIGTERM, then SIGKILL after 5 s.
stop() {
	local name=$1 pidfile=$RUN/$1.pid pid
	[ -f "$pidfile" ] || return 0
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
		echo "stopped $name"
	fi
	rm -f "$pidfile"
}

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
	local secs=$1 what=$2; shift 2
	for _ in $(seq 1 $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
	die "$what"
}

ctl() { "$BIN/rkubectl" --config "$PKI/admin.conf" --server "$(api_urls)" "$@"; }

# Control-plane machine i's address with --ha (the apiserver's and etcd member's).
cp_ip() { echo "$LAN_PREFIX.$((2 + $1))"; }

# Every apiserver's URL, comma-separated (one without --ha).
api_urls() {
	local i urls=""
	if [ "${CLUSTER_HA:-1}" -le 1 ]; then
		echo "https://$APISERVER_ADDR"
		return
	fi
	for i in $(seq 0 $((CLUSTER_HA - 1))); do urls="$urls${urls:+,}https://$(cp_ip "$i"):6443"; done
	echo "$urls"
}

# The etcd members' client URLs, comma-separated.
etcd_urls() {
	local i urls=""
	for i in $(seq 0 $((CLUSTER_HA - 1))); do urls="$urls${urls:+,}https://$(cp_ip "$i"):2379"; done
	echo "$urls"
}

# etcdctl on every member, as the apiservers connect.
etcdctl_all() {
	ETCDCTL_API=3 "$ETCDCTL" --endpoints "$(etcd_urls)" --cacert "$PKI/etcd/ca.crt" \
		--cert "$PKI/etcd/apiserver-etcd-client.crt" --key "$PKI/etcd/apiserver-etcd-client.key" "$@"
}

cp_netns() { echo "rkube-cp-$1"; }

# The control plane with --ha: a namespace per machine (its daemons entered with
# nsenter, not ip netns exec, which would remount /sys), the etcd members, then the
# apiservers (the first one creates the cluster PKI, naming every control-plane address in
# its certificate).
ha_control_plane() {
	local m=$1 i ip ns members="" sans=()
	[ -x "$ETCD" ] || die "$ETCD is not installed (Debian package etcd-server; make deps installs it)"
	for i in $(seq 0 $((m - 1))); do
		ip=$(cp_ip "$i")
		ns=$(cp_netns "$i")
		if machine_netns "$ns" "$ip" "rkcp$i"; then
			echo "created control-plane namespace $ns ($ip)"
		fi
		members="$members${members:+,}etcd-$i=https://$ip:2380"
		sans+=(--tls-san "$ip")
	done
	# shellcheck disable=SC2046 # one NAME=ADDRESS word per member
	"$(dirname "$0")/etcd-pki.sh" "$PKI/etcd" $(for i in $(seq 0 $((m - 1))); do echo "etcd-$i=$(cp_ip "$i")"; done) >/dev/null
	for i in $(seq 0 $((m - 1))); do
		ip=$(cp_ip "$i")
		start "etcd-$i" nsenter --net="/var/run/netns/$(cp_netns "$i")" "$ETCD" --name "etcd-$i" --data-dir "$STATE/etcd-$i" \
			--listen-client-urls "https://$ip:2379" --advertise-client-urls "https://$ip:2379" \
			--listen-peer-urls "https://$ip:2380" --initial-advertise-peer-urls "https://$ip:2380" \
			--initial-cluster "$members" --initial-cluster-state new --initial-cluster-token rkube \
			--cert-file "$PKI/etcd/etcd-$i.crt" --key-file "$PKI/etcd/etcd-$i.key" \
			--trusted-ca-file "$PKI/etcd/ca.crt" --client-cert-auth \
			--peer-cert-file "$PKI/etcd/etcd-$i.crt" --peer-key-file "$PKI/etcd/etcd-$i.key" \
			--peer-trusted-ca-file "$PKI/etcd/ca.crt" --peer-client-cert-auth
	done
	wait_for 60 "etcd did not get a quorum; see $LOGS/etcd-*.log" etcdctl_all endpoint health
	for i in $(seq 0 $((m - 1))); do
		ip=$(cp_ip "$i")
		start "rkube-apiserver-$i" nsenter --net="/var/run/netns/$(cp_netns "$i")" "$BIN/rkube-apiserver" --listen "$ip:6443" \
			--data-dir "$STATE/apiserver-$i" --cert-dir "$PKI" --tls-san "$LAN_GATEWAY" "${sans[@]}" \
			--audit-log-path "$LOGS/audit-$i.log" --health-addr "$ip:6444" \
			--storage-backend etcd --etcd-servers "$(etcd_urls)" --etcd-cafile "$PKI/etcd/ca.crt" \
			--etcd-certfile "$PKI/etcd/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/etcd/apiserver-etcd-client.key"
		# the first creates the PKI the others use
		wait_for 30 "rkube-apiserver-$i did not come up; see $LOGS/rkube-apiserver-$i.log" \
			"$BIN/rkubectl" --config "$PKI/admin.conf" --server "https://$ip:6443" version
	done
}

# start_replicated NAME HEALTH_PORT COMMAND...: one daemon, or HA_REPLICAS of them with
# --ha (NAME-1, NAME-2; each its own health port, 100 apart).
start_replicated() {
	local name=$1 port=$2 r
	shift 2
	if [ "${CLUSTER_HA:-1}" -le 1 ]; then
		start "$name" "$@"
		return
	fi
	for r in $(seq 1 "$HA_REPLICAS"); do
		start "$name-$r" "$@" --health-addr "127.0.0.1:$((port + 100 * (r - 1)))"
	done
}

# kubelet_credentials KUBECONFIG: the kubelet's flags for its credentials: the
# kubeconfig it wrote when it joined, or a fresh bootstrap token to join with.
kubelet_credentials() {
	local conf=$1 token
	echo "--kubeconfig $conf"
	if [ ! -f "$conf" ]; then
		token=$(ctl token create --ttl 1h --description "make up: $conf")
		echo "--bootstrap-token $token --bootstrap-ca-file $PKI/ca.crt"
	fi
}

registry() {
	mkdir -p "$STATE/registry"
	printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n' \
		"$STATE/registry/data" "$REGISTRY_ADDR" >"$STATE/registry/config.yml"
	start docker-registry docker-registry serve "$STATE/registry/config.yml"
	wait_for 20 "the registry did not answer on $REGISTRY_ADDR; see $LOGS/docker-registry.log" \
		curl -fsS "http://$REGISTRY_ADDR/v2/"
	# the same image under two tags, so the walkthrough can roll out a "new version"
	local tag
	for tag in latest v2; do
		if ! curl -fsS "http://$REGISTRY_ADDR/v2/rkube/busybox/tags/list" 2>/dev/null | grep -q "\"$tag\""; then
			if [ ! -f "$STATE/images/busybox/index.json" ]; then
				rm -rf "$STATE/images/busybox"
				tests/images/build-busybox-image.sh "$STATE/images/busybox"
			fi
			skopeo copy --quiet --dest-tls-verify=false "oci:$STATE/images/busybox:latest" \
				"docker://$REGISTRY_ADDR/rkube/busybox:$tag"
			echo "pushed $REGISTRY_ADDR/rkube/busybox:$tag"
		fi
	done
}

# The cloud-config of the local provider: the machines (this one, or one per node
# namespace), the LoadBalancer pool, and whether to program pod-network routes.
cloud_config() {
	local nodes=$1 f=$STATE/cloud-config.yaml
	{
		echo "# written by deploy/local-cluster.sh; remove a machine to retire its node"
		echo "machines:"
		if [ "$nodes" -le 1 ]; then
			echo "  - name: $NODE_NAME"
			echo "    addresses: [{type: InternalIP, address: $(node_ip_of_host)}]"
			echo "    zone: local"
			echo "    region: local"
			echo "    instanceType: $(nproc)cpu-$(awk '/MemTotal/ {printf "%d", $2/1048576+0.5}' /proc/meminfo)gib"
		else
			for i in $(seq 1 "$nodes"); do
				echo "  - name: node-$i"
				echo "    addresses: [{type: InternalIP, address: $LAN_PREFIX.$((10 + i))}]"
				echo "    zone: local-$(( (i - 1) % 2 == 0 ? 1 : 2 ))"
				echo "    region: local"
				echo "    instanceType: netns"
			done
		fi
		echo "loadBalancerPool: $LB_POOL"
		echo "routes:"
		# one node holds its pods on its own bridge: nothing to route
		if [ "$nodes" -le 1 ]; then echo "  enabled: false"; else echo "  enabled: true"; fi
	} >"$f.tmp"
	mv "$f.tmp" "$f"
}

node_ip_of_host() {
	ip -4 route get 192.0.2.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") {print $(i+1); exit}}' ||
		hostname -I | awk '{print $1}'
}

# The lan the node namespaces share, and the route that sends LoadBalancer addresses to
# a node (or, with one node, to an empty bridge, so nothing not taken by the proxy's
# rules leaves the machine).
lan() {
	if ! ip link show "$LAN_BRIDGE" >/dev/null 2>&1; then
		ip link add "$LAN_BRIDGE" type bridge
		ip addr add "$LAN_GATEWAY/24" dev "$LAN_BRIDGE"
		ip link set "$LAN_BRIDGE" up
		echo "created bridge $LAN_BRIDGE ($LAN_GATEWAY/24)"
	fi
}

node_netns() { echo "rkube-node-$1"; }

# machine_netns NS IP VETH: a network namespace on the lan playing a machine of its own:
# eth0 at IP through the veth VETH on the bridge, default route via the lan gateway.
# Returns 1 (doing nothing) when NS exists already.
machine_netns() {
	local ns=$1 ip=$2 veth=$3
	ip netns list | grep -qw "$ns" && return 1
	ip netns add "$ns"
	ip -n "$ns" link set lo up
	ip link add "$veth" type veth peer name eth0 netns "$ns"
	ip link set "$veth" master "$LAN_BRIDGE" up
	ip -n "$ns" addr add "$ip/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add default via "$LAN_GATEWAY"
}

# One node namespace with its containerd, wired to the lan.
make_node() {
	local i=$1 ns ip dir run
	ns=$(node_netns "$i")
	ip=$LAN_PREFIX.$((10 + i))
	dir=$STATE/nodes/$i
	run=/run/rkube/nodes/$i
	mkdir -p "$dir" "$run"
	if machine_netns "$ns" "$ip" "rkn$i"; then
		nsenter --net="/var/run/netns/$ns" sysctl -qw net.ipv4.ip_forward=1
		echo "created node namespace $ns ($ip)"
	fi
	cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd"
state = "$run/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOF
	start "containerd-node-$i" nsenter --net="/var/run/netns/$ns" containerd --config "$dir/containerd.toml"
	wait_for 30 "containerd of node-$i did not start; see $LOGS/containerd-node-$i.log" \
		ctr --address "$run/containerd.sock" version
}

up() {
	local nodes=$1 ha=$2
	[ "$(id -u)" = 0 ] || die "the local cluster needs root (containers, network namespaces, nftables)"
	[ -x "$BIN/rkube-apiserver" ] || die "$BIN/rkube-apiserver is not built; run make up (it builds first)"
	if [ -f "$STATE/cluster.env" ]; then
		# shellcheck disable=SC1091
		. "$STATE/cluster.env"
		[ "$CLUSTER_NODES" = "$nodes" ] && [ "${CLUSTER_HA:-1}" = "$ha" ] ||
			die "a cluster with $CLUSTER_NODES node(s) and HA=${CLUSTER_HA:-1} is already set up here; run make down first"
	fi
	if [ "$ha" -le 1 ] && [ -d "$STATE/etcd-0" ]; then
		die "$STATE holds an etcd-backed (HA) cluster's data; run make up HA=N with its N, or make clean-state"
	fi
	if [ "$ha" -gt 1 ] && [ -d "$STATE/apiserver" ] && [ ! -d "$STATE/etcd-0" ]; then
		die "$STATE holds a one-apiserver (sled) cluster's data; make clean-state first, or move it to etcd (see the README's \"Choosing a store\")"
	fi
	mkdir -p "$RUN" "$LOGS" "$(dirname "$RKUBECONFIG")"
	[ "$ha" -le 1 ] && mkdir -p "$STATE/apiserver"
	printf 'CLUSTER_NODES=%s\nCLUSTER_HA=%s\n' "$nodes" "$ha" >"$STATE/cluster.env"
	CLUSTER_HA=$ha

	# The apiserver listens on the lan address in both layouts: pods reach it there
	# through the kubernetes Service (10.96.0.1:443), whose endpoints it advertises.
	APISERVER_ADDR=$LAN_GATEWAY:6443
	if [ "$nodes" -le 1 ]; then
		if ! ctr --address "$SYSTEM_CONTAINERD" version >/dev/null 2>&1; then
			start containerd containerd
			wait_for 20 "containerd did not start; see $LOGS/containerd.log" ctr --address "$SYSTEM_CONTAINERD" version
		else
			echo "containerd already running ($SYSTEM_CONTAINERD)"
		fi
	else
		sysctl -qw net.ipv4.ip_forward=1
	fi
	lan
	registry

	if [ "$ha" -le 1 ]; then
		start rkube-apiserver "$BIN/rkube-apiserver" --listen "$APISERVER_ADDR" --data-dir "$STATE/apiserver" \
			--cert-dir "$PKI" --tls-san "$LAN_GATEWAY" --audit-log-path "$LOGS/audit.log"
		wait_for 20 "the apiserver did not come up; see $LOGS/rkube-apiserver.log" ctl version
	else
		ha_control_plane "$ha"
	fi
	local api
	api=$(api_urls)
	# the administrator's credentials as a standard kubeconfig (rkubectl and
	# kubectl both read it), with absolute paths so it can be copied
	cat >"$RKUBECONFIG.tmp" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: rkube
		  cluster:
		    server: ${api%%,*}
		    certificate-authority: $PKI/ca.crt
		users:
		- name: rkube-admin
		  user:
		    client-certificate: $PKI/admin.crt
		    client-key: $PKI/admin.key
		contexts:
		- name: rkube
		  context:
		    cluster: rkube
		    user: rkube-admin
		    namespace: default
		current-context: rkube
		preferences: {}
	EOF
	chmod 600 "$RKUBECONFIG.tmp"
	mv "$RKUBECONFIG.tmp" "$RKUBECONFIG"
	start_replicated rkube-controller-manager 10257 "$BIN/rkube-controller-manager" --apiserver "$api" \
		--kubeconfig "$PKI/kube-controller-manager.conf" \
		--cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key"
	start_replicated rkube-scheduler 10259 "$BIN/rkube-scheduler" --apiserver "$api" \
		--kubeconfig "$PKI/kube-scheduler.conf"
	cloud_config "$nodes"
	start_replicated rkube-cloud-controller-manager 10258 "$BIN/rkube-cloud-controller-manager" \
		--apiserver "$api" --kubeconfig "$PKI/cloud-controller-manager.conf" \
		--cloud-provider local --cloud-config "$STATE/cloud-config.yaml"

	local names=() creds
	if [ "$nodes" -le 1 ]; then
		ip route replace "$LB_POOL" dev "$LAN_BRIDGE"
		start rkube-proxy "$BIN/rkube-proxy" --apiserver "$api" --kubeconfig "$PKI/kube-proxy.conf" \
			--node-name "$NODE_NAME" --mode nftables
		start rkube-ingress "$BIN/rkube-ingress" --apiserver "$api" --kubeconfig "$PKI/rkube-ingress.conf" \
			--node-name "$NODE_NAME" --http-addr "$INGRESS_HTTP_ADDR" --https-addr "$INGRESS_HTTPS_ADDR"
		# a token only for a kubelet about to start (start skips a running one)
		creds=$(running rkubelet || kubelet_credentials "$STATE/kubelet/kubelet.conf")
		# shellcheck disable=SC2086 # the credentials are several words
		start rkubelet "$BIN/rkubelet" --apiserver "$api" --node-name "$NODE_NAME" $creds \
			--containerd-socket "$SYSTEM_CONTAINERD" --root-dir "$STATE/kubelet" --cloud-provider external \
			--cluster-dns "$CLUSTER_DNS" --eviction-hard "$EVICTION_HARD"
		names+=("$NODE_NAME")
	else
		for i in $(seq 1 "$nodes"); do
			make_node "$i"
			local ns ip
			ns=$(node_netns "$i")
			ip=$LAN_PREFIX.$((10 + i))
			start "rkube-proxy-node-$i" nsenter --net="/var/run/netns/$ns" "$BIN/rkube-proxy" \
				--apiserver "$api" --kubeconfig "$PKI/kube-proxy.conf" --node-name "node-$i" --mode nftables
			creds=$(running "rkubelet-node-$i" || kubelet_credentials "$STATE/nodes/$i/kubelet/kubelet.conf")
			# shellcheck disable=SC2086 # the credentials are several words
			start "rkubelet-node-$i" "$BIN/rkubelet" --apiserver "$api" --node-name "node-$i" $creds \
				--node-netns "/var/run/netns/$ns" --node-ip "$ip" --listen "$ip:10250" \
				--containerd-socket "/run/rkube/nodes/$i/containerd.sock" \
				--root-dir "$STATE/nodes/$i/kubelet" --run-dir "/run/rkube/nodes/$i/kubelet" \
				--cgroup-parent "/rkube-node-$i" --health-addr "127.0.0.1:$((10248 + 100 * i))" \
				--cloud-provider external --cluster-dns "$CLUSTER_DNS" --eviction-hard "$EVICTION_HARD"
			names+=("node-$i")
		done
		# the Ingress controller on the first node, as an edge machine
		start rkube-ingress-node-1 nsenter --net="/var/run/netns/$(node_netns 1)" "$BIN/rkube-ingress" \
			--apiserver "$api" --kubeconfig "$PKI/rkube-ingress.conf" --node-name node-1 \
			--http-addr "$INGRESS_HTTP_ADDR" --https-addr "$INGRESS_HTTPS_ADDR"
		# LoadBalancer addresses reach the first node's proxy
		ip route replace "$LB_POOL" via "$LAN_PREFIX.11"
	fi
	for n in "${names[@]}"; do
		echo "waiting for node $n to be Ready..."
		wait_for 90 "node $n is not Ready; see the rkubelet logs in $LOGS" node_ready "$n"
	done
	# claims (and StatefulSets' volumeClaimTemplates) work out of the box
	ctl apply -f "$(dirname "$0")/examples/local-storageclass.yaml" >/dev/null

	echo
	if [ "$ha" -gt 1 ]; then
		echo "The control plane: $ha etcd members and $ha apiservers ($api), $HA_REPLICAS schedulers,"
		echo "controller-managers and cloud-controller-managers (rkubectl get lease -n kube-system"
		echo "shows the leaders). The kubeconfig names the first apiserver (stock kubectl takes one);"
		echo "rkubectl --server $api fails over between them."
	fi
	echo "rkube is up with ${#names[@]} node(s). The kubeconfig is $RKUBECONFIG. Try:"
	local bin_dir=$BIN
	case $bin_dir in /*) ;; *) bin_dir=$PWD/$BIN ;; esac
	echo "  export PATH=$bin_dir:\$PATH"
	echo "  rkubectl get nodes -o wide"
	echo "  rkubectl apply -f deploy/examples/web.yaml"
	echo "  rkubectl get deployments,pods,services -o wide"
	echo "  curl \$(rkubectl service web --url | head -1)"
	echo "  rkubectl apply -f deploy/examples/ingress.yaml   # two apps on one address by host name"
	echo "Stock kubectl works too (the same port serves the Kubernetes REST API):"
	echo "  KUBECONFIG=$RKUBECONFIG kubectl get pods"
	echo "The image localhost:5000/rkube/busybox (tags latest and v2) is in the local registry."
	echo "Logs are in $LOGS; 'make status' shows what runs, 'make down' stops it."
}

node_ready() {
	ctl get node "$1" 2>/dev/null | awk 'NR > 1 {print $2}' | grep -qx Ready
}

# Kills and removes every container of the rkube namespace of one containerd.
remove_containers() {
	local sock=$1 c n=0 t id
	ctr --address "$sock" version >/dev/null 2>&1 || return 0
	c="ctr --address $sock -n rkube"
	for t in $($c tasks ls -q 2>/dev/null); do $c tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
	for t in $($c tasks ls -q 2>/dev/null); do $c tasks rm -f "$t" >/dev/null 2>&1 || true; done
	for id in $($c containers ls -q 2>/dev/null); do
		$c containers rm "$id" >/dev/null 2>&1 || true
		$c snapshots rm "$id" >/dev/null 2>&1 || true
		n=$((n + 1))
	done
	[ $n -gt 0 ] && echo "removed $n containers"
	return 0
}

# Unmounts and removes the pod network namespaces under a kubelet run directory.
remove_pod_netns() {
	local ns
	for ns in "$1"/netns/*; do
		[ -e "$ns" ] || continue
		umount "$ns" 2>/dev/null || true
		rm -f "$ns"
	done
}

remove_cgroups() {
	local d
	for d in /sys/fs/cgroup/*/"$1" /sys/fs/cgroup/"$1"; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
	done
	return 0
}

# Removes a kubelet's state but for its local volumes (claims' data, kept with the
# cluster's objects): their filesystems are unmounted first (the loop devices go with
# them), so nothing is removed through a mount.
remove_kubelet_state() {
	local dir=$1 point
	[ -d "$dir" ] || return 0
	awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r point; do
		umount -l "$point" 2>/dev/null || true
	done
	find "$dir" -mindepth 1 -maxdepth 1 ! -name local-volumes -exec rm -rf {} +
}
down() {
	local nodes=1 name i f
	CLUSTER_HA=1
	if [ -f "$STATE/cluster.env" ]; then
		# shellcheck disable=SC1091
		. "$STATE/cluster.env"
		nodes=$CLUSTER_NODES
	fi
	if [ "$nodes" -gt 1 ]; then
		# the node namespaces go away with their machines: so do their Node objects, or
		# the next cluster would schedule onto them until they time out
		APISERVER_ADDR=$LAN_GATEWAY:6443
		for i in $(seq 1 "$nodes"); do
			ctl delete node "node-$i" --ignore-not-found >/dev/null 2>&1 && echo "deleted node node-$i"
		done
	fi
	for f in "$RUN"/rkube-ingress*.pid "$RUN"/rkube-proxy*.pid "$RUN"/rkubelet*.pid; do
		[ -e "$f" ] && stop "$(basename "$f" .pid)"
	done
	# the control plane, replicas too, the apiservers after their clients, etcd last
	for name in rkube-scheduler rkube-cloud-controller-manager rkube-controller-manager rkube-apiserver etcd; do
		for f in "$RUN/$name".pid "$RUN/$name"-*.pid; do
			[ -e "$f" ] && stop "$(basename "$f" .pid)"
		done
	done
	if [ "$nodes" -le 1 ]; then
		remove_containers "$SYSTEM_CONTAINERD"
		remove_pod_netns /run/rkubelet
		remove_kubelet_state "$STATE/kubelet"
		ip link del rkube0 2>/dev/null && echo "removed bridge rkube0"
		nft delete table ip rkube 2>/dev/null && echo "removed nftables table rkube"
		nft delete table inet rkube-netpol 2>/dev/null && echo "removed nftables table rkube-netpol"
		nft delete table ip rkube-pod-masq 2>/dev/null && echo "removed nftables table rkube-pod-masq"
		# the cluster DNS address: a dummy interface, or on lo without the dummy driver
		ip link del rkube-dns 2>/dev/null && echo "removed interface rkube-dns"
		ip addr del "$CLUSTER_DNS/32" dev lo label lo:rkdns 2>/dev/null || true
		remove_cgroups rkube
	else
		for i in $(seq 1 "$nodes"); do
			remove_containers "/run/rkube/nodes/$i/containerd.sock"
			stop "containerd-node-$i"
			remove_pod_netns "/run/rkube/nodes/$i/kubelet"
			# the namespace takes its veth, pod bridge and nftables table with it
			ip netns del "$(node_netns "$i")" 2>/dev/null && echo "removed node namespace $(node_netns "$i")"
			remove_cgroups "rkube-node-$i"
			remove_kubelet_state "$STATE/nodes/$i/kubelet"
			rm -rf "/run/rkube/nodes/$i"
		done
	fi
	for i in $(seq 0 $((${CLUSTER_HA:-1} - 1))); do
		[ "${CLUSTER_HA:-1}" -gt 1 ] || break
		ip netns del "$(cp_netns "$i")" 2>/dev/null && echo "removed control-plane namespace $(cp_netns "$i")"
	done
	ip route del "$LB_POOL" 2>/dev/null || true
	ip link del "$LAN_BRIDGE" 2>/dev/null && echo "removed bridge $LAN_BRIDGE"
	for name in containerd docker-registry; do stop "$name"; done
	for f in "$RUN"/*.pid; do [ -e "$f" ] && stop "$(basename "$f" .pid)"; done
	rm -f "$STATE/cluster.env"
	return 0
}

status() {
	local f name pid any=0
	for f in "$RUN"/*.pid; do
		[ -e "$f" ] || continue
		any=1
		name=$(basename "$f" .pid)
		pid=$(cat "$f")
		if kill -0 "$pid" 2>/dev/null; then echo "$name: running (pid $pid)"; else echo "$name: not running (stale pid $pid)"; fi
	done
	[ $any = 1 ] || echo "nothing is running"
	if [ -f "$STATE/cluster.env" ]; then
		# shellcheck disable=SC1091
		. "$STATE/cluster.env"
		if [ "${CLUSTER_HA:-1}" -gt 1 ] && [ $any = 1 ]; then
			echo
			etcdctl_all endpoint status -w table 2>&1 || true
			APISERVER_ADDR=$LAN_GATEWAY:6443
			echo
			ctl get lease -n kube-system 2>&1 || true
		fi
	fi
}

NODE_NAME=${NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
cmd=${1:-}
shift || true
nodes=1
ha=1
usage="usage: $0 up [--nodes N] [--ha M] | down | status"
while [ $# -gt 0 ]; do
	case $1 in
	--nodes) nodes=${2:?--nodes needs a number}; shift 2 ;;
	--nodes=*) nodes=${1#--nodes=}; shift ;;
	--ha) ha=${2:?--ha needs a number}; shift 2 ;;
	--ha=*) ha=${1#--ha=}; shift ;;
	*) die "unknown argument $1 ($usage)" ;;
	esac
done
case $nodes in '' | *[!0-9]*) die "--nodes must be a number, not $nodes" ;; esac
if [ "$nodes" -lt 1 ] || [ "$nodes" -gt 50 ]; then die "--nodes must be between 1 and 50"; fi
case $ha in '' | *[!0-9]*) die "--ha (HA=) must be a number, not $ha" ;; esac
case $ha in
1 | 3 | 5) ;;
*) die "--ha (HA=) is the number of control-plane machines: 1, or 3 or 5 (etcd needs a majority, so an even number adds no safety), not $ha" ;;
esac
case $cmd in
up) up "$nodes" "$ha" ;;
down) down ;;
status) status ;;
*) die "$usage" ;;
esac
