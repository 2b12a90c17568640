#!/usr/bin/env bash
# Builds a one-layer OCI image layout around Debian's static busybox.
#
#   tests/images/build-busybox-image.sh [--with-openssl] OUT_DIR [BUSYBOX]
#
# OUT_DIR receives oci-layout, index.json and blobs/sha256/* and can be pushed with
#   skopeo copy --dest-tls-verify=false oci:OUT_DIR:latest docker://127.0.0.1:PORT/rkube/busybox:latest
#
# The result is deterministic (fixed mtimes, owners, modes, entry order and gzip header), so
# the same busybox binary always gives the same digests: tests may compare digests across
# builds. BUSYBOX defaults to /bin/busybox (package busybox-static); it must be static,
# because the image has no libc.
#
# --with-openssl adds the host's openssl binary with the libraries it loads (package
# openssl), which busybox's wget runs for https:// URLs (`openssl s_client`), as images
# that call TLS servers with wget ship it; busybox's own TLS cannot talk to servers with
# ECDSA certificates such as the apiserver.
set -euo pipefail

with_openssl=false
if [[ ${1:-} == --with-openssl ]]; then
    with_openssl=true
    shift
fi
out=${1:?usage: $0 [--with-openssl] OUT_DIR [BUSYBOX]}
busybox=${2:-/bin/busybox}

if [[ ! -x $busybox ]]; then
    echo "error: $busybox is missing; install it with: apt-get install busybox-static" >&2
    exit 1
fi
if command -v ldd >/dev/null && ldd "$busybox" >/dev/null 2>&1; then
    echo "error: $busybox is dynamically linked; the image needs the static one (busybox-static)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

umask 022
mkdir -p "$root"/{bin,etc,root,proc,sys,dev,run,var/www} "$root/tmp"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
install -m 0755 "$busybox" "$root/bin/busybox"
# Every applet as a symlink in /bin, so any of them can be a container's command.
for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] && continue
    ln -s busybox "$root/bin/$applet"
done
if $with_openssl; then
    openssl=$(command -v openssl) || {
        echo "error: openssl is missing; install it with: apt-get install openssl" >&2
        exit 1
    }
    install -D -m 0755 "$openssl" "$root/usr/bin/openssl"
    # the loader and libraries at the paths the binary asks for
    for lib in $(ldd "$openssl" | grep -o '/[^ ]*'); do
        install -D -m 0755 "$lib" "$root$lib"
    done
fi
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'rkube test image\n' >"$root/var/www/index.html"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/var/www/index.html"

# Deterministic layer: sorted names, epoch mtimes, root-owned, GNU format (no atime/ctime
# pax records), gzip without name or timestamp.
layer_tar=$work/layer.tar
tar --sort=name --mtime='@0' --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$root" -cf "$layer_tar" .
diff_id=$(sha256sum "$layer_tar" | cut -d' ' -f1)
gzip -n -9 -c "$layer_tar" >"$work/layer.tar.gz"
layer_digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")

rm -rf "$out"
mkdir -p "$out/blobs/sha256"
mv "$work/layer.tar.gz" "$out/blobs/sha256/$layer_digest"

put_blob() { # file -> prints "digest size"
    local d s
    d=$(sha256sum "$1" | cut -d' ' -f1)
    s=$(stat -c %s "$1")
    mv "$1" "$out/blobs/sha256/$d"
    echo "$d $s"
}

printf '%s' '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z",'\
'"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},'\
'"rootfs":{"type":"layers","diff_ids":["sha256:'"$diff_id"'"]},'\
'"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/images/build-busybox-image.sh"}]}' >"$work/config.json"
read -r config_digest config_size < <(put_blob "$work/config.json")

printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config_digest"'","size":'"$config_size"'},'\
'"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'"$layer_digest"'","size":'"$layer_size"'}]}' >"$work/manifest.json"
read -r manifest_digest manifest_size < <(put_blob "$work/manifest.json")

printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'\
'"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:'"$manifest_digest"'","size":'"$manifest_size"','\
'"platform":{"architecture":"amd64","os":"linux"},"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' >"$out/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"

echo "sha256:$manifest_digest"
