#!/bin/bash
# The certificates of an etcd cluster for rkube, with openssl:
#
#   deploy/etcd-pki.sh DIR NAME=ADDRESS [NAME=ADDRESS...]
#
# makes in DIR (created, mode 0700; files that exist are kept, so running it again with
# one more member only adds that member's):
#   ca.crt, ca.key                 etcd's own CA. Not the cluster CA: a certificate the
#                                  cluster CA signs (every kubelet has one) must not open
#                                  etcd, which holds every Secret.
#   NAME.crt, NAME.key             each member's certificate, for ADDRESS, localhost and
#                                  127.0.0.1 (members check that a peer's certificate
#                                  names the address it connects from), good for serving and as a client: a
#                                  member answers clients and peers and dials its peers
#                                  with it (etcd's --cert-file and --peer-cert-file)
#   apiserver-etcd-client.crt/.key what rkube-apiserver shows etcd (--etcd-certfile,
#                                  --etcd-keyfile; --etcd-cafile is ca.crt)
# Copy ca.crt and a member's pair to that member's machine, ca.crt and the client pair
# to every apiserver's; ca.key stays where new members' certificates are made.
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: $0 DIR NAME=ADDRESS [NAME=ADDRESS...]"
command -v openssl >/dev/null || die "openssl is not installed (Debian package openssl)"
dir=$1
shift
for member in "$@"; do
	case $member in
	[a-z0-9]*=?*) ;;
	*) die "$member: give each member as NAME=ADDRESS (e.g. etcd-1=10.0.0.11)" ;;
	esac
done
mkdir -p "$dir"
chmod 700 "$dir"
days=${ETCD_CERT_DAYS:-3650}

# issue STEM CN EXTENSIONS: a P-256 key and a certificate the CA signs.
issue() {
	local stem=$1 cn=$2 ext=$3
	[ -f "$dir/$stem.crt" ] && return 0
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cn" \
		-keyout "$dir/$stem.key" -out "$dir/$stem.csr" 2>/dev/null
	openssl x509 -req -in "$dir/$stem.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
		-days "$days" -extfile <(printf '%s\n' "$ext") -out "$dir/$stem.crt" 2>/dev/null
	rm -f "$dir/$stem.csr"
	chmod 600 "$dir/$stem.key"
	echo "wrote $dir/$stem.crt"
}

if [ ! -f "$dir/ca.crt" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=rkube-etcd-ca" \
		-days "$days" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	chmod 600 "$dir/ca.key"
	echo "wrote $dir/ca.crt"
fi
for member in "$@"; do
	name=${member%%=*}
	address=${member#*=}
	case $address in
	*[!0-9.:a-fA-F]*) san="DNS:$address" ;;
	*) san="IP:$address" ;;
	esac
	issue "$name" "$name" "subjectAltName=$san,DNS:localhost,IP:127.0.0.1
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
done
issue apiserver-etcd-client rkube-apiserver "keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
