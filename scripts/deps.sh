#!/usr/bin/env bash
# Installs what moat's build, demo and tests need: Debian packages, and two Python tools in a venv
# under moat's cache dir. Idempotent and quick when everything is there (it runs before every build
# and test run): one dpkg query, one file check; `apt-get update` only when a package is missing.
set -euo pipefail

packages=(
  # containers: the reference runtimes we compare with and drive through containerd; CNI plugins
  # for CRI pods in the test harness
  containerd runc crun containernetworking-plugins
  # test image and guest rootfs images
  busybox-static e2fsprogs erofs-utils skopeo umoci
  # VMs: the KVM rig (QEMU TCG with emulated SVM) and the reference microvm boots
  qemu-system-x86 qemu-utils
  # guest kernel build
  linux-source-6.12 build-essential bc flex bison libelf-dev libssl-dev xz-utils kmod cpio
  # shim and CRI protocols
  protobuf-compiler
  # tracing reference, networking, benchmarks
  strace iproute2 hyperfine
  # manifest validation tools (installed with pip into a venv, below)
  python3-venv python3-pip ca-certificates
)

# Pinned so that every run validates against the same schemas and lint rules.
python_tools=(kubernetes-validate==1.37.0 yamllint==1.38.0)

installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${packages[@]}" 2>/dev/null |
  awk '$NF == "installed" { print $1 }' || true)
missing=()
for p in "${packages[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
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

# The Python tools live in a venv beside moat's build cache (the same root moat_artifacts::cache
# uses), not in the system Python; tests find them with moat_testkit::python_tool().
cache_root=${MOAT_CACHE_DIR:-${XDG_CACHE_HOME:+$XDG_CACHE_HOME/moat}}
cache_root=${cache_root:-${HOME:+$HOME/.cache/moat}}
cache_root=${cache_root:-/var/cache/moat}
venv="$cache_root/venv"
stamp="$venv/.moat-tools"
if [ "$(cat "$stamp" 2>/dev/null)" != "${python_tools[*]}" ]; then
  echo "moat: installing ${python_tools[*]} into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${python_tools[@]}"
  echo "${python_tools[*]}" >"$stamp"
fi

if ! command -v cargo >/dev/null; then
  echo "moat: cargo is not on PATH; install a Rust toolchain (>= 1.89, see rust-version in Cargo.toml)" >&2
  exit 1
fi
