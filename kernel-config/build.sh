#!/usr/bin/env bash
# Builds moat's guest kernel from Debian's linux-source-6.12: `make tinyconfig`, merge the fragment(s)
# with scripts/kconfig/merge_config.sh, `make olddefconfig`, check that every requested option
# survived, then build `vmlinux` (PVH entry) and `bzImage`.
#
# Usage: kernel-config/build.sh [--fragment FILE]... [--config-only] OUTDIR
#   OUTDIR receives vmlinux, bzImage, config and version (the kernel release). It must not exist yet or
#   be empty; files appear there only when the whole build succeeded (written to a temp name, renamed).
#   --fragment FILE  a config fragment to merge (default: moat.config beside this script); repeatable.
#   --config-only    stop after the configuration check; OUTDIR receives only `config`.
# Environment:
#   MOAT_LINUX_TARBALL    the source tarball (default /usr/src/linux-source-6.12.tar.xz)
#   MOAT_KERNEL_WORKDIR   where to unpack and build (default: a fresh temp dir, removed at the end)
#   MOAT_KERNEL_JOBS      parallel jobs (default: nproc)
#   MOAT_KERNEL_VERBOSE=1 print the whole build log instead of a line per stage
#
# The moat library (`moat_artifacts::kernel::build`) runs this script and caches OUTDIR by a hash of the
# tarball's version, the fragments and this script; this script itself caches nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tarball=${MOAT_LINUX_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
jobs=${MOAT_KERNEL_JOBS:-$(nproc)}
verbose=${MOAT_KERNEL_VERBOSE:-0}
fragments=()
config_only=0
out=""

die() { echo "kernel-config: error: $*" >&2; exit 1; }
start=$(date +%s)
stage() { echo "kernel-config: [$(( $(date +%s) - start ))s] $*" >&2; }

while (($#)); do
  case $1 in
    --fragment) [ $# -ge 2 ] || die "--fragment needs a file"; fragments+=("$(readlink -f -- "$2")"); shift 2 ;;
    --config-only) config_only=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$out" ] || die "only one OUTDIR may be given"; out=$1; shift ;;
  esac
done
[ -n "$out" ] || die "usage: $0 [--fragment FILE]... [--config-only] OUTDIR"
((${#fragments[@]})) || fragments=("$here/moat.config")
for f in "${fragments[@]}"; do [ -r "$f" ] || die "config fragment $f does not exist or is not readable"; done

# Check the inputs before touching anything.
if [ ! -r "$tarball" ]; then
  die "the Linux source tarball $tarball is missing: install it with 'apt-get install linux-source-6.12' (or run scripts/deps.sh), or point MOAT_LINUX_TARBALL at a linux-6.12 tarball"
fi
for tool in make gcc flex bison bc xz tar; do
  command -v "$tool" >/dev/null || die "'$tool' is not installed: run scripts/deps.sh (apt-get install build-essential flex bison bc xz-utils)"
done
[ -e /usr/include/libelf.h ] || [ -e /usr/include/gelf.h ] || die "libelf headers are missing (objtool needs them): apt-get install libelf-dev"
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -z "$(ls -A "$out")" ] || die "output directory $out is not empty"

if [ -n "${MOAT_KERNEL_WORKDIR:-}" ]; then
  work=$MOAT_KERNEL_WORKDIR
  mkdir -p "$work"
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/moat-kernel.XXXXXX")
  trap 'rm -rf "$work"' EXIT
fi
log=$work/build.log
: >"$log"

# Runs a command with its output in the log; on failure shows the log's tail and stops.
run() {
  if [ "$verbose" = 1 ]; then
    "$@" 2>&1 | tee -a "$log"
  else
    "$@" >>"$log" 2>&1
  fi || { tail -n 40 "$log" >&2; die "'$*' failed (whole log: $log; set MOAT_KERNEL_WORKDIR to keep it)"; }
}

src=$work/src
if [ ! -f "$src/Makefile" ]; then
  stage "unpacking $tarball"
  rm -rf "$src" && mkdir -p "$src"
  tar -xf "$tarball" -C "$src" --strip-components=1
fi
version=$(make -s -C "$src" kernelversion)
case $version in 6.12.*) ;; *) die "$tarball holds Linux $version, but moat's fragment is written for 6.12" ;; esac

build=$work/build
mkdir -p "$build"
# Reproducible: the same inputs give the same `uname -v` on every machine.
export KBUILD_BUILD_TIMESTAMP="${KBUILD_BUILD_TIMESTAMP:-1970-01-01 00:00:00 UTC}"
export KBUILD_BUILD_USER=moat KBUILD_BUILD_HOST=moat KBUILD_BUILD_VERSION=1
mk() { run make -C "$src" O="$build" ARCH=x86_64 "$@"; }

stage "configuring Linux $version: tinyconfig + ${fragments[*]##*/}"
mk tinyconfig
(cd "$build" && run "$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "${fragments[@]}")
mk olddefconfig

# Every requested value must be in the final .config; every "is not set" must stay off.
dropped=()
while IFS= read -r line; do
  if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
    want="${BASH_REMATCH[1]}=${BASH_REMATCH[2]}"
    got=$(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$build/.config" || true)
    [ "$got" = "$want" ] || dropped+=("${BASH_REMATCH[1]}: wanted ${BASH_REMATCH[2]}, got ${got:-nothing (unknown symbol or unmet dependency)}")
  elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
    if grep -qE "^${BASH_REMATCH[1]}=" "$build/.config"; then
      dropped+=("${BASH_REMATCH[1]}: wanted off, but something selects it: $(grep -E "^${BASH_REMATCH[1]}=" "$build/.config")")
    fi
  fi
done < <(cat "${fragments[@]}")
if ((${#dropped[@]})); then
  for d in "${dropped[@]}"; do echo "kernel-config: Kconfig did not keep $d" >&2; done
  die "${#dropped[@]} requested option(s) were dropped by Kconfig (usually a missing dependency: find the option with 'make menuconfig' and its 'Depends on:' line, then add what it needs to the fragment)"
fi
stage "configuration checked: all $(grep -cE '^(CONFIG_|# CONFIG_.* is not set)' "${fragments[@]}" | awk -F: '{s+=$NF} END {print s}') requested options kept"

publish() { cp -- "$1" "$out/.$2.tmp" && mv -- "$out/.$2.tmp" "$out/$2"; }
if [ "$config_only" = 1 ]; then
  publish "$build/.config" config
  exit 0
fi

stage "building vmlinux and bzImage with $jobs jobs (log: $log)"
if [ "$verbose" = 1 ]; then
  mk -j"$jobs" bzImage
else
  # Condense the build's own output to a line every ~20 s (files built so far, the latest one);
  # warnings and errors pass through.
  { make -C "$src" O="$build" ARCH=x86_64 -j"$jobs" bzImage 2>&1; echo $? >"$work/make.rc"; } | tee -a "$log" | awk -v t0="$start" '
    BEGIN { last = t0 }
    /^  [A-Z0-9_]+ +[^ ]/ {
      if (++n % 25) next
      "date +%s" | getline now; close("date +%s")
      if (now - last < 20) next
      last = now
      printf "kernel-config: [%ds] %d files built, at %s\n", now - t0, n, $NF > "/dev/stderr"; fflush("/dev/stderr"); next
    }
    /warning:|error:|Error / { print > "/dev/stderr" }
  '
  [ "$(cat "$work/make.rc")" = 0 ] || { tail -n 40 "$log" >&2; die "the kernel build failed (whole log: $log; set MOAT_KERNEL_WORKDIR to keep it)"; }
fi
[ -f "$build/arch/x86/boot/bzImage" ] || { tail -n 40 "$log" >&2; die "the kernel build produced no bzImage (log: $log)"; }
grep -q '^CONFIG_PVH=y' "$build/.config" || die "CONFIG_PVH is off: vmlinux would have no PVH entry"

release=$(make -s -C "$src" O="$build" ARCH=x86_64 kernelrelease)
publish "$build/vmlinux" vmlinux
publish "$build/arch/x86/boot/bzImage" bzImage
publish "$build/.config" config
echo "$release" >"$out/.version.tmp" && mv -- "$out/.version.tmp" "$out/version"
stage "done: Linux $release, bzImage $(stat -c %s "$out/bzImage") bytes, vmlinux $(stat -c %s "$out/vmlinux") bytes"
