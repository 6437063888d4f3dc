#!/bin/bash
# Builds the moat node installer image offline, from this checkout's release build:
#
#   runtimeclass/installer/build-image.sh --kubectl /path/to/kubectl [--out DIR] [--tag TAG]
#
# 1. stages a root file system in DIR/rootfs: busybox (static, from Debian's busybox-static) as
#    /bin/sh and friends (nsenter among them); what `moat install --prefix` gathers into a
#    scratch prefix: moat's binaries (into /opt/moat/bin, with the shared libraries they link,
#    copied from this machine as `ldd` lists them) and the guest kernel and initramfs (into
#    /opt/moat/share/moat, where `moat install` on the node looks first; left out if not built,
#    and moat-vm is then skipped on the nodes); kubectl in /opt/moat/bin (a static binary you
#    supply: the installer labels its node with it); and installer.sh;
# 2. writes it as an OCI image layout (DIR/oci, tag TAG) with umoci, and, with skopeo, as a
#    docker archive (DIR/moat-installer.tar) that `ctr -n k8s.io images import` loads on a node.
#
# Nothing is pulled: there is no base image. The same staged tree builds with buildah through
# the Containerfile beside this script. Needs root (umoci keeps the files' owners), umoci, and
# optionally skopeo; scripts/deps.sh installs both.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out="$repo/target/moat-installer"
tag=0.1.0
kubectl=""
while [ $# -gt 0 ]; do
  case "$1" in
    --kubectl) kubectl=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "build-image.sh: $*" >&2; exit 1; }
[ -n "$kubectl" ] || die "--kubectl FILE is required: the installer labels its node with kubectl"
[ -x "$kubectl" ] || die "$kubectl is not an executable file"
if ldd "$kubectl" >/dev/null 2>&1; then
  die "$kubectl is dynamically linked; use a static kubectl (the release binaries from dl.k8s.io are)"
fi
command -v umoci >/dev/null || die "umoci is missing (scripts/deps.sh installs it)"
bins="$repo/target/release"
for b in moat containerd-shim-moat-v2 moat-vmm moat-trace; do
  [ -x "$bins/$b" ] || die "$bins/$b is not built: run cargo build --release --workspace"
done
busybox=/bin/busybox
if ! [ -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is missing or not static: install Debian's busybox-static"
fi

rootfs="$out/rootfs"
rm -rf "$rootfs" "$out/oci" "$out/bundle" "$out/moat-installer.tar"
mkdir -p "$rootfs/bin" "$rootfs/opt/moat/bin" "$rootfs/opt/moat/share/moat" "$rootfs/tmp" \
  "$rootfs/usr/local" "$rootfs/etc/moat" "$rootfs/etc/containerd" "$rootfs/proc" "$rootfs/sys" \
  "$rootfs/dev" "$rootfs/run"
chmod 1777 "$rootfs/tmp"

cp "$busybox" "$rootfs/bin/busybox"
for applet in sh nsenter sleep cat test echo ls mkdir rm; do
  ln -s busybox "$rootfs/bin/$applet"
done

# What to ship comes from `moat install` itself, into a scratch prefix: moat's binaries, and the
# guest kernel and initramfs from moat's cache (left out, with moat's reason, if not built).
prefix="$out/prefix"
rm -rf "$prefix"
"$bins/moat" install --prefix "$prefix" | grep '^note: left out' >&2 || true
for b in "$prefix"/usr/local/bin/*; do
  cp "$b" "$rootfs/opt/moat/bin/"
  # Every library it links, at the path the dynamic loader looks in.
  ldd "$b" | grep -o '/[^ ]*' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
done
for f in vmlinux initramfs.cpio; do
  if [ -f "$prefix/usr/local/share/moat/$f" ]; then
    cp "$prefix/usr/local/share/moat/$f" "$rootfs/opt/moat/share/moat/$f"
  fi
done
rm -rf "$prefix"
cp "$kubectl" "$rootfs/opt/moat/bin/kubectl"
cp "$here/installer.sh" "$rootfs/opt/moat/installer.sh"

# The OCI layout: an empty image, the staged tree unpacked into it, repacked as one layer.
umoci init --layout "$out/oci"
umoci new --image "$out/oci:$tag"
umoci unpack --image "$out/oci:$tag" "$out/bundle"
cp -a "$rootfs/." "$out/bundle/rootfs/"
umoci repack --image "$out/oci:$tag" "$out/bundle"
umoci config --image "$out/oci:$tag" \
  --config.env "PATH=/opt/moat/bin:/usr/bin:/bin:/usr/sbin:/sbin" \
  --config.entrypoint /bin/sh --config.entrypoint /opt/moat/installer.sh \
  --architecture amd64 --os linux
rm -rf "$out/bundle"
echo "build-image.sh: OCI layout $out/oci:$tag"

if command -v skopeo >/dev/null; then
  skopeo copy --quiet "oci:$out/oci:$tag" \
    "docker-archive:$out/moat-installer.tar:localhost/moat-installer:$tag"
  echo "build-image.sh: docker archive $out/moat-installer.tar (localhost/moat-installer:$tag);" \
    "load it on a node with: ctr -n k8s.io images import $out/moat-installer.tar"
fi
