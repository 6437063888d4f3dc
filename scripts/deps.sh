#!/usr/bin/env bash
# Installs the Debian packages moat's build, demo and tests need. Idempotent: installs only what is
# missing, and runs `apt-get update` once, only when something is.
set -euo pipefail

packages=(
  # containers: the reference runtimes we compare with and drive through containerd
  containerd runc crun
  # test image and guest rootfs images
  busybox-static e2fsprogs erofs-utils skopeo umoci
  # VMs: the KVM rig (QEMU TCG with emulated SVM) and the reference microvm boots
  qemu-system-x86 qemu-utils
  # guest kernel build
  linux-source-6.12 build-essential bc flex bison libelf-dev libssl-dev xz-utils kmod cpio
  # shim and CRI protocols
  protobuf-compiler
  # tracing reference, networking, benchmarks
  strace iproute2 hyperfine python3-pip
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "moat: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "moat: installing packages needs root (run as root or with sudo)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
