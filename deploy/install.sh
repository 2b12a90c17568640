#!/usr/bin/env bash
# Installs rkube for systemd: the binaries into /usr/local/bin, one unit per
# daemon into /etc/systemd/system, sample settings into /etc/rkube (never
# over a file that is already there) and the state directory /var/lib/rkube.
# Everything goes below $DESTDIR when it is set (packaging, tests). Running
# it again updates binaries and units and keeps your settings.
#
#   deploy/install.sh --role control-plane|node|all [--store sled|etcd] [--bin-dir DIR]
#
# control-plane: rkube-apiserver, rkube-scheduler, rkube-controller-manager,
#                rkube-cloud-controller-manager (and rkubectl)
# node:          rkubelet, rkube-proxy, rkube-ingress (and rkubectl)
# all:           both, for a single machine
# --store etcd:  the apiserver's sample settings for etcd (apiserver-etcd.yaml) and an
#                etcd member (rkube-etcd.service, etcd.yaml; the binary is Debian's
#                etcd-server), for a control plane of several machines (default sled)
set -euo pipefail
# the modes below must not depend on the caller's umask
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
role=""
store=sled
bin_dir="$repo/target/release"
destdir=${DESTDIR:-}
destdir=${destdir%/}

usage() {
	sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}
die() {
	echo "install.sh: error: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case $1 in
	--role) [ $# -ge 2 ] || die "--role needs a value: control-plane, node or all"; role=$2; shift 2 ;;
	--role=*) role=${1#--role=}; shift ;;
	--store) [ $# -ge 2 ] || die "--store needs a value: sled or etcd"; store=$2; shift 2 ;;
	--store=*) store=${1#--store=}; shift ;;
	--bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift 2 ;;
	--bin-dir=*) bin_dir=${1#--bin-dir=}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1'; usage: deploy/install.sh --role control-plane|node|all [--store sled|etcd] [--bin-dir DIR]" ;;
	esac
done

case $store in
sled) apiserver_sample=apiserver ;;
etcd) apiserver_sample=apiserver-etcd ;;
*) die "--store '$store' is not one of sled, etcd" ;;
esac
# binary (empty: the distribution's) : unit : settings file : its sample (all without .yaml)
control_plane="rkube-apiserver:rkube-apiserver.service:apiserver:$apiserver_sample
rkube-scheduler:rkube-scheduler.service:scheduler
rkube-controller-manager:rkube-controller-manager.service:controller-manager
rkube-cloud-controller-manager:rkube-cloud-controller-manager.service:cloud-controller-manager"
node="rkubelet:rkubelet.service:kubelet
rkube-proxy:rkube-proxy.service:proxy
rkube-ingress:rkube-ingress.service:ingress"
case $role in
control-plane) daemons=$control_plane ;;
node) daemons=$node ;;
all) daemons="$control_plane
$node" ;;
"") die "--role is required: control-plane (apiserver, scheduler, controller managers), node (kubelet, proxy, ingress) or all" ;;
*) die "--role '$role' is not one of control-plane, node, all" ;;
esac
if [ "$store" = etcd ]; then
	[ "$role" != node ] || die "--store etcd is for the control plane: use it with --role control-plane or all"
	daemons=":rkube-etcd.service:etcd
$daemons"
fi

binaries="$(echo "$daemons" | cut -d: -f1 | grep -v '^$') rkubectl"
# Check everything before writing anything, so a failed run changes nothing.
for b in $binaries; do
	[ -x "$bin_dir/$b" ] || die "$bin_dir/$b is missing or not executable; build with 'make build' (cargo build --release) or pass --bin-dir DIR"
done
# the sample of a settings file: the fourth field, else the file's own name
sample() {
	local s
	s=$(echo "$1" | cut -d: -f4)
	echo "${s:-$(echo "$1" | cut -d: -f3)}"
}
for line in $daemons; do
	unit=$(echo "$line" | cut -d: -f2)
	conf=$(sample "$line")
	[ -f "$here/systemd/$unit" ] || die "$here/systemd/$unit is missing; is this an rkube checkout?"
	[ -f "$here/config/$conf.yaml" ] || die "$here/config/$conf.yaml is missing; is this an rkube checkout?"
done

bin_dest="$destdir/usr/local/bin"
unit_dest="$destdir/etc/systemd/system"
conf_dest="$destdir/etc/rkube"
state_dest="$destdir/var/lib/rkube"
for d in "$bin_dest" "$unit_dest" "$conf_dest" "$state_dest"; do
	# an existing directory keeps the mode its owner gave it
	[ -d "$d" ] || install -d -m 0755 "$d"
done

for b in $binaries; do
	# install(1) replaces the file rather than writing into it, so a
	# running daemon keeps its old binary until restarted.
	install -m 0755 "$bin_dir/$b" "$bin_dest/$b"
	echo "installed $bin_dest/$b"
done
units=""
for line in $daemons; do
	unit=$(echo "$line" | cut -d: -f2)
	conf=$(echo "$line" | cut -d: -f3)
	install -m 0644 "$here/systemd/$unit" "$unit_dest/$unit"
	echo "installed $unit_dest/$unit"
	src=$(sample "$line")
	if [ -e "$conf_dest/$conf.yaml" ]; then
		echo "kept      $conf_dest/$conf.yaml (yours; the sample is $here/config/$src.yaml)"
	else
		install -m 0644 "$here/config/$src.yaml" "$conf_dest/$conf.yaml"
		echo "installed $conf_dest/$conf.yaml"
	fi
	units="$units $unit"
done

echo
if [ -n "$destdir" ]; then
	echo "rkube ($role) is installed below $destdir. On the machine it is copied to:"
else
	echo "rkube ($role) is installed. Next:"
fi
echo "  1. review the settings in /etc/rkube/*.yaml (the apiserver address, above all)"
case $units in
*rkube-cloud-controller-manager.service*)
	echo "     and list your machines in /etc/rkube/cloud-config.yaml before enabling"
	echo "     rkube-cloud-controller-manager (see deploy/examples/); leave it disabled otherwise"
	units=${units/ rkube-cloud-controller-manager.service/}
	;;
esac
case $units in
*rkubelet.service*) echo "     (the kubelet needs containerd: apt-get install containerd runc containernetworking-plugins)" ;;
esac
case $units in
*rkube-etcd.service*)
	echo "     etcd: apt-get install etcd-server; set this member in /etc/rkube/etcd.yaml and the"
	echo "     members in apiserver.yaml; make the certificates once (deploy/etcd-pki.sh"
	echo "     /etc/rkube/etcd NAME=ADDRESS...) and copy them to every control-plane machine"
	;;
esac
echo "  2. systemctl daemon-reload"
echo "  3. systemctl enable --now$units"
echo "  4. check: systemctl status$units; curl http://127.0.0.1:PORT/healthz"
echo "     (ports: apiserver 6444, scheduler 10259, controller-manager 10257,"
echo "     cloud-controller-manager 10258, kubelet 10248, proxy 10256)"
case $units in
*rkube-apiserver.service*)
	echo "  5. the apiserver creates the cluster PKI in /var/lib/rkube/pki at first start;"
	echo "     as root: export RKUBECONFIG=/var/lib/rkube/pki/admin.conf; rkubectl get nodes"
	echo "     new machines join with a token from 'rkubectl token create' (see kubelet.yaml)"
	;;
esac
